/**
 * The SocketCAN receive path of the project's own addon (native/can-rx, src/can/can-socket.ts) on a real kernel (runs
 * inside the VM: scripts/vm/run-in-vm.sh, started by test/vm/vm.test.ts): counted bursts, CAN FD by the size the
 * kernel delivered, error frames among data frames, the interface going down with frames still queued, kernel drops
 * counted, kernel timestamps. Peers are can-utils (cansend, cangen) and the kernel itself (ip link).
 *
 * A burst is queued while the event loop is blocked in a synchronous child process (`run`), so the agent reads all
 * of it from the socket's queue afterwards: what is tested is the drain, not a race with the sender.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CanFrame } from '../../src/can/frame.js';
import { SocketCanSource, type EndpointStateChange } from '../../src/can/socketcan.js';
import { CANGEN, cangen, cangenAsync, Cleanup, run, runAsync, withVcan } from '../support/vcan.js';
import { waitFor } from '../support/wait.js';

const IF = 'vt-rx0';
const cleanup = new Cleanup();
const BURST = 20_000;
/** Room for the whole burst: the kernel charges about 1 KiB per queued frame (root gets it past rmem_max). */
const BIG_BUFFER = 48 << 20;

/** cangen's incrementing payload (-D i) is a little-endian counter from 0: its first four bytes. */
function counter(f: CanFrame): number {
  const d = f.data;
  return (d[0]! | (d[1]! << 8) | (d[2]! << 16) | (d[3]! << 24)) >>> 0;
}

/** A source on IF whose sink records what each test needs without keeping the (reused) frame. */
async function startSource(options: Partial<ConstructorParameters<typeof SocketCanSource>[0]> = {}) {
  const seen = {
    count: 0,
    /** Frames whose payload counter was not the next one (lost or reordered), with the first few of them. */
    outOfOrder: 0,
    firstOutOfOrder: [] as string[],
    ids: new Set<number>(),
    minTs: Infinity,
    maxTs: 0,
    tsBackwards: 0,
    fd: 0,
    lastTs: 0,
  };
  const states: EndpointStateChange[] = [];
  const source = new SocketCanSource({
    interface: IF,
    retry: { initialMs: 20, maxMs: 200 },
    onStateChange: (c) => states.push(c),
    ...options,
  });
  const abort = new AbortController();
  const running = source.run((f) => {
    const c = counter(f);
    if (c !== seen.count) {
      seen.outOfOrder++;
      if (seen.firstOutOfOrder.length < 5) seen.firstOutOfOrder.push(`#${seen.count}: ${c}`);
    }
    seen.count++;
    seen.ids.add(f.id);
    if (f.fd) seen.fd++;
    if (f.ts < seen.lastTs) seen.tsBackwards++;
    seen.lastTs = f.ts;
    seen.minTs = Math.min(seen.minTs, f.ts);
    seen.maxTs = Math.max(seen.maxTs, f.ts);
  }, abort.signal);
  cleanup.add(() => abort.abort());
  await source.whenOpen();
  return {
    source,
    seen,
    states,
    stop: async () => {
      abort.abort();
      await running;
    },
  };
}

describe('[19.socketcan] the receive path on a real kernel', { timeout: 240_000 }, () => {
  withVcan([IF], { cleanup });

  it('[19.socketcan] a queued burst of 20,000 frames arrives whole and in order, with monotonic kernel timestamps, in a few wake-ups', async () => {
    const s = await startSource({ receiveBufferBytes: BIG_BUFFER });
    assert.ok(s.source.receiveBufferBytes >= BIG_BUFFER, `receive buffer granted: ${s.source.receiveBufferBytes}`);
    const before = Date.now() / 1000;
    // The event loop is blocked until cangen has queued every frame: nothing is read meanwhile.
    cangen(IF, '-g', '0', '-n', String(BURST), '-I', '123', '-L', '8', '-D', 'i', '-p', '10');
    const queued = Date.now() / 1000;
    await waitFor(() => s.seen.count >= BURST, `${BURST} frames`, 60_000);
    const wakeUps = s.source.wakeUps;
    await s.stop();
    assert.equal(s.seen.count, BURST);
    assert.equal(s.seen.outOfOrder, 0, `lost or reordered: ${s.seen.firstOutOfOrder.join(', ')}`);
    assert.deepEqual([...s.seen.ids], [0x123]);
    assert.equal(s.seen.fd, 0, 'classic frames read as classic');
    assert.equal(s.source.health.kernelDrops, 0);
    // Kernel receive times: never backwards, and all taken while the loop was blocked (a read time would be later).
    assert.equal(s.seen.tsBackwards, 0, 'kernel timestamps never go backwards');
    assert.ok(s.seen.minTs >= before - 0.002 && s.seen.maxTs <= queued + 0.002, `timestamps ${s.seen.minTs}..${s.seen.maxTs} within ${before}..${queued}`);
    // 157 reads of 128 frames, at most 32 reads per wake-up: a handful of wake-ups, not one per frame.
    assert.ok(wakeUps >= 1 && wakeUps <= 12, `${wakeUps} wake-ups for ${BURST} frames`);
  });

  it('[19.socketcan] a paced run keeps order and loses nothing while the agent reads beside the sender', async () => {
    const s = await startSource({ receiveBufferBytes: BIG_BUFFER });
    await cangenAsync(IF, '-g', '0.2', '-n', '5000', '-I', '18FEF100', '-e', '-L', '8', '-D', 'i', '-p', '10');
    await waitFor(() => s.seen.count + s.source.health.kernelDrops >= 5000, '5000 frames', 30_000);
    await s.stop();
    assert.equal(s.source.health.kernelDrops, 0);
    assert.equal(s.seen.count, 5000);
    assert.equal(s.seen.outOfOrder, 0, `lost or reordered: ${s.seen.firstOutOfOrder.join(', ')}`);
    assert.deepEqual([...s.seen.ids], [0x18fef100]);
  });

  it('[19.socketcan] CAN FD is told by the frame size: FD frames of 0, 2, 8, 12 and 64 bytes read as FD, with BRS/ESI; classic 8 bytes as classic', async () => {
    const frames: { id: number; fd: boolean; fdFlags: number; dlc: number; hex: string }[] = [];
    const source = new SocketCanSource({ interface: IF });
    const abort = new AbortController();
    const running = source.run(
      (f) => frames.push({ id: f.id, fd: f.fd, fdFlags: f.fdFlags, dlc: f.dlc, hex: Buffer.from(f.data).toString('hex') }),
      abort.signal,
    );
    cleanup.add(() => abort.abort());
    await source.whenOpen();
    run('cansend', IF, '101##0');
    run('cansend', IF, '102##1A1B2');
    run('cansend', IF, '103##30102030405060708');
    run('cansend', IF, '104#0102030405060708');
    run('cansend', IF, `105##2${'C3'.repeat(12)}`);
    run('cansend', IF, `18DAF110##1${'5A'.repeat(64)}`);
    await waitFor(() => frames.length >= 6, '6 frames');
    abort.abort();
    await running;
    assert.deepEqual(frames, [
      { id: 0x101, fd: true, fdFlags: 0, dlc: 0, hex: '' },
      { id: 0x102, fd: true, fdFlags: 1, dlc: 2, hex: 'a1b2' },
      { id: 0x103, fd: true, fdFlags: 3, dlc: 8, hex: '0102030405060708' },
      { id: 0x104, fd: false, fdFlags: 0, dlc: 8, hex: '0102030405060708' },
      { id: 0x105, fd: true, fdFlags: 2, dlc: 12, hex: 'c3'.repeat(12) },
      { id: 0x18daf110, fd: true, fdFlags: 1, dlc: 64, hex: '5a'.repeat(64) },
    ]);
  });

  it('[19.socketcan] error frames inside a burst go to bus health, never to the sink, and the data frames around them keep their order', async () => {
    const s = await startSource({ receiveBufferBytes: BIG_BUFFER });
    // One shell, so the error frames land between two bursts while the agent reads nothing.
    run(
      'sh',
      '-c',
      [
        `${CANGEN.join(' ')} ${IF} -g 0 -n 1000 -I 321 -L 8 -D i -p 10`,
        `cansend ${IF} 20000004#0020000000000000`, // controller: TX error-passive
        `cansend ${IF} 20000040#0000000000000000`, // bus-off
        `cansend ${IF} 20000100#0000000000000000`, // restarted
      ].join(' && '),
    );
    await waitFor(() => s.seen.count >= 1000 && s.source.health.counters.errorFrames >= 3, 'frames and error frames', 30_000);
    await s.stop();
    assert.equal(s.seen.count, 1000);
    assert.equal(s.seen.outOfOrder, 0, `lost or reordered: ${s.seen.firstOutOfOrder.join(', ')}`);
    const h = s.source.health;
    assert.deepEqual([h.counters.errorFrames, h.counters.errorPassive, h.counters.busOff, h.counters.restarted, h.state], [3, 1, 1, 1, 'error-active']);
  });

  it('[19.socketcan] the interface goes down with frames still queued: they are delivered, the endpoint reopens, frames after it arrive', async () => {
    const s = await startSource({ receiveBufferBytes: BIG_BUFFER });
    // While the loop is blocked: three frames queued, then the interface goes down and comes back up. The kernel reports
    // ENETDOWN before the queued frames; the agent reads on after it, then reopens.
    run('sh', '-c', `cansend ${IF} 111#00000000 && cansend ${IF} 111#01000000 && cansend ${IF} 111#02000000 && ip link set ${IF} down && ip link set ${IF} up`);
    await waitFor(() => s.source.opens === 2 && s.source.state === 'open', 'reopened', 10_000);
    run('cansend', IF, '111#03000000');
    await waitFor(() => s.seen.count >= 4, 'the frame after the reopen');
    await s.stop();
    assert.equal(s.seen.count, 4);
    assert.equal(s.seen.outOfOrder, 0, `lost or reordered: ${s.seen.firstOutOfOrder.join(', ')}`);
    assert.deepEqual(
      s.states.map((c) => c.state),
      ['open', 'down', 'open', 'closed'],
    );
    assert.match(s.states[1]!.reason ?? '', /ENETDOWN/);
  });

  it('[19.socketcan] a burst larger than a small receive buffer: the kernel drops are counted, and delivered + dropped = sent', async () => {
    const s = await startSource({ receiveBufferBytes: 4096 });
    const granted = s.source.receiveBufferBytes;
    assert.ok(granted >= 4096 && granted < 64 << 10, `receive buffer granted: ${granted}`);
    cangen(IF, '-g', '0', '-n', '2000', '-I', '222', '-L', '8', '-D', 'i', '-p', '10');
    // What fitted is read in one go; the kernel's count of what it dropped travels with the next frame it queues.
    await waitFor(() => s.seen.count > 0, 'the frames that fitted');
    const fitted = s.seen.count;
    await runAsync('cansend', IF, '7FF#FFFFFFFF');
    await waitFor(() => s.seen.ids.has(0x7ff), 'the marker frame');
    await s.stop();
    const dropped = s.source.health.kernelDrops;
    assert.ok(fitted > 0 && fitted < 2000, `${fitted} frames fitted the buffer`);
    assert.equal(fitted + dropped, 2000, `delivered ${fitted} + dropped ${dropped}`);
    assert.equal(s.seen.count, fitted + 1);
    // The frames that fitted are the first ones, in order (the marker's counter is not part of the sequence).
    assert.deepEqual([s.seen.outOfOrder, s.seen.firstOutOfOrder[0]], [1, `#${fitted}: ${0xffffffff}`]);
  });
});
