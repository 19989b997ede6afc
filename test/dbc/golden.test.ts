/**
 * Agreement with the reference decoder: every vector in ../shared/testdata/golden, scaled, raw and with value-table
 * labels, must decode to exactly the same values (BigInt compared exactly), through both the object and the
 * zero-allocation paths; every frame the reference rejected must be a decode error here too.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { compileDatabase, DecodeError, loadDbcFile, type CompiledDatabase, type SignalValue } from '../../src/dbc/index.js';
import { hexBytes } from '../support/hex.js';
import { hasSharedTestdata, NO_SHARED_TESTDATA, sharedTestdata } from '../support/shared.js';

interface GoldenCase {
  id: number;
  extended: boolean;
  fd: boolean;
  name: string;
  data: string;
  decoded?: Record<string, number | string>;
  raw?: Record<string, number | string>;
  bigint?: Record<string, string>;
  raw_bigint?: Record<string, string>;
  error?: string;
}

const NON_FINITE: Record<string, number> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };

function readCases(file: string): GoldenCase[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as GoldenCase);
}

/** The golden JSON's values as the decoder returns them: exact BigInts, IEEE specials as numbers. */
function expectedValues(values: Record<string, number | string>, bigints: Record<string, string> | undefined, labels: boolean): Record<string, SignalValue> {
  const out: Record<string, SignalValue> = {};
  for (const [name, value] of Object.entries(values)) {
    if (bigints?.[name] !== undefined) out[name] = BigInt(bigints[name]);
    else if (typeof value === 'string' && value in NON_FINITE && !labels) out[name] = NON_FINITE[value]!;
    else out[name] = value;
  }
  return out;
}

const goldenDir = sharedTestdata('golden');
const stems = hasSharedTestdata()
  ? readdirSync(goldenDir)
      .filter((f) => f.endsWith('.jsonl') && !f.includes('.choices.') && !f.includes('.errors.'))
      .map((f) => f.replace(/\.jsonl$/, ''))
  : [];

describe('golden decode vectors', { skip: hasSharedTestdata() ? false : NO_SHARED_TESTDATA }, () => {
  it('has vectors to check', () => {
    assert.ok(stems.length >= 8, `found ${stems.length} golden sets`);
  });

  for (const stem of stems) {
    describe(stem, () => {
      let compiled: CompiledDatabase;
      const codec = (): CompiledDatabase => (compiled ??= compileDatabase(loadDbcFile(sharedTestdata('dbc', `${stem}.dbc`))));

      it('decodes every vector scaled and raw, on both paths, exactly as the reference', () => {
        const db = codec();
        const cases = readCases(sharedTestdata('golden', `${stem}.jsonl`));
        const buffer = new Float64Array(db.slotCount);
        for (const c of cases) {
          const message = db.find(c.id, c.extended);
          assert.ok(message, `${c.name}: no message for ID ${c.id}`);
          assert.equal(message.message.name, c.name);
          assert.equal(message.message.fd, c.fd, `${c.name}: FD flag`);
          const data = hexBytes(c.data);
          const where = `${c.name} ${c.data}`;
          const decoded = message.decode(data);
          assert.deepStrictEqual(decoded, expectedValues(c.decoded!, c.bigint, false), where);
          assert.deepStrictEqual(message.decode(data, { scaling: false }), expectedValues(c.raw!, c.raw_bigint, false), where);

          buffer.fill(-12345);
          const written = message.decodeInto(data, buffer);
          assert.equal(written, Object.keys(decoded).length, where);
          for (const [name, value] of Object.entries(decoded)) {
            assert.deepStrictEqual(buffer[message.slot(name)], Number(value), `${where} ${name} in buffer`);
          }
        }
      });

      const has = (variant: string): boolean => existsSync(sharedTestdata('golden', `${stem}.${variant}.jsonl`));

      // Not every DBC has labelled or rejected vectors; those checks exist only where the reference wrote them.
      if (has('choices'))
        it('labels values with their value tables exactly as the reference', () => {
          const cases = readCases(sharedTestdata('golden', `${stem}.choices.jsonl`));
          const db = codec();
          for (const c of cases) {
            const message = db.find(c.id, c.extended)!;
            const decoded = message.decode(hexBytes(c.data), { choices: true });
            assert.deepStrictEqual(decoded, expectedValues(c.decoded!, c.bigint, true), `${c.name} ${c.data}`);
          }
        });

      if (has('errors'))
        it('rejects every frame the reference rejected', () => {
          const cases = readCases(sharedTestdata('golden', `${stem}.errors.jsonl`));
          const db = codec();
          const buffer = new Float64Array(db.slotCount);
          for (const c of cases) {
            const message = db.find(c.id, c.extended)!;
            const data = hexBytes(c.data);
            assert.throws(() => message.decode(data), DecodeError, `${c.name} ${c.data} (${c.error})`);
            assert.ok(message.decodeInto(data, buffer) < 0, `${c.name} ${c.data}: decodeInto must fail`);
            if (c.error?.includes('expected multiplexer id')) {
              assert.throws(() => message.decode(data), { message: new RegExp(c.error.replace(/^DecodeError: /, '')) });
            }
          }
        });

      it('encodes back to the same signal values: decode(encode(v)) == v', () => {
        const db = codec();
        for (const c of readCases(sharedTestdata('golden', `${stem}.jsonl`))) {
          const message = db.find(c.id, c.extended)!;
          const raw = message.decode(hexBytes(c.data), { scaling: false });
          const reencoded = message.encode(raw, { scaling: false });
          assert.deepStrictEqual(message.decode(reencoded, { scaling: false }), raw, `${c.name} ${c.data} raw`);
          const scaled = message.decode(hexBytes(c.data));
          assert.deepStrictEqual(message.decode(message.encode(scaled)), scaled, `${c.name} ${c.data} scaled`);
        }
      });
    });
  }
});
