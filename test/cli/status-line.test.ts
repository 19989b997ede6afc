/**
 * [16.terminal] The live status line's parts, in-process: fitting whole fields to a width measured in terminal
 * columns, the order of the fields on a terminal, and a log sharing the terminal with the status line (each log line
 * above it, the status never logged a second time). The real terminal, under tmux, is test/cli/terminal.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runAgent } from '../../src/cli/run.js';
import { fitStatusFields, type StatusField } from '../../src/cli/status-line.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { Logger } from '../../src/health/log.js';
import { loggingConfigSchema } from '../../src/health/log-config.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { cutToColumns, terminalColumns } from '../../src/text/terminal-text.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

/**
 * What a terminal makes of what is written to it, as far as the status line and the log use it: characters
 * overwrite the row at the cursor, `\r` goes to the row's start, `\n` to the next row, `ESC [ K` erases to the row's
 * end. No wrapping: widths are checked on their own.
 */
class TerminalModel {
  private readonly rows: string[][] = [[]];
  private row = 0;
  private column = 0;

  write(text: string): void {
    for (let i = 0; i < text.length;) {
      if (text.startsWith('\x1b[K', i)) {
        this.rows[this.row]!.length = Math.min(this.rows[this.row]!.length, this.column);
        i += 3;
      } else if (text[i] === '\r') {
        this.column = 0;
        i++;
      } else if (text[i] === '\n') {
        this.row++;
        this.rows[this.row] ??= [];
        this.column = 0;
        i++;
      } else {
        this.rows[this.row]![this.column++] = text[i]!;
        i++;
      }
    }
  }

  /** The rows as shown, the empty last one left out. */
  lines(): string[] {
    const lines = this.rows.map((cells) => Array.from(cells, (c) => c ?? ' ').join(''));
    if (lines[lines.length - 1] === '') lines.pop();
    return lines;
  }
}

const field = (text: string, separator: StatusField['separator'] = ', '): StatusField => ({ text, separator });

describe('[16.terminal] the status line on a terminal', () => {
  it('[16.terminal] fits whole fields in order, never wider than the width; only a first field wider than it all is cut', () => {
    const fields = [
      field('uplink connected'),
      field('3 buffered'),
      field('294 frames/s'),
      field('0 errors'),
      field('VehicleSpeed 42.00 km/h', ' | '),
      field('Odometer 1.0 km'),
    ];
    const full = 'uplink connected, 3 buffered, 294 frames/s, 0 errors | VehicleSpeed 42.00 km/h, Odometer 1.0 km';
    assert.equal(fitStatusFields(fields, 200), full);
    assert.equal(fitStatusFields(fields, full.length), full);
    // One column short: the last field goes, whole, with its separator.
    assert.equal(fitStatusFields(fields, full.length - 1), 'uplink connected, 3 buffered, 294 frames/s, 0 errors | VehicleSpeed 42.00 km/h');
    for (let width = 0; width <= full.length; width++) {
      const line = fitStatusFields(fields, width);
      assert.ok(terminalColumns(line) <= width, `${line} in ${width}`);
      // Whole fields only (a prefix of the full line that ends where a field ends), once the first one fits.
      if (width >= 'uplink connected'.length)
        assert.ok(full.startsWith(line) && /(connected|buffered|frames\/s|errors|km\/h|km)$/.test(line), `${width}: ${line}`);
    }
    // A first field alone wider than the terminal: cut, the only case.
    assert.equal(fitStatusFields(fields, 10), 'uplink con');
    // A field that does not fit ends the line: what comes after it is less important, even if it is shorter.
    assert.equal(fitStatusFields([field('a'), field('a long field'), field('b')], 8), 'a');
    // The first field present starts the line without a separator.
    assert.equal(fitStatusFields([field('can0 missing', ' | '), field('x')], 40), 'can0 missing, x');
  });

  it('[16.terminal] measures terminal columns: wide characters take two, combining marks none; a cut never splits a character', () => {
    assert.equal(terminalColumns('CoolantTemp 90 °C, €'), 'CoolantTemp 90 °C, €'.length);
    assert.equal(terminalColumns('档位 P'), 6);
    assert.equal(terminalColumns('e\u0301'), 1);
    assert.equal(terminalColumns('🚗 1'), 4);
    assert.equal(cutToColumns('档位 P', 3), '档');
    assert.equal(cutToColumns('档位 P', 4), '档位');
    assert.equal(cutToColumns('🚗🚗', 3), '🚗');
    assert.equal(cutToColumns('e\u0301x', 1), 'e\u0301');
    // Wide labels count double: a line of them fits the terminal by columns, not by UTF-16 length.
    const wide = [field('档位 P'), field('车速 42 km/h')];
    assert.equal(fitStatusFields(wide, 17), '档位 P');
    assert.equal(fitStatusFields(wide, 20), '档位 P, 车速 42 km/h');
  });

  it('[16.terminal] puts the outbox, the frame rate and the errors before the signals; the log writes above it and never logs the status', async () => {
    const dir = makeTempDir('status-line-');
    const config = parseDeviceConfig(
      {
        deviceId: 'status-line-test',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: 1 } }],
        status: { intervalMs: 100, signals: ['VehicleSpeed', 'EngineSpeed', 'GearEngaged', 'CoolantTemp', 'FuelLevel', 'Odometer'] },
        collection: { rules: [{ name: 'driving', mode: 'periodic', intervalMs: 1000, priority: 3, signals: ['VehicleSpeed'] }] },
        outbox: { path: 'outbox.db' },
      },
      { file: 'inline', baseDir: dir },
    );
    // One terminal for both, as stdout and stderr of `run` in a terminal window; the log in its default format there.
    const terminal = new TerminalModel();
    const writes: string[] = [];
    const output = {
      isTTY: true,
      columns: 80,
      write: (text: string) => {
        writes.push(text);
        terminal.write(text);
      },
    };
    // The default logging section: debug for the first 300 s, when the status would be logged every interval.
    const logger = new Logger({ config: loggingConfigSchema.parse({}), defaultFormat: 'text', destination: { write: (line) => output.write(line) } });
    const stop = new AbortController();
    const running = runAgent({ config, signal: stop.signal, output, logger, logOnOutputTerminal: true });
    const drawn = (): number => writes.filter((w) => w.startsWith('\r') && w.includes('frames/s')).length;
    await waitFor(() => drawn() >= 3, 'three status lines', 20_000);
    // A log line while the status line is shown: it takes the status line's row, and the status line comes back below.
    logger.child('can0', { prefix: true }).warn('interface can0 is down; waiting for it to come up');
    await waitFor(() => drawn() >= 6, 'three more status lines', 20_000);
    stop.abort();
    await running;
    logger.close();

    const lines = terminal.lines();
    const status = lines.filter((line) => line.includes('frames/s'));
    assert.equal(status.length, 1, lines.join('\n'));
    const at = lines.indexOf(status[0]!);
    assert.match(lines[at + 1]!, /^stopped after /);
    const warning = lines.indexOf('can0: interface can0 is down; waiting for it to come up');
    assert.ok(warning >= 0 && warning < at, lines.join('\n'));
    assert.ok(lines.includes('logging at debug for the first 300 s after start, then at info'), lines.join('\n'));
    // No line but the status line says the rates: the status entry of the verbose start is not written.
    assert.ok(!lines.some((line) => line.startsWith('status') || line.includes('framesPerS')), lines.join('\n'));
    // Every line drawn: within 79 columns, outbox, frame rate and errors first, then whole signal values.
    for (const w of writes.filter((text) => text.startsWith('\r') && text.includes('frames/s'))) {
      const line = w.slice(1, -3);
      assert.ok(terminalColumns(line) <= 79, line);
      assert.match(line, /^\d+ buffered, \d+ frames\/s, 0 errors \| VehicleSpeed \d+\.\d\d km\/h(, [A-Za-z]+ [^,|]+)*$/);
    }
  });

  it('[16.terminal] off the log terminal (the log in a file, a pipe, the journal) the verbose start still logs the status', async () => {
    const config = parseDeviceConfig(
      {
        deviceId: 'status-line-test',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', seed: 1 } }],
        status: { intervalMs: 100, signals: [] },
      },
      { file: 'inline', baseDir: makeTempDir('status-line-') },
    );
    const entries: { component: string; level: string; framesPerS?: number }[] = [];
    const logger = new Logger({
      config: loggingConfigSchema.parse({}),
      destination: { write: (line) => entries.push(JSON.parse(line) as (typeof entries)[number]) },
    });
    const stop = new AbortController();
    let written = '';
    const running = runAgent({ config, signal: stop.signal, output: { isTTY: true, columns: 80, write: (text) => (written += text) }, logger });
    await waitFor(() => entries.filter((e) => e.component === 'status').length >= 2, 'two status entries', 20_000);
    stop.abort();
    await running;
    logger.close();
    assert.ok(entries.filter((e) => e.component === 'status').every((e) => e.level === 'debug' && typeof e.framesPerS === 'number'));
    assert.match(written, /\r\d+ frames\/s, 0 errors \| \d+ signals\/s, 0 unknown\x1b\[K/);
  });
});
