/**
 * Text from files, the bus, adapters and the network on a terminal: the shared escaping, and the CLI outputs that
 * print what an adapter or a car said (`obd`'s summary and JSON, `telematics-ops`' results).
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { formatVehicleSummary, type VehicleSummary } from '../../src/cli/obd.js';
import { describeResult } from '../../src/cli/ops.js';
import { forTerminal, jsonForTerminal, linesForTerminal } from '../../src/text/terminal-text.js';
import { runProgramSync } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';

/** Any character a terminal may interpret: C0 but the newline, DEL, C1, bidi controls. */
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/;

describe('terminal text', () => {
  it('[14.L9] forTerminal shows every control character as an escape; clean text is returned as it is', () => {
    assert.equal(forTerminal('EngineSpeed 649 rpm, Öl 3 °C, €'), 'EngineSpeed 649 rpm, Öl 3 °C, €');
    assert.equal(
      forTerminal('a\x1b[2Jb\x07c\u009bd\u202ee\nf\tg\rh\x00i\x7fj\u2028k\u2066l'),
      'a\\x1b[2Jb\\x07c\\x9bd\\u202ee\\nf\\tg\\rh\\x00i\\x7fj\\u2028k\\u2066l',
    );
    assert.equal(linesForTerminal('file.json: 2 problems:\n  a: \x1b[31m\n  b: ok'), 'file.json: 2 problems:\n  a: \\x1b[31m\n  b: ok');
  });

  it('[14.L9] jsonForTerminal escapes what JSON.stringify leaves raw, and the JSON still parses to the same value', () => {
    const value = { name: 'M\u009b31m', label: 'D\u202eR', del: 'x\x7f', esc: '\x1b[8m', sep: 'a\u2028b', fine: 'grüß €' };
    const json = jsonForTerminal(JSON.stringify(value));
    assert.doesNotMatch(json, RAW_CONTROL);
    assert.deepEqual(JSON.parse(json), value);
    assert.match(json, /"name":"M\\u009b31m"/);
    assert.match(json, /"fine":"grüß €"/);
  });

  it("[14.L9] obd's summary shows what the adapter and the car said escaped", () => {
    const summary: VehicleSummary = {
      vin: null,
      protocol: 'ISO 15765-4\x1b]0;owned\x07',
      supportedPids: ['010C'],
      values: { rpm: 800 },
      units: { rpm: 'rpm' },
      dtcs: [],
      pendingDtcs: [],
      ecus: [0],
      errors: { vin: 'the adapter answered "\x1b[2J\u009b31mNO DATA"' },
    };
    const text = formatVehicleSummary(summary, 'ELM327\x1b[5m v1.5 on /dev/ttyUSB0');
    assert.doesNotMatch(text, RAW_CONTROL);
    assert.match(text, /^Connection {2}ELM327\\x1b\[5m v1\.5 on \/dev\/ttyUSB0$/m);
    assert.match(text, /^Protocol {4}ISO 15765-4\\x1b\]0;owned\\x07$/m);
    assert.match(text, /^\(vin: the adapter answered "\\x1b\[2J\\x9b31mNO DATA"\)$/m);
  });

  it("[14.L9] telematics-ops shows a car's result (its message, its detail) escaped", () => {
    const line = describeResult({
      deviceId: 'car-1',
      id: 'c-1',
      status: 'FAILED',
      reason: 'handler-error',
      message: 'boom\x1b[2J\nSUCCEEDED',
      detail: { note: '\u009b31m', fine: 1 },
      ts: 0,
    });
    assert.doesNotMatch(line, RAW_CONTROL);
    const [first, ...detail] = line.split('\n');
    // One line for the result: an embedded line break cannot forge a second one.
    assert.equal(first, 'c-1 FAILED handler-error: boom\\x1b[2J\\nSUCCEEDED');
    assert.deepEqual(JSON.parse(detail.join('\n')), { note: '\u009b31m', fine: 1 });
  });

  it('[14.L9] the provisioning scripts show a path from a hostile target escaped, in their one-line error', () => {
    const target = path.join(makeTempDir('escape-target-'), 'image\x1b]0;owned\x07\x1b[2J');
    mkdirSync(target);
    const result = runProgramSync('scripts/flash', ['--bundle', makeTempDir('no-bundle-'), '--target', target]);
    assert.equal(result.status, 1);
    assert.doesNotMatch(result.stderr + result.stdout, RAW_CONTROL);
    assert.match(result.stderr, /image\\x1b\]0;owned\\x07\\x1b\[2J/);
  });
});
