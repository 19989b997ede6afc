#!/usr/bin/env node
/** `telematics-agent`: the daemon and the tools a firmware engineer runs on a car. */
import { Command } from 'commander';
import { registerRunCommand } from './run.js';
import { registerDecodeCommand } from './decode.js';
import { registerDbcCommand } from './dbc.js';
import { registerSimEcuCommand } from './sim-ecu.js';
import { registerObdCommand } from './obd.js';
import { registerSimElm327Command } from './sim-elm327.js';
import { linesForTerminal } from '../text/terminal-text.js';

const program = new Command();
program
  .name('telematics-agent')
  .description('Vehicle telematics agent: CAN and OBD-II acquisition, DBC decoding, store-and-forward uplink')
  .showHelpAfterError()
  .exitOverride((err) => {
    // commander's own help/version exits are not failures
    process.exit(err.exitCode);
  });

registerRunCommand(program);
registerDecodeCommand(program);
registerDbcCommand(program);
registerObdCommand(program);
registerSimEcuCommand(program);
registerSimElm327Command(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  // Errors quote what files, adapters and the bus said: shown, never interpreted by the terminal.
  process.stderr.write(`telematics-agent: ${linesForTerminal(message)}\n`);
  process.exit(1);
});
