/**
 * ISO-TP protocol engine: two channels back to back through an in-memory link (frames delivered on setImmediate, as a
 * socket would), plus hand-crafted peers for flow-control and error cases. Timing bounds are loose lower bounds.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createFrame, type CanFrame } from '../../src/can/frame.js';
import { decodeStMin, fdFrameLength, IsoTpChannel, IsoTpError, type IsoTpLink, type IsoTpOptions } from '../../src/can/isotp.js';
import { delay } from '../support/wait.js';

interface WireFrame {
  from: 'a' | 'b';
  id: number;
  extended: boolean;
  fd: boolean;
  data: number[];
  at: number;
}

function toFrame(id: number, extended: boolean, data: Uint8Array | number[], fd = false): CanFrame {
  const f = createFrame();
  f.id = id;
  f.extended = extended;
  f.fd = fd;
  f.data = Uint8Array.from(data);
  f.dlc = f.data.length;
  return f;
}

/** A link that records what a side sends and hands a copy to `deliver` on a later turn of the event loop. */
function recordingLink(from: 'a' | 'b', wire: WireFrame[], deliver: (f: CanFrame) => void): IsoTpLink {
  return {
    send(id, extended, data, fd) {
      // Copy now: the channel reuses its buffer once this call returns.
      wire.push({ from, id, extended, fd, data: Array.from(data), at: performance.now() });
      const frame = toFrame(id, extended, data, fd);
      setImmediate(() => deliver(frame));
    },
  };
}

const A_TX = 0x7e0;
const B_TX = 0x7e8;

function pair(a: Partial<IsoTpOptions> = {}, b: Partial<IsoTpOptions> = {}) {
  const wire: WireFrame[] = [];
  const holder: { a?: IsoTpChannel; b?: IsoTpChannel } = {};
  const chA = new IsoTpChannel(
    recordingLink('a', wire, (f) => holder.b!.onFrame(f)),
    { txId: A_TX, rxId: B_TX, ...a },
  );
  const chB = new IsoTpChannel(
    recordingLink('b', wire, (f) => holder.a!.onFrame(f)),
    { txId: B_TX, rxId: A_TX, ...b },
  );
  holder.a = chA;
  holder.b = chB;
  return { a: chA, b: chB, wire };
}

/** A channel whose peer is the test itself: `sent` collects its frames, `feed` injects frames from the peer. */
function solo(options: Partial<IsoTpOptions> = {}, onSend?: (data: number[]) => void) {
  const sent: number[][] = [];
  const ch = new IsoTpChannel(
    {
      send(_id, _ext, data) {
        const copy = Array.from(data);
        sent.push(copy);
        onSend?.(copy);
      },
    },
    { txId: A_TX, rxId: B_TX, ...options },
  );
  const feed = (data: number[]) => ch.onFrame(toFrame(options.rxId ?? B_TX, options.extended ?? false, data));
  return { ch, sent, feed };
}

function nextMessage(ch: IsoTpChannel): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const off = ch.onMessage((m) => {
      off();
      resolve(m);
    });
  });
}

function nextError(ch: IsoTpChannel): Promise<IsoTpError> {
  return new Promise((resolve) => {
    const off = ch.onError((e) => {
      off();
      resolve(e);
    });
  });
}

function pattern(n: number, seed = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

function hasCode(code: string) {
  return (err: unknown) => err instanceof IsoTpError && err.code === code;
}

async function roundTrip(payload: Uint8Array, a: Partial<IsoTpOptions> = {}, b: Partial<IsoTpOptions> = {}) {
  const p = pair(a, b);
  const got = nextMessage(p.b);
  await p.a.send(payload);
  assert.deepEqual(await got, payload);
  return p;
}

describe('isotp single frames', () => {
  for (const padding of [null, 0xcc] as const) {
    it(`1..7 bytes, padding ${padding === null ? 'off' : '0xCC'}`, async () => {
      for (let n = 1; n <= 7; n++) {
        const payload = pattern(n, n);
        const { wire } = await roundTrip(payload, { padding });
        assert.equal(wire.length, 1);
        const expected = [n, ...payload];
        if (padding !== null) while (expected.length < 8) expected.push(padding);
        assert.deepEqual(wire[0]!.data, expected);
        assert.equal(wire[0]!.id, A_TX);
        assert.equal(wire[0]!.extended, false);
      }
    });
  }

  it('ignores frames for other identifiers and SF_DL 0 in classic frames', async () => {
    const { ch, feed } = solo();
    const got: Uint8Array[] = [];
    ch.onMessage((m) => got.push(m));
    ch.onFrame(toFrame(0x123, false, [0x02, 1, 2]));
    ch.onFrame(toFrame(B_TX, true, [0x02, 1, 2]));
    feed([0x00, 1, 2]);
    feed([0x05, 1, 2]); // SF_DL longer than the frame
    feed([0x02, 9, 8]);
    assert.deepEqual(got, [Uint8Array.from([9, 8])]);
  });
});

describe('isotp multi-frame', () => {
  it('20 bytes: FF, CF and FC byte by byte (padding 0xCC)', async () => {
    const payload = pattern(20);
    const { wire } = await roundTrip(payload, { padding: 0xcc }, { padding: 0xcc });
    const p = Array.from(payload);
    assert.deepEqual(
      wire.map((f) => [f.from, f.data]),
      [
        ['a', [0x10, 0x14, ...p.slice(0, 6)]],
        ['b', [0x30, 0x00, 0x00, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc]],
        ['a', [0x21, ...p.slice(6, 13)]],
        ['a', [0x22, ...p.slice(13, 20)]],
      ],
    );
  });

  it('without padding the last CF and the FC are short', async () => {
    const payload = pattern(10);
    const { wire } = await roundTrip(payload, {}, { blockSize: 4, stMin: 2 });
    assert.deepEqual(wire[1]!.data, [0x30, 4, 2]);
    assert.deepEqual(wire[2]!.data, [0x21, ...Array.from(payload.subarray(6))]);
  });

  for (const n of [8, 62, 4095]) {
    it(`${n} bytes round trip`, async () => {
      const { wire } = await roundTrip(pattern(n, 7));
      const cfs = wire.filter((f) => f.from === 'a').length - 1;
      assert.equal(cfs, Math.ceil((n - 6) / 7));
    });
  }

  it('BS = 0: one FC; BS = 2: a FC after every second CF', async () => {
    const payload = pattern(62); // FF + 8 CFs
    const zero = await roundTrip(payload, {}, { blockSize: 0 });
    assert.equal(zero.wire.filter((f) => f.from === 'b').length, 1);
    const two = await roundTrip(payload, {}, { blockSize: 2 });
    const fcs = two.wire.filter((f) => f.from === 'b');
    assert.equal(fcs.length, 4); // after FF, CF2, CF4, CF6 (not after the last CF)
    for (const fc of fcs) assert.deepEqual(fc.data, [0x30, 2, 0]);
    // Each FC comes right after the CF that ended a block.
    const order = two.wire.map((f) => (f.from === 'b' ? 'FC' : f.data[0]! >> 4 === 1 ? 'FF' : 'CF'));
    assert.deepEqual(order, ['FF', 'FC', 'CF', 'CF', 'FC', 'CF', 'CF', 'FC', 'CF', 'CF', 'FC', 'CF', 'CF']);
  });

  it('STmin 5 ms is honoured between CFs', async () => {
    const t0 = performance.now();
    const { wire } = await roundTrip(pattern(62), {}, { stMin: 5 });
    const elapsed = performance.now() - t0;
    const cfs = wire.filter((f) => f.from === 'a' && f.data[0]! >> 4 === 2);
    assert.equal(cfs.length, 8);
    for (let i = 1; i < cfs.length; i++) assert.ok(cfs[i]!.at - cfs[i - 1]!.at >= 5 - 1e-6, `gap ${i}: ${cfs[i]!.at - cfs[i - 1]!.at} ms`);
    assert.ok(cfs[cfs.length - 1]!.at - cfs[0]!.at >= 7 * 5);
    assert.ok(elapsed < 7 * 5 + 1000, `took ${elapsed} ms`);
  });

  it('STmin codes decode exactly; 0xF3 is announced and works', async () => {
    assert.equal(decodeStMin(0x00), 0);
    assert.equal(decodeStMin(0x7f), 127_000);
    assert.equal(decodeStMin(0xf1), 100);
    assert.equal(decodeStMin(0xf3), 300);
    assert.equal(decodeStMin(0xf9), 900);
    for (const reserved of [0x80, 0xf0, 0xfa, 0xff]) assert.equal(decodeStMin(reserved), 127_000);
    const { wire } = await roundTrip(pattern(30), {}, { stMin: 0xf3 });
    assert.deepEqual(wire[1]!.data, [0x30, 0, 0xf3]);
    assert.throws(() => new IsoTpChannel({ send() {} }, { txId: 1, rxId: 2, stMin: 0x80 }), RangeError);
  });

  it('sequence numbers run 1..15 then wrap to 0', async () => {
    const { wire } = await roundTrip(pattern(6 + 7 * 20));
    const sns = wire.filter((f) => f.from === 'a' && f.data[0]! >> 4 === 2).map((f) => f.data[0]! & 0x0f);
    assert.deepEqual(sns, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4]);
  });

  it('29-bit identifiers 0x18DA10F1 / 0x18DAF110', async () => {
    const { wire } = await roundTrip(
      pattern(40),
      { txId: 0x18da10f1, rxId: 0x18daf110, extended: true },
      { txId: 0x18daf110, rxId: 0x18da10f1, extended: true },
    );
    assert.ok(wire.every((f) => f.extended));
    assert.deepEqual([...new Set(wire.map((f) => `${f.from}:${f.id.toString(16)}`))], ['a:18da10f1', 'b:18daf110']);
  });

  it('sends issued together go out one after the other', async () => {
    const p = pair();
    const got: Uint8Array[] = [];
    p.b.onMessage((m) => got.push(m));
    await Promise.all([p.a.send(pattern(30, 1)), p.a.send(pattern(3, 2)), p.a.send(pattern(50, 3))]);
    await delay(5);
    assert.deepEqual(got, [pattern(30, 1), pattern(3, 2), pattern(50, 3)]);
  });
});

describe('isotp flow control from a hand-crafted receiver', () => {
  it('WAIT frames then CTS: CFs only after the CTS', async () => {
    const nBs = 50;
    // Three WAITs 30 ms apart: each restarts N_Bs (50 ms), so 90 ms in total must not time out. A loaded machine can
    // make a gap longer than N_Bs (a late timer), and then the timeout is right: such an attempt is repeated.
    for (let attempt = 1; ; attempt++) {
      const events: string[] = [];
      let longestGap = 0;
      const { ch, feed } = solo({ timeouts: { nBs } }, (d) => {
        events.push(d[0]! >> 4 === 1 ? 'FF' : 'CF');
        if (d[0]! >> 4 === 1) {
          void (async () => {
            let last = performance.now();
            const gap = async (): Promise<void> => {
              await delay(30);
              longestGap = Math.max(longestGap, performance.now() - last);
              last = performance.now();
            };
            for (let i = 0; i < 3; i++) {
              await gap();
              events.push('WAIT');
              feed([0x31, 0, 0]);
            }
            await gap();
            events.push('CTS');
            feed([0x30, 0, 0]);
          })();
        }
      });
      const sent = await ch.send(pattern(20)).then(
        () => true,
        () => false,
      );
      ch.close();
      if (longestGap >= nBs - 5 && attempt < 10) {
        await delay(50); // the helper's last feed, if any, lands on the closed channel
        continue;
      }
      assert.ok(sent, `longest gap ${longestGap.toFixed(1)} ms`);
      assert.deepEqual(events, ['FF', 'WAIT', 'WAIT', 'WAIT', 'CTS', 'CF', 'CF']);
      return;
    }
  });

  it('more WAITs than maxWaitFrames → too-many-waits', async () => {
    const { ch, feed } = solo({ maxWaitFrames: 2 }, (d) => {
      if (d[0]! >> 4 === 1) setImmediate(() => [0, 1, 2].forEach(() => feed([0x31, 0, 0])));
    });
    await assert.rejects(ch.send(pattern(20)), hasCode('too-many-waits'));
  });

  it('OVERFLOW → overflow', async () => {
    const { ch, feed, sent } = solo({}, (d) => {
      if (d[0]! >> 4 === 1) setImmediate(() => feed([0x32, 0, 0]));
    });
    await assert.rejects(ch.send(pattern(100)), hasCode('overflow'));
    assert.equal(sent.length, 1);
  });

  it('reserved flow status → invalid-fs', async () => {
    const { ch, feed } = solo({}, (d) => {
      if (d[0]! >> 4 === 1) setImmediate(() => feed([0x35, 0, 0]));
    });
    await assert.rejects(ch.send(pattern(100)), hasCode('invalid-fs'));
  });

  it('no FC at all → timeout-bs after N_Bs', async () => {
    const { ch } = solo({ timeouts: { nBs: 50 } });
    const t0 = performance.now();
    await assert.rejects(ch.send(pattern(20)), hasCode('timeout-bs'));
    assert.ok(performance.now() - t0 >= 49);
  });

  it('no FC after a block → timeout-bs', async () => {
    const { ch, feed, sent } = solo({ timeouts: { nBs: 50 } }, (d) => {
      if (d[0]! >> 4 === 1) setImmediate(() => feed([0x30, 2, 0]));
    });
    await assert.rejects(ch.send(pattern(60)), hasCode('timeout-bs'));
    assert.equal(sent.length, 3); // FF + one block of 2 CFs
  });

  it('close() rejects a pending send with aborted', async () => {
    const { ch } = solo();
    const pending = ch.send(pattern(20));
    setTimeout(() => ch.close(), 10);
    await assert.rejects(pending, hasCode('aborted'));
    await assert.rejects(ch.send(pattern(2)), hasCode('aborted'));
  });

  it('payload > 4095 bytes on classic CAN → too-long', async () => {
    const { ch, sent } = solo();
    await assert.rejects(ch.send(new Uint8Array(4096)), hasCode('too-long'));
    await assert.rejects(ch.send(new Uint8Array(0)), hasCode('too-long'));
    assert.equal(sent.length, 0);
  });

  it('a receiver with a small maxRxLength answers OVERFLOW', async () => {
    const p = pair({}, { maxRxLength: 100 });
    const rxErr = nextError(p.b);
    await assert.rejects(p.a.send(pattern(200)), hasCode('overflow'));
    assert.equal((await rxErr).code, 'overflow');
    assert.deepEqual(p.wire[1]!.data, [0x32, 0, 0]);
  });
});

describe('isotp reception errors (hand-crafted sender)', () => {
  it('FC CTS sent after FF with our BS/STmin and padding', () => {
    const { ch, feed, sent } = solo({ blockSize: 8, stMin: 0x14, padding: 0xaa });
    feed([0x10, 0x14, 1, 2, 3, 4, 5, 6]);
    assert.deepEqual(sent, [[0x30, 8, 0x14, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa]]);
    ch.close(); // stops the pending N_Cr timer, which would hold the test process open
  });

  it('missing CF → timeout-cr, nothing delivered', async () => {
    const { ch, feed } = solo({ timeouts: { nCr: 50 } });
    let delivered = 0;
    ch.onMessage(() => delivered++);
    const err = nextError(ch);
    const t0 = performance.now();
    feed([0x10, 0x14, 1, 2, 3, 4, 5, 6]);
    feed([0x21, 7, 8, 9, 10, 11, 12, 13]);
    assert.equal((await err).code, 'timeout-cr');
    assert.ok(performance.now() - t0 >= 49);
    assert.equal(delivered, 0);
  });

  it('CFs keep N_Cr alive as long as they come in time', async () => {
    const nCr = 40;
    // Three gaps of 25 ms: 75 ms in total, longer than N_Cr, but each gap shorter. A loaded machine can make a gap
    // longer than N_Cr (a late timer), and then the timeout is right: such an attempt proves nothing and is repeated.
    for (let attempt = 1; ; attempt++) {
      const { ch, feed } = solo({ timeouts: { nCr } });
      const errors: IsoTpError[] = [];
      const delivered: Uint8Array[] = [];
      ch.onError((e) => errors.push(e));
      ch.onMessage((m) => delivered.push(m));
      feed([0x10, 27, 0, 1, 2, 3, 4, 5]);
      let fed = performance.now();
      let longestGap = 0;
      for (let sn = 1; sn <= 3; sn++) {
        await delay(25);
        longestGap = Math.max(longestGap, performance.now() - fed);
        feed([0x20 | sn, ...Array.from({ length: 7 }, (_, i) => 6 + (sn - 1) * 7 + i)]);
        fed = performance.now();
      }
      ch.close();
      if (longestGap >= nCr - 5 && attempt < 10) continue;
      assert.deepEqual(delivered, [Uint8Array.from({ length: 27 }, (_, i) => i)], `longest gap ${longestGap.toFixed(1)} ms`);
      assert.deepEqual(errors, []);
      return;
    }
  });

  it('wrong SN → wrong-sn, message dropped; the next message still arrives', async () => {
    const { ch, feed } = solo();
    const got: Uint8Array[] = [];
    const errors: string[] = [];
    ch.onMessage((m) => got.push(m));
    ch.onError((e) => errors.push(e.code));
    feed([0x10, 0x14, 1, 2, 3, 4, 5, 6]);
    feed([0x22, 7, 8, 9, 10, 11, 12, 13]);
    feed([0x23, 14, 15, 16, 17, 18, 19, 20]); // ignored: no reception in progress any more
    assert.deepEqual(errors, ['wrong-sn']);
    assert.equal(got.length, 0);
    feed([0x10, 0x08, 1, 2, 3, 4, 5, 6]);
    feed([0x21, 7, 8]);
    assert.deepEqual(got, [Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8])]);
  });

  it('a new SF during a reception aborts it (reported) and is delivered', () => {
    const { ch, feed } = solo();
    const got: Uint8Array[] = [];
    const errors: string[] = [];
    ch.onMessage((m) => got.push(m));
    ch.onError((e) => errors.push(e.code));
    feed([0x10, 0x14, 1, 2, 3, 4, 5, 6]);
    feed([0x21, 7, 8, 9, 10, 11, 12, 13]);
    feed([0x03, 0xaa, 0xbb, 0xcc]);
    feed([0x22, 14, 15, 16, 17, 18, 19, 20]); // belongs to the dropped message
    assert.deepEqual(errors, ['interrupted']);
    assert.deepEqual(got, [Uint8Array.from([0xaa, 0xbb, 0xcc])]);
  });

  it('a new FF during a reception restarts it', () => {
    const { ch, feed, sent } = solo();
    const got: Uint8Array[] = [];
    const errors: string[] = [];
    ch.onMessage((m) => got.push(m));
    ch.onError((e) => errors.push(e.code));
    feed([0x10, 0x14, 1, 2, 3, 4, 5, 6]);
    feed([0x10, 0x09, 9, 9, 9, 9, 9, 9]);
    feed([0x21, 8, 7, 6]);
    assert.deepEqual(errors, ['interrupted']);
    assert.deepEqual(got, [Uint8Array.from([9, 9, 9, 9, 9, 9, 8, 7, 6])]);
    assert.equal(sent.length, 2); // a FC for each FF
  });
});

describe('isotp CAN FD', () => {
  it('single frame of 20 bytes uses the length escape', async () => {
    const payload = pattern(20);
    const { wire } = await roundTrip(payload, { fd: true }, { fd: true });
    assert.equal(wire.length, 1);
    assert.equal(wire[0]!.fd, true);
    // 22 bytes are not a valid CAN FD length: filled up to 24.
    assert.deepEqual(wire[0]!.data, [0x00, 20, ...payload, 0xcc, 0xcc]);
  });

  it('up to 7 bytes still use the classic SF layout, padded to 8', async () => {
    const { wire } = await roundTrip(pattern(5), { fd: true, padding: 0x55 }, { fd: true });
    assert.deepEqual(wire[0]!.data, [0x05, ...pattern(5), 0x55, 0x55]);
  });

  it('multi-frame of 300 bytes: 64-byte FF and CFs', async () => {
    const payload = pattern(300);
    const { wire } = await roundTrip(payload, { fd: true, padding: 0xaa }, { fd: true });
    const p = Array.from(payload);
    const fromA = wire.filter((f) => f.from === 'a');
    assert.equal(fromA.length, 5); // FF 62 + 3 × 63 + 49
    assert.deepEqual(fromA[0]!.data, [0x11, 0x2c, ...p.slice(0, 62)]);
    assert.deepEqual(fromA[1]!.data, [0x21, ...p.slice(62, 125)]);
    assert.deepEqual(fromA[4]!.data, [0x24, ...p.slice(251), ...new Array<number>(64 - 50).fill(0xaa)]);
    assert.deepEqual(wire[1]!.data, [0x30, 0, 0]);
  });

  it('messages over 4095 bytes use the 32-bit FF length escape', async () => {
    const payload = pattern(5000);
    const { wire } = await roundTrip(payload, { fd: true }, { fd: true });
    assert.deepEqual(wire[0]!.data.slice(0, 6), [0x10, 0x00, 0x00, 0x00, 0x13, 0x88]);
    assert.deepEqual(wire[0]!.data.slice(6), Array.from(payload.subarray(0, 58)));
  });

  it('fdFrameLength rounds up to valid CAN FD lengths', () => {
    assert.deepEqual([0, 8, 9, 13, 22, 33, 49, 64].map(fdFrameLength), [0, 8, 12, 16, 24, 48, 64, 64]);
  });
});
