/**
 * `telematics-agent run`: the command-line front end of the agent (src/agent/agent.ts, where it is assembled). It
 * parses the options, handles SIGTERM/SIGINT within the shutdown deadline, draws the live status line from the
 * agent's snapshot (src/cli/status-line.ts), prints the summary, and exits with RESTART_EXIT_CODE when a remote
 * command asked for a restart.
 *
 * In a terminal the log is text by default and shares the screen with the status line: each log line is written
 * above it, and the status is not logged a second time at debug. Into the journal, a pipe or a file the log is JSON
 * lines and keeps its status debug line.
 *
 * Failure: a config or file the agent cannot use ends the command with its one-line error (exit 1) before anything
 * reads; a stdout that cannot be written never stops the agent. The status line is drawn on its own timer from the
 * snapshot, never per frame.
 */
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, type Command } from 'commander';
import { Agent, type RunSummary } from '../agent/agent.js';
import { RESTART_EXIT_CODE } from '../agent/exit-codes.js';
import type { CommandContext } from '../commands/handler.js';
import { loadDeviceConfig, type DeviceConfig } from '../config/device-config.js';
import { loggingConfig } from '../health/log-config.js';
import { defaultLogFormat, isJournalStream, Logger } from '../health/log.js';
import { ShutdownWatch, type ShutdownProgress } from '../health/log-shutdown.js';
import { forTerminal } from '../text/terminal-text.js';
import { sameTerminal, StatusLine, type StatusOutput } from './status-line.js';

export type { StatusOutput } from './status-line.js';

/** The demo config shipped with the package; this file runs as dist/src/cli/run.js. */
export const DEFAULT_CONFIG_PATH = fileURLToPath(new URL('../../../device-config/default.json', import.meta.url));

export interface RunAgentOptions {
  config: DeviceConfig;
  /** The file the config came from, to name it in errors (a bus whose DBC is unusable). */
  configFile?: string;
  /** Stop after this many seconds; default: until aborted or every source has ended. */
  durationS?: number;
  signal?: AbortSignal;
  output: StatusOutput;
  /**
   * Diagnostics (DBC warnings, malformed log lines, interface and controller state changes, OBD trouble) as plain
   * text, at the levels `logging.level` lets through (no verbose start), instead of the log on stderr.
   */
  warn?: (message: string) => void;
  /** The log to write to (the `run` command's, which also logs its stop); default one from the config's `logging`. */
  logger?: Logger;
  /** Told where the stop is, for the `run` command's shutdown deadline. */
  shutdown?: ShutdownProgress;
  /** false: no live status line, only the summary at the end (the `run` command writing into the journal). */
  statusLines?: boolean;
  /**
   * The log writes to the terminal `output` is (stderr and stdout of `run` in one terminal window): its lines are
   * written above the status line, and the status rates are not logged at debug (the status line shows them).
   */
  logOnOutputTerminal?: boolean;
  /** Receives the context remote commands act through, once the run's parts exist. */
  onCommandContext?: (context: CommandContext) => void;
}

/** Runs the agent on a loaded config until the duration passes, `signal` aborts, or every source has ended. */
export async function runAgent(options: RunAgentOptions): Promise<RunSummary> {
  const { output } = options;
  const logging = loggingConfig(options.config.logging);
  const logger = options.logger ?? new Logger(options.warn ? { config: logging, lines: options.warn } : { config: logging });
  // Under systemd the status line would be a journal entry every second: no line built, no snapshot taken.
  const statusLines = options.statusLines !== false;
  const sharedTerminal = statusLines && output.isTTY === true && options.logOnOutputTerminal === true;
  let agent: Agent;
  try {
    agent = await Agent.open(options.config, {
      logger,
      ...(sharedTerminal ? { logStatus: false } : {}),
      ...(options.configFile !== undefined ? { configFile: options.configFile } : {}),
      ...(options.onCommandContext ? { onCommandContext: options.onCommandContext } : {}),
    });
  } catch (err) {
    if (!options.logger) logger.close();
    throw err;
  }
  const statusLine = statusLines ? new StatusLine(output, () => agent.snapshot()) : undefined;
  const statusTimer = statusLine ? setInterval(() => statusLine.draw(), agent.config.status?.intervalMs ?? 1000) : undefined;
  if (sharedTerminal) logger.setLiveLine(statusLine);
  // A stop cut short by its deadline exits from within close(): the shell's prompt then starts on a line of its own.
  const endOnExit = (): void => statusLine?.end();
  process.once('exit', endOnExit);
  let failure: { error: unknown } | undefined;
  try {
    await agent.run({
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.durationS !== undefined ? { durationS: options.durationS } : {}),
    });
  } catch (err) {
    failure = { error: err };
  } finally {
    clearInterval(statusTimer);
  }
  // Whatever ended the run, the open batches go to the outbox before the process ends.
  // The stop's own log lines still go above the status line, which shows the last state until the summary.
  let summary: RunSummary;
  try {
    summary = await agent.close(options.shutdown);
  } finally {
    if (!options.logger) logger.close();
    if (sharedTerminal) logger.setLiveLine(undefined);
    process.removeListener('exit', endOnExit);
    statusLine?.end();
  }
  printSummary(output, summary);
  if (failure) throw failure.error;
  return summary;
}

function printSummary(output: StatusOutput, summary: RunSummary): void {
  output.write(`stopped after ${summary.elapsedS.toFixed(1)} s\n`);
  for (const bus of summary.buses) {
    const badLines = bus.badLogLines > 0 ? `, ${bus.badLogLines} malformed log lines` : '';
    const errorFrames = bus.errorFrames !== undefined ? `, ${bus.errorFrames} error frames` : '';
    output.write(
      `  ${forTerminal(`${bus.name} (${bus.source})`)}: ${bus.frames} frames, ${bus.signals} signals, ` +
        `${bus.unknownFrames} unknown frames, ${bus.decodeErrors} decode errors${badLines}${errorFrames}\n`,
    );
    if (bus.obd) {
      const unsupported = bus.obd.unsupported > 0 ? `, ${bus.obd.unsupported} PID${bus.obd.unsupported === 1 ? '' : 's'} not supported` : '';
      output.write(`  ${forTerminal(bus.name)} OBD: ${bus.obd.samples} samples from ${bus.obd.requests} requests${unsupported}\n`);
    }
  }
  for (const adapter of summary.adapters) {
    if (!adapter.polls) {
      // Its status words without its name, which the line begins with: `gnss (simulated, receiving): 3D 48.13905,...`.
      const words = adapter.text.startsWith(`${adapter.name} `) ? adapter.text.slice(adapter.name.length + 1) : adapter.text;
      output.write(`  ${forTerminal(`${adapter.name} (${adapter.port}, ${adapter.state}): ${words}`)}\n`);
      continue;
    }
    const unsupported = adapter.obd.unsupported > 0 ? `, ${adapter.obd.unsupported} PID${adapter.obd.unsupported === 1 ? '' : 's'} not supported` : '';
    output.write(
      `  ${forTerminal(`${adapter.name} (${adapter.port}, ${adapter.state})`)}: ${adapter.obd.samples} samples from ${adapter.obd.requests} requests${unsupported}\n`,
    );
  }
  if (summary.dataPath) {
    const d = summary.dataPath;
    const uplink = d.uplink ? `, ${d.published} published to ${d.uplink.url}` : '';
    const evicted = d.outbox.evicted.count > 0 ? `, ${d.outbox.evicted.count} evicted` : '';
    output.write(`  data: ${d.samples} samples in ${d.messages} messages${uplink}, ${d.buffered} buffered${evicted}\n`);
  }
}

/** Whether stdout is the systemd journal: JOURNAL_STREAM names its device and inode (systemd.exec(5)). */
export function stdoutIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  return isJournalStream(1, env);
}

function parseDuration(text: string): number {
  const seconds = Number(text);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return seconds;
}

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('read the configured buses, decode every frame and show a live status line')
    .option('-c, --config <file>', 'device config (JSON)', DEFAULT_CONFIG_PATH)
    .option('-d, --duration <seconds>', 'stop after this many seconds', parseDuration)
    .action(async (opts: { config: string; duration?: number }) => {
      const config = loadDeviceConfig(opts.config);
      // Text for a person in a terminal, JSON lines for the journal, a pipe or a file (unless logging.format says).
      const logger = new Logger({ config: config.logging, defaultFormat: defaultLogFormat(2) });
      // The status line and the summary are for whoever watches: a stdout that cannot be written (a full disk, a
      // closed pipe) must not end the agent through an unhandled 'error' event.
      process.stdout.on('error', () => undefined);
      const interrupt = new AbortController();
      // SIGTERM/SIGINT: stop the sources, commit open batches, close the session cleanly, all within the deadline.
      const shutdown = new ShutdownWatch(logger);
      const onSignal = (signal: NodeJS.Signals): void => {
        shutdown.begin(signal);
        interrupt.abort();
      };
      // `once`: a second Ctrl-C gets node's default handling and ends the process at once.
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      try {
        // Under systemd the status line would be a journal entry every second, on flash, for years: the health
        // report and the status page say the same.
        const statusLines = !stdoutIsJournal();
        const summary = await runAgent({
          config,
          configFile: opts.config,
          durationS: opts.duration,
          signal: interrupt.signal,
          output: process.stdout,
          logger,
          shutdown,
          statusLines,
          logOnOutputTerminal: sameTerminal(1, 2),
        });
        if (summary.restartRequested) process.exitCode = RESTART_EXIT_CODE;
      } finally {
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
        logger.close();
      }
      if (shutdown.started) {
        shutdown.finish();
        // Everything that matters is done: a socket a hung broker never closed must not keep the process up.
        process.exit(process.exitCode ?? 0);
      }
    });
}
