/**
 * Host-side pieces of the SocketCAN stage that need no kernel: the in-memory bus's filter semantics (the same as the
 * kernel's, so protocol tests on it mean something), error-frame accounting, the frame writer and DBC receive filters.
 * The kernel side is in socketcan.vmtest.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CanBusError, exactFilter, filterMatches, MemoryCanBus } from '../../src/can/bus.js';
import { BusHealth, type ControllerStateChange } from '../../src/can/bus-health.js';
import { CanFrameWriter, FrameWriteError } from '../../src/can/frame-writer.js';
import { createFrame } from '../../src/can/frame.js';
import { compileDatabase, parseDbc } from '../../src/dbc/index.js';
import { receiveFilters } from '../../src/dbc/receive-filters.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function errorFrame(cls: number, data: number[]) {
  const f = createFrame();
  f.error = true;
  f.id = cls;
  f.data = Uint8Array.from(data);
  f.dlc = 8;
  f.ts = 1700000000.5;
  return f;
}

describe('filters', () => {
  it('match id under mask and never mix 11- and 29-bit frames', () => {
    assert.equal(filterMatches(exactFilter(0x7e8), 0x7e8, false), true);
    assert.equal(filterMatches(exactFilter(0x7e8), 0x7e8, true), false);
    assert.equal(filterMatches({ id: 0x7e8, mask: 0x7f8, extended: false }, 0x7ef, false), true);
    assert.equal(filterMatches({ id: 0x7e8, mask: 0x7f8, extended: false }, 0x7df, false), false);
    assert.equal(exactFilter(0x800).extended, true, 'an identifier above 0x7FF is 29-bit');
  });
});

describe('MemoryCanBus', () => {
  it('delivers to the other endpoints that pass their filters, never back to the sender', async () => {
    const bus = new MemoryCanBus();
    const a = bus.open();
    const b = bus.open({ filters: [exactFilter(0x100)] });
    const got = { a: [] as number[], b: [] as number[] };
    a.onFrame((f) => got.a.push(f.id));
    b.onFrame((f) => got.b.push(f.id));
    a.send(0x100, false, Uint8Array.of(1));
    a.send(0x101, false, Uint8Array.of(1));
    b.send(0x102, false, Uint8Array.of(1));
    await tick();
    assert.deepEqual(got, { a: [0x102], b: [0x100] });
    assert.throws(
      () => a.send(0x800, false, new Uint8Array(1)),
      (e: CanBusError) => e.code === 'invalid-frame',
    );
    assert.throws(
      () => a.send(0x100, false, new Uint8Array(9)),
      (e: CanBusError) => e.code === 'invalid-frame',
    );
    bus.up = false;
    assert.throws(
      () => a.send(0x100, false, new Uint8Array(1)),
      (e: CanBusError) => e.code === 'down',
    );
    a.close();
    assert.throws(
      () => a.send(0x100, false, new Uint8Array(1)),
      (e: CanBusError) => e.code === 'closed',
    );
  });
});

describe('BusHealth', () => {
  it('tracks the controller state through warning, passive, bus-off and restart, one event per change', () => {
    const changes: ControllerStateChange[] = [];
    const health = new BusHealth('can0', (c) => changes.push(c));
    health.record(errorFrame(0x004, [0, 0x08, 0, 0, 0, 0, 0, 0])); // TX warning
    health.record(errorFrame(0x004, [0, 0x08, 0, 0, 0, 0, 0, 0])); // again: no event
    health.record(errorFrame(0x004, [0, 0x10, 0, 0, 0, 0, 0, 0])); // RX passive
    health.record(errorFrame(0x040 | 0x004, [0, 0x20, 0, 0, 0, 0, 0, 0])); // bus-off wins over passive
    health.record(errorFrame(0x100, [0, 0, 0, 0, 0, 0, 0, 0])); // restarted
    health.record(errorFrame(0x004, [0, 0x01, 0, 0, 0, 0, 0, 0])); // RX overflow: no state change
    health.record(errorFrame(0x0a8 | 0x020 | 0x200, [0, 0, 0, 0, 0, 0, 96, 4])); // bus error, protocol, no ACK, counters
    assert.deepEqual(
      changes.map((c) => `${c.previous}->${c.state}@${c.ts}`),
      [
        'error-active->error-warning@1700000000.5',
        'error-warning->error-passive@1700000000.5',
        'error-passive->bus-off@1700000000.5',
        'bus-off->error-active@1700000000.5',
      ],
    );
    assert.deepEqual(health.counters, {
      errorFrames: 7,
      busOff: 1,
      errorPassive: 2,
      errorWarning: 2,
      restarted: 1,
      arbitrationLost: 0,
      protocolErrors: 1,
      noAck: 1,
      busErrors: 1,
      txTimeouts: 0,
      transceiverErrors: 0,
      rxOverflows: 1,
      txOverflows: 0,
    });
    assert.deepEqual([health.txErrorCounter, health.rxErrorCounter], [96, 4]);
  });

  it('ignores truncated error frames without throwing', () => {
    const health = new BusHealth('can0');
    health.record(errorFrame(0x004 | 0x200, []));
    assert.equal(health.state, 'error-active');
    assert.equal(health.counters.errorFrames, 1);
  });
});

const LIGHTS_DBC =
  'VERSION ""\nBU_: GW\nBO_ 1280 LIGHTS: 2 GW\n SG_ Headlamp : 0|2@1+ (1,0) [0|3] "" Vector__XXX\n SG_ Level : 8|8@1+ (0.5,0) [0|100] "%" Vector__XXX\n';

describe('CanFrameWriter', () => {
  it('encodes through the DBC, sends, and refuses frames above the rate limit', async () => {
    const bus = new MemoryCanBus();
    let now = 0;
    const writer = new CanFrameWriter(bus.open(), compileDatabase(parseDbc(LIGHTS_DBC)), { maxFramesPerSecond: 20, burst: 3, now: () => now });
    for (let i = 0; i < 3; i++) writer.send('LIGHTS', { Headlamp: i, Level: 10 * i });
    assert.throws(
      () => writer.send('LIGHTS', {}),
      (e: FrameWriteError) => e.code === 'rate-limited',
    );
    now += 49;
    assert.throws(
      () => writer.send('LIGHTS', {}),
      (e: FrameWriteError) => e.code === 'rate-limited',
      '49 ms < one token at 20/s',
    );
    now += 1;
    writer.send('LIGHTS', { Level: 100 });
    now += 10_000; // refills to the burst, not beyond
    for (let i = 0; i < 3; i++) writer.send('LIGHTS', {});
    assert.throws(
      () => writer.send('LIGHTS', {}),
      (e: FrameWriteError) => e.code === 'rate-limited',
    );
    assert.deepEqual(
      bus.log.slice(0, 4).map((f) => `${f.id.toString(16)}#${Buffer.from(f.data).toString('hex')}`),
      ['500#0000', '500#0114', '500#0228', '500#00c8'],
    );
    assert.deepEqual([writer.sent, writer.refused], [7, 3]);
  });

  it('reports unknown messages, values out of range and bus errors, sending nothing', () => {
    const bus = new MemoryCanBus();
    const writer = new CanFrameWriter(bus.open(), compileDatabase(parseDbc(LIGHTS_DBC)));
    assert.throws(
      () => writer.send('HORN', {}),
      (e: FrameWriteError) => e.code === 'unknown-message' && /HORN/.test(e.message),
    );
    assert.throws(
      () => writer.send('LIGHTS', { Level: 101 }),
      (e: FrameWriteError) => e.code === 'encode',
    );
    bus.up = false;
    assert.throws(
      () => writer.send('LIGHTS', {}),
      (e: FrameWriteError) => e.code === 'send' && /down/.test(e.message),
    );
    assert.equal(bus.log.length, 0);
    assert.throws(() => new CanFrameWriter(bus.open(), compileDatabase(parseDbc(LIGHTS_DBC)), { maxFramesPerSecond: 0 }), RangeError);
  });
});

describe('receiveFilters', () => {
  it('one exact filter per message, J1939 groups by PGN, null above the kernel limit', () => {
    const dbc = [
      'VERSION ""',
      'BU_: ECU',
      'BO_ 256 A: 8 ECU',
      'BO_ 2364540158 EEC1: 8 ECU', // 0x0CF004FE, PDU2
      'BO_ 2566834942 DM1: 8 ECU', // 0x18FECAFE, PDU2
      'BO_ 2565537790 TSC1: 8 ECU', // 0x18EAFFFE, PDU1 (PF 0xEA)
      'BO_ 2147484160 X: 8 ECU', // 0x200 as a 29-bit id
      '',
    ].join('\n');
    const db = compileDatabase(parseDbc(dbc), { j1939: true });
    assert.deepEqual(receiveFilters(db), [
      { id: 0x100, mask: 0x7ff, extended: false },
      { id: 0x0cf004fe, mask: 0x1fffffff, extended: true },
      { id: 0x18fecafe, mask: 0x1fffffff, extended: true },
      { id: 0x18eafffe, mask: 0x1fffffff, extended: true },
      { id: 0x200, mask: 0x1fffffff, extended: true },
    ]);
    assert.deepEqual(receiveFilters(db, { j1939: true }), [
      { id: 0x100, mask: 0x7ff, extended: false },
      { id: 0x00f00400, mask: 0x03ffff00, extended: true },
      { id: 0x00feca00, mask: 0x03ffff00, extended: true },
      { id: 0x00ea0000, mask: 0x03ff0000, extended: true },
      { id: 0x0, mask: 0x03ff0000, extended: true },
    ]);
    assert.equal(receiveFilters(db, { limit: 4 }), null);
    assert.equal(receiveFilters(db, { extra: [exactFilter(0x100)] })!.length, 5, 'duplicates are merged');
  });
});
