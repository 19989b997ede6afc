/**
 * The recorded ELM327 of the shared test data (../shared/testdata/obd/README.md, "What a real ELM327 v1.5 answers"):
 * its answers as literal fixtures, so the parser and simulator tests run without the shared data; the reader of that
 * README block, to check the fixtures are still what it records; and the assertion for an answer the parser refuses.
 * Facts recorded from an emulator, not code.
 *
 * Failure: `readRecordedAnswers` throws (ENOENT) without the shared data: callers skip first with NO_SHARED_TESTDATA.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ElmResponseError, type ElmErrorCode } from '../../src/obd/elm327-response.js';
import { sharedTestdata } from './shared.js';

/** The README with the recording. */
export const RECORDING_README = sharedTestdata('obd', 'README.md');

/**
 * The README's block, verbatim, with the prompt (key: the command, or `ATH1 010C` for a command after a setting).
 */
export const RECORDED_ANSWERS: Readonly<Record<string, string>> = {
  ATZ: 'ATZ\r\r\rELM327 v1.5\r\r>',
  ATE0: 'ATE0\rOK\r\r>',
  ATSP0: 'OK\r\r>',
  ATDP: 'AUTO, ISO 15765-4 (CAN 11/500) \r\r>',
  ATRV: '13.1V\r\r>',
  '0100': 'SEARCHING...\r41 00 BE 3F A8 13 \r\r>',
  '010C': '41 0C 0B B8 \r\r>',
  '010D': '41 0D 32 \r\r>',
  '0105': '41 05 82 \r\r>',
  '0902': '014\r0: 49 02 01 57 50 30 \r1: 5A 5A 5A 39 39 5A 54 \r2: 53 33 39 30 30 30 30 \r\r>',
  '03': '43 02 01 33 03 00 \r\r>',
  '07': '47 00 \r\r>',
  'ATH1 010C': '7E8 04 41 0C 0B B8 \r\r>',
  'ATH1 0902': '7E8 10 14 49 02 01 4D 41 54 \r7E8 21 34 30 33 30 39 36 42 \r7E8 22 4E 4C 30 30 30 30 30 \r\r>',
  'ATS0 010C': '410C0BB8\r\r>',
  '01FF': 'NO DATA\r\r>',
  XYZ: '?\r\r>',
};

/** The "undeterministic scenario" answer to 03 that the README gives in a comment: no stored DTCs. */
export const RECORDED_03_NONE = '43 00 \r\r>';

/** The recorded car: its VIN (the 0902 answer), 750 rpm, 50 km/h, 90 °C coolant, 13.1 V. */
export const RECORDED_VIN = 'WP0ZZZ99ZTS390000';

/** The headers-on VIN answer of the README (ATH1 0902) comes from another car. */
export const RECORDED_VIN_H1 = 'MAT403096BNL00000';

/**
 * The answers the README records, `\r` and `\n` unescaped, by the keys RECORDED_ANSWERS uses. One README line may
 * hold two (`'01FF' -> b'NO DATA\r\r>'      'XYZ' -> b'?\r\r>'`).
 */
export function readRecordedAnswers(): Map<string, string> {
  const answers = new Map<string, string>();
  for (const line of readFileSync(RECORDING_README, 'utf8').split('\n')) {
    for (const m of line.matchAll(/'([^']+)'(?: then '([^']+)')?\s+->\s+b'([^']*)'/g)) {
      answers.set(m[2] === undefined ? m[1]! : `${m[1]} ${m[2]}`, m[3]!.replaceAll('\\r', '\r').replaceAll('\\n', '\n'));
    }
  }
  return answers;
}

/** Asserts that `fn` throws an ElmResponseError with `code`, and (when given) `text` in or matching its message. */
export function throwsElm(fn: () => unknown, code: ElmErrorCode, text?: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ElmResponseError, `not an ElmResponseError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (typeof text === 'string') assert.ok(e.message.includes(text), `${e.message} lacks ${text}`);
    else if (text) assert.match(e.message, text);
    return true;
  });
}
