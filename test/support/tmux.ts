/**
 * A program in a real pseudo-terminal of a given size, under tmux, and its screen as a person would see it: the
 * terminal tests of `telematics-agent run` (one status line redrawn in place, log lines above it). Each session has
 * its own tmux server (its own socket in a temporary folder), so parallel test files never share one, and `close()`
 * ends that server and everything in it.
 *
 * The pane stays after the program exits (remain-on-exit), so its last screen can be read; tmux's own "Pane is dead"
 * line is left out of the screen. The exit status is written to a file by a shell around the program, not read from
 * tmux: a detached tmux 3.3 server sometimes misses the SIGCHLD of its pane's process and never learns it (the process
 * stays a zombie, `pane_dead_status` stays empty). The shell ignores the terminal's SIGINT (Ctrl-C) until the program
 * has handled it and ended. `waitForScreen` polls the screen until it shows what the test waits for, never a fixed
 * time.
 *
 * Failure: a tmux that cannot be run rejects with its error (scripts/install-test-deps.sh installs it); a wait that
 * times out rejects naming what it waited for, with the screen it saw last.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { makeTempDir } from './temp.js';
import { delay } from './wait.js';

const run = promisify(execFile);

/** Between the two captures of one look at the screen; no line of a test's screen looks like it. */
const CAPTURE_SEPARATOR = '@@ tmux: the same screen, rows as drawn @@';

/** How often the screen is looked at while waiting: a capture costs a tmux client process. */
const SCREEN_POLL_MS = 50;

export interface TerminalOptions {
  columns: number;
  rows: number;
  cwd?: string;
  /** The program's environment (tmux's server starts with it); default this process's. */
  env?: NodeJS.ProcessEnv;
}

/** What the terminal shows: its lines, trailing blanks cut, wrapped lines joined (`joined`) or as drawn (`rows`). */
export interface Screen {
  /** Each logical line once: a line wider than the terminal, wrapped by it, is one entry. */
  joined: string[];
  /** Each row of the terminal as drawn (history included). */
  rows: string[];
}

export class TerminalSession {
  private constructor(
    private readonly socket: string,
    /** Where the shell around the program writes its exit status when it ends. */
    private readonly statusFile: string,
  ) {}

  /** Starts `argv` (executed directly, no shell) in a new detached tmux session of `columns` × `rows`. */
  static async start(argv: readonly string[], options: TerminalOptions): Promise<TerminalSession> {
    const dir = makeTempDir('tmux-');
    const socket = path.join(dir, 'tmux.sock');
    const config = path.join(dir, 'tmux.conf');
    // No status bar (the pane is the whole window); keep the pane when the program ends, to read its last screen.
    writeFileSync(config, 'set -g status off\nset -g remain-on-exit on\nset -g history-limit 10000\n');
    const statusFile = path.join(dir, 'exit-status');
    // The trap's handler is reset for the program (exec), which gets Ctrl-C's SIGINT as it would from a shell prompt.
    const shell = ['sh', '-c', 'trap : INT; "$@"; echo $? > "$0"', statusFile];
    const size = ['-x', String(options.columns), '-y', String(options.rows)];
    await run('tmux', ['-S', socket, '-f', config, 'new-session', '-d', ...size, ...(options.cwd ? ['-c', options.cwd] : []), ...shell, ...argv], {
      env: options.env ?? process.env,
    });
    return new TerminalSession(socket, statusFile);
  }

  private async tmux(...args: string[]): Promise<string> {
    return (await run('tmux', ['-S', this.socket, ...args])).stdout;
  }

  /** The screen and its history now. */
  async screen(): Promise<Screen> {
    const lines = (text: string): string[] => {
      const all = text.split('\n').map((line) => line.trimEnd());
      const kept = all.filter((line) => !line.startsWith('Pane is dead ('));
      while (kept.length > 0 && kept[kept.length - 1] === '') kept.pop();
      return kept;
    };
    // Both views in one tmux command list: the server runs it at once, so they show the same moment.
    const both = await this.tmux('capture-pane', '-p', '-J', '-S', '-', ';', 'display-message', '-p', CAPTURE_SEPARATOR, ';', 'capture-pane', '-p', '-S', '-');
    const at = both.indexOf(`\n${CAPTURE_SEPARATOR}\n`);
    if (at < 0) throw new Error(`tmux gave no separator between its two captures: ${both}`);
    return { joined: lines(both.slice(0, at)), rows: lines(both.slice(at + CAPTURE_SEPARATOR.length + 2)) };
  }

  /** Polls the screen until `holds` is true of it; rejects after `timeoutMs`, or when the program ended without it. */
  async waitForScreen(holds: (screen: Screen) => boolean, what: string, timeoutMs: number): Promise<Screen> {
    const start = performance.now();
    for (;;) {
      const screen = await this.screen();
      if (holds(screen)) return screen;
      const ended = this.exitStatus();
      if (ended !== null) throw new Error(`the program ended (status ${ended}) before the screen showed ${what}:\n${screen.joined.join('\n')}`);
      if (performance.now() - start > timeoutMs)
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; the screen:\n${screen.joined.join('\n')}`);
      await delay(SCREEN_POLL_MS);
    }
  }

  /** The program's exit status once it has ended (128 + n: killed by signal n); null while it runs. */
  exitStatus(): number | null {
    const text = existsSync(this.statusFile) ? readFileSync(this.statusFile, 'utf8') : '';
    // Written by `echo`: complete once its newline is there.
    return text.endsWith('\n') ? Number(text.trim()) : null;
  }

  /** Waits for the program to end; its exit status. */
  async exited(timeoutMs: number): Promise<number> {
    const start = performance.now();
    for (;;) {
      const status = this.exitStatus();
      if (status !== null) return status;
      if (performance.now() - start > timeoutMs) {
        throw new Error(`the program was still running after ${timeoutMs} ms; the screen:\n${(await this.screen()).joined.join('\n')}`);
      }
      await delay(SCREEN_POLL_MS);
    }
  }

  /** Keys as a person types them (`C-c` for Ctrl-C: the terminal sends SIGINT). */
  async sendKeys(...keys: string[]): Promise<void> {
    await this.tmux('send-keys', ...keys);
  }

  /** Resizes the terminal: the program gets SIGWINCH. */
  async resize(columns: number, rows: number): Promise<void> {
    await this.tmux('resize-window', '-x', String(columns), '-y', String(rows));
  }

  /** Ends the session's tmux server and the program in it. Never throws (a server already gone is fine). */
  async close(): Promise<void> {
    await this.tmux('kill-server').catch(() => undefined);
  }
}
