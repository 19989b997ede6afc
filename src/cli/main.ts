#!/usr/bin/env node
/**
 * `telematics-agent`: the daemon and the tools a firmware engineer runs on a car.
 *
 * Each command's module is loaded only when that command runs: `sim-ecu` or `obd` on a head unit's small core starts
 * without loading the whole agent (the MQTT client, the broker, SQLite, the PKI). `--version` loads none; help
 * without a command, or an unknown one, loads them all to list them.
 */
import { Command } from 'commander';
import { linesForTerminal } from '../text/terminal-text.js';
import { VERSION_DESCRIPTION, VERSION_FLAGS, versionText } from './version.js';

type Register = (program: Command) => void;

/** The commands, in the order help lists them. */
const COMMANDS: Record<string, () => Promise<Register>> = {
  run: async () => (await import('./run.js')).registerRunCommand,
  decode: async () => (await import('./decode.js')).registerDecodeCommand,
  dbc: async () => (await import('./dbc.js')).registerDbcCommand,
  obd: async () => (await import('./obd.js')).registerObdCommand,
  gnss: async () => (await import('./gnss.js')).registerGnssCommand,
  'sim-ecu': async () => (await import('./sim-ecu.js')).registerSimEcuCommand,
  'sim-elm327': async () => (await import('./sim-elm327.js')).registerSimElm327Command,
  'sim-gnss': async () => (await import('./sim-gnss.js')).registerSimGnssCommand,
};

const program = new Command();
program
  .name('telematics-agent')
  .description('Vehicle telematics agent: CAN and OBD-II acquisition, DBC decoding, store-and-forward uplink')
  .version(versionText('telematics-agent'), VERSION_FLAGS, VERSION_DESCRIPTION)
  .showHelpAfterError()
  .exitOverride((err) => {
    // commander's own help/version exits are not failures
    process.exit(err.exitCode);
  });

const named = process.argv[2];
const versionOnly = named === '-V' || named === '--version';
const wanted = named !== undefined && Object.hasOwn(COMMANDS, named) ? [named] : versionOnly ? [] : Object.keys(COMMANDS);
for (const name of wanted) (await COMMANDS[name]!())(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  // Errors quote what files, adapters and the bus said: shown, never interpreted by the terminal.
  process.stderr.write(`telematics-agent: ${linesForTerminal(message)}\n`);
  process.exit(1);
});
