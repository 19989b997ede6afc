/**
 * The SocketCAN source and endpoints on a real kernel (runs inside the VM: scripts/vm/run-in-vm.sh, started by
 * test/vm/vm.test.ts). Peers are can-utils (cansend, cangen, candump) and the kernel itself (ip link).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exactFilter } from '../../src/can/bus.js';
import { CanFrameWriter, FrameWriteError } from '../../src/can/frame-writer.js';
import { cloneFrame, type CanFrame } from '../../src/can/frame.js';
import { interfaceState, SocketCanBus, SocketCanSource, type EndpointStateChange } from '../../src/can/socketcan.js';
import type { ControllerStateChange } from '../../src/can/bus-health.js';
import { compileDatabase, parseDbc } from '../../src/dbc/index.js';
import { receiveFilters } from '../../src/dbc/receive-filters.js';
import { hexText } from '../support/hex.js';
import { background, cangenAsync, Cleanup, createVcan, deleteVcan, run, setLink, waitUntilReading, withVcan } from '../support/vcan.js';
import { delay, waitFor } from '../support/wait.js';

const IF = 'vt-src0';
const IF2 = 'vt-src1';
const cleanup = new Cleanup();

/** Starts a source on `ifname` collecting copies of its frames; `stop()` ends it. */
async function startSource(ifname: string, options: Partial<ConstructorParameters<typeof SocketCanSource>[0]> = {}) {
  const frames: CanFrame[] = [];
  const states: EndpointStateChange[] = [];
  const controller: ControllerStateChange[] = [];
  const source = new SocketCanSource({
    interface: ifname,
    retry: { initialMs: 20, maxMs: 200 },
    onStateChange: (c) => states.push(c),
    onControllerState: (c) => controller.push(c),
    ...options,
  });
  const abort = new AbortController();
  const running = source.run((f) => frames.push(cloneFrame(f)), abort.signal);
  cleanup.add(() => abort.abort());
  await source.whenOpen();
  return {
    source,
    frames,
    states,
    controller,
    stop: async () => {
      abort.abort();
      await running;
    },
  };
}

describe('SocketCAN source on a real kernel', { timeout: 60_000 }, () => {
  withVcan([IF, IF2], { cleanup });

  it('receives classic, extended, remote and CAN FD frames from cansend intact, with kernel timestamps', async () => {
    const s = await startSource(IF);
    const before = Date.now() / 1000;
    run('cansend', IF, '123#DEADBEEF');
    run('cansend', IF, '1ABCDEF0#0102030405060708');
    run('cansend', IF, '7FF#R');
    run('cansend', IF, '456##1' + '11223344556677889900AABBCCDDEEFF' + '0'.repeat(96));
    run('cansend', IF, '000#');
    await waitFor(() => s.frames.length >= 5, '5 frames');
    await s.stop();
    const [a, b, c, d, e] = s.frames as [CanFrame, CanFrame, CanFrame, CanFrame, CanFrame];
    assert.deepEqual([a.id, a.extended, a.fd, hexText(a.data, '')], [0x123, false, false, 'DEADBEEF']);
    assert.deepEqual([b.id, b.extended, b.fd, hexText(b.data, '')], [0x1abcdef0, true, false, '0102030405060708']);
    assert.deepEqual([c.id, c.remote, c.extended], [0x7ff, true, false]);
    assert.deepEqual([d.id, d.fd, d.data.length, hexText(d.data.subarray(0, 16), '')], [0x456, true, 64, '11223344556677889900AABBCCDDEEFF']);
    assert.deepEqual([e.id, e.data.length], [0, 0]);
    for (const f of s.frames) {
      assert.equal(f.bus, IF);
      assert.ok(f.ts >= before - 1 && f.ts <= Date.now() / 1000 + 1, `kernel timestamp ${f.ts} is now`);
    }
    assert.equal(s.source.frames, 5);
  });

  it('delivers every frame of a paced cangen run, in order, classic and FD', async () => {
    const s = await startSource(IF);
    await cangenAsync(IF, '-g', '1', '-n', '300', '-I', '321', '-L', '8', '-D', 'i');
    await cangenAsync(IF, '-g', '1', '-n', '100', '-f', '-e', '-I', '18FEF100', '-L', '64', '-D', 'i');
    await waitFor(() => s.frames.length >= 400, '400 frames');
    await delay(50);
    await s.stop();
    assert.equal(s.frames.length, 400);
    s.frames.slice(0, 300).forEach((f, i) => {
      assert.equal(f.id, 0x321);
      // -D i: the payload is a little-endian counter in the first byte(s)... cangen increments byte 0 and carries.
      assert.equal(f.data[0], i & 0xff, `frame ${i}`);
    });
    s.frames.slice(300).forEach((f) => assert.deepEqual([f.id, f.extended, f.fd, f.data.length], [0x18fef100, true, true, 64]));
  });

  it('kernel filters from the DBC: frames nobody decodes never reach the agent', async () => {
    const db = compileDatabase(
      parseDbc(
        [
          'VERSION ""',
          'BU_: ECU',
          'BO_ 256 ENGINE: 8 ECU',
          ' SG_ Rpm : 0|16@1+ (0.25,0) [0|16383.75] "rpm" Vector__XXX',
          'BO_ 2364540158 EEC1: 8 ECU',
          ' SG_ EngSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX',
          'BO_ 2566834942 DM1: 8 ECU',
          ' SG_ Lamp : 0|8@1+ (1,0) [0|255] "" Vector__XXX',
          'BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","J1939PG";',
          'BA_ "VFrameFormat" BO_ 2364540158 3;',
          'BA_ "VFrameFormat" BO_ 2566834942 3;',
          '',
        ].join('\n'),
      ),
      { j1939: true },
    );
    const filters = receiveFilters(db, { j1939: true });
    assert.ok(filters);
    const s = await startSource(IF, { filters });
    for (const frame of [
      '100#0102', // ENGINE: wanted
      '101#0102', // unknown 11-bit
      '00000100#01', // 29-bit 0x100: not the 11-bit ENGINE
      '0CF00400#0000000000000000', // EEC1 from SA 00, priority 3: wanted (PGN 0xF004)
      '18F00417#0000000000000000', // EEC1 from SA 0x17, priority 6: wanted
      '0CF00500#00', // PGN 0xF005: not in the DBC
      '18CA00FE#01', // DM1? no: PGN 0xCA00 is PDU1 with DA 00 -> 0xCA00, not DM1 (0xFECA)
      '18FECA00#01', // DM1 (PDU2 0xFECA) from SA 00: wanted
    ]) {
      run('cansend', IF, frame);
    }
    run('cansend', IF, '100#FFFF'); // end marker
    await waitFor(() => s.frames.some((f) => f.id === 0x100 && f.data[0] === 0xff), 'end marker');
    await s.stop();
    assert.deepEqual(
      s.frames.map((f) => `${f.extended ? 'x' : 's'}${f.id.toString(16)}`),
      ['s100', 'xcf00400', 'x18f00417', 'x18feca00', 's100'],
    );
  });

  it('error frames: bus-off, error-passive and restart become controller-state events and counters, not frames', async () => {
    const s = await startSource(IF);
    // An error frame is a frame with CAN_ERR_FLAG (0x20000000) in its identifier; vcan loops it back to every socket
    // that asked for error frames, as a controller driver would report it.
    run('cansend', IF, '20000004#0020000000000000'); // controller: TX error-passive
    run('cansend', IF, '20000002#0500000000000000'); // lost arbitration at bit 5
    run('cansend', IF, '20000040#0000000000000000'); // bus-off
    run('cansend', IF, '20000100#0000000000000000'); // controller restarted
    run('cansend', IF, '20000200#0000000000007F03'); // error counters tx 127, rx 3
    run('cansend', IF, '123#01');
    await waitFor(() => s.frames.length >= 1 && s.source.health.counters.errorFrames >= 5, 'frames');
    await s.stop();
    assert.deepEqual(
      s.frames.map((f) => f.id),
      [0x123],
    );
    assert.deepEqual(
      s.controller.map((c) => `${c.previous}->${c.state}`),
      ['error-active->error-passive', 'error-passive->bus-off', 'bus-off->error-active'],
    );
    const h = s.source.health;
    assert.deepEqual([h.counters.errorFrames, h.counters.busOff, h.counters.errorPassive, h.counters.arbitrationLost, h.counters.restarted], [5, 1, 1, 1, 1]);
    assert.deepEqual([h.txErrorCounter, h.rxErrorCounter], [127, 3]);
  });

  it('survives the interface going down and up: one event per change, frames flow again', async () => {
    const s = await startSource(IF);
    run('cansend', IF, '111#01');
    await waitFor(() => s.frames.length === 1, 'first frame');
    setLink(IF, 'down');
    await waitFor(() => s.source.state === 'down', 'state down');
    await delay(500); // several retry periods: still one event
    setLink(IF, 'up');
    await waitFor(() => s.source.state === 'open', 'reopened');
    run('cansend', IF, '111#02');
    await waitFor(() => s.frames.length === 2, 'frame after up');
    await s.stop();
    assert.deepEqual(
      s.states.map((c) => c.state),
      ['open', 'down', 'open', 'closed'],
    );
    assert.equal(s.source.opens, 2);
    assert.deepEqual(
      s.frames.map((f) => f.data[0]),
      [1, 2],
    );
  });

  it('waits for a missing interface, and survives it disappearing and coming back', async () => {
    deleteVcan(IF2);
    const states: EndpointStateChange[] = [];
    const frames: CanFrame[] = [];
    const source = new SocketCanSource({ interface: IF2, retry: { initialMs: 20, maxMs: 100 }, onStateChange: (c) => states.push(c) });
    const abort = new AbortController();
    const running = source.run((f) => frames.push(cloneFrame(f)), abort.signal);
    cleanup.add(() => abort.abort());
    await waitFor(() => source.state === 'missing', 'missing');
    await delay(300);
    createVcan(IF2);
    await waitFor(() => source.state === 'open', 'opened once created');
    run('cansend', IF2, '222#01');
    await waitFor(() => frames.length === 1, 'frame');
    deleteVcan(IF2);
    await waitFor(() => source.state === 'missing', 'missing again');
    createVcan(IF2);
    await waitFor(() => source.state === 'open', 'reopened');
    run('cansend', IF2, '222#02');
    await waitFor(() => frames.length === 2, 'frame after re-creation');
    abort.abort();
    await running;
    assert.deepEqual(
      states.map((c) => c.state),
      ['missing', 'open', 'missing', 'open', 'closed'],
    );
    assert.equal(interfaceState(IF2), 'up');
    assert.equal(interfaceState('nosuchcan9'), 'missing');
    assert.equal(interfaceState('../etc'), 'missing');
  });

  it('endpoints: kernel filters, no own frames, FD send; candump sees what the frame writer encodes', async () => {
    const bus = new SocketCanBus(IF);
    const a = bus.open();
    const b = bus.open({ filters: [exactFilter(0x7e8), exactFilter(0x18daf110, true)] });
    cleanup.add(() => a.close());
    cleanup.add(() => b.close());
    await Promise.all([a.whenOpen(), b.whenOpen()]);
    const gotA: string[] = [];
    const gotB: string[] = [];
    a.onFrame((f) => gotA.push(`${f.id.toString(16)}:${hexText(f.data, '')}`));
    b.onFrame((f) => gotB.push(`${f.id.toString(16)}:${hexText(f.data, '')}`));
    const dump = background('candump', ['-L', '-n', '3', IF]);
    cleanup.add(() => dump.child.kill());
    await waitUntilReading(dump.child);
    a.send(0x7e8, false, Uint8Array.of(1, 2, 3));
    a.send(0x7e9, false, Uint8Array.of(4));
    a.send(0x18daf110, true, new Uint8Array(12).fill(0xaa), true);
    const dumped = (await dump.done)
      .trim()
      .split('\n')
      .map((l) => l.split(' ').slice(1).join(' '));
    await waitFor(() => gotB.length >= 2, 'b frames');
    assert.deepEqual(gotB, ['7e8:010203', '18daf110:' + 'AA'.repeat(12)]);
    assert.deepEqual(gotA, [], 'an endpoint does not receive its own frames');
    // Kernels since 6.x mark every FD frame with CANFD_FDF (0x04), which candump prints as the flags nibble.
    assert.deepEqual(dumped, [`${IF} 7E8#010203`, `${IF} 7E9#04`, `${IF} 18DAF110##4${'AA'.repeat(12)}`]);

    const db = compileDatabase(
      parseDbc(
        'VERSION ""\nBU_: GW\nBO_ 1280 LIGHTS: 2 GW\n SG_ Headlamp : 0|2@1+ (1,0) [0|3] "" Vector__XXX\n SG_ Level : 8|8@1+ (0.5,0) [0|100] "%" Vector__XXX\n',
      ),
    );
    let clock = 0;
    const writer = new CanFrameWriter(a, db, { maxFramesPerSecond: 10, burst: 2, now: () => clock });
    const dump2 = background('candump', ['-L', '-n', '2', IF]);
    cleanup.add(() => dump2.child.kill());
    await waitUntilReading(dump2.child);
    writer.send('LIGHTS', { Headlamp: 2, Level: 37.5 });
    writer.send('LIGHTS', { Headlamp: 1 });
    assert.throws(
      () => writer.send('LIGHTS', { Headlamp: 1 }),
      (e: FrameWriteError) => e.code === 'rate-limited',
    );
    clock += 100; // one more token
    assert.throws(
      () => writer.send('LIGHTS', { Headlamp: 9 }),
      (e: FrameWriteError) => e.code === 'encode',
    );
    assert.throws(
      () => writer.send('NOPE', {}),
      (e: FrameWriteError) => e.code === 'unknown-message',
    );
    const dumped2 = (await dump2.done)
      .trim()
      .split('\n')
      .map((l) => l.split(' ').slice(2).join(' '));
    assert.deepEqual(dumped2, ['500#024B', '500#0100']);
    assert.deepEqual([writer.sent, writer.refused], [2, 1]);

    setLink(IF, 'down');
    await waitFor(() => a.state === 'down', 'endpoint sees down');
    assert.throws(
      () => a.send(0x100, false, Uint8Array.of(1)),
      (e: Error & { code?: string }) => e.code === 'down',
    );
    setLink(IF, 'up');
    await waitFor(() => a.state === 'open' && b.state === 'open', 'endpoints reopened');
    a.send(0x7e8, false, Uint8Array.of(9));
    await waitFor(() => gotB.length === 3, 'frame after reopen');
    a.close();
    b.close();
    assert.throws(
      () => a.send(0x100, false, Uint8Array.of(1)),
      (e: Error & { code?: string }) => e.code === 'closed',
    );
  });
});
