/**
 * J1979 answers as the OBD tests read them: a parse result narrowed to its positive form, and a Mode 01 answer as its
 * values by key (`{ rpm: 750 }`), so a test states the decoded values it expects.
 *
 * Failure: both fail the test (an AssertionError naming the negative response) when the ECU said no.
 */
import assert from 'node:assert/strict';
import { ObdNegativeResponse, parseMode01Response, type ByteInput, type PidValue } from '../../src/obd/j1979.js';

/** Narrows a parse result to its positive form, failing the test on a negative response. */
export function positive<T>(result: T | ObdNegativeResponse): T {
  assert.ok(!(result instanceof ObdNegativeResponse), `unexpected ${String(result)}`);
  return result;
}

/** The readings of a Mode 01 answer by key (`pid<n>` for a PID without one). */
export function mode01Values(bytes: ByteInput): Record<string, PidValue> {
  return Object.fromEntries(positive(parseMode01Response(bytes)).readings.map((r) => [r.key ?? `pid${r.pid}`, r.value]));
}
