/**
 * The agent's userspace ISO-TP (src/can/isotp.ts over a raw SocketCAN endpoint) against the kernel's own can-isotp,
 * driven by can-utils' isotpsend and isotprecv, in both directions, with multi-frame payloads of 4,000 bytes and
 * more. Runs inside the VM.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { exactFilter } from '../../src/can/bus.js';
import { IsoTpChannel, type IsoTpOptions } from '../../src/can/isotp.js';
import { SocketCanBus } from '../../src/can/socketcan.js';
import { hexBytes, hexText } from '../support/hex.js';
import { background, Cleanup, waitUntilReading, withVcan } from '../support/vcan.js';

const IF = 'vt-isotp0';
const cleanup = new Cleanup();

/** An agent-side ISO-TP channel on its own raw socket, which only lets the channel's receive identifier in. */
async function agentChannel(options: IsoTpOptions) {
  const endpoint = new SocketCanBus(IF).open({ filters: [exactFilter(options.rxId, options.extended ?? false)] });
  cleanup.add(() => endpoint.close());
  await endpoint.whenOpen();
  const channel = new IsoTpChannel(endpoint, options);
  cleanup.add(() => channel.close());
  endpoint.onFrame((frame) => channel.onFrame(frame));
  const received = new Promise<Uint8Array>((resolve, reject) => {
    channel.onMessage(resolve);
    channel.onError(reject);
  });
  return { channel, received };
}

/** isotprecv in the background, already bound when this resolves. */
async function kernelReceiver(args: string[]) {
  const proc = background('isotprecv', [...args, IF]);
  cleanup.add(() => proc.child.kill());
  await waitUntilReading(proc.child);
  return { done: proc.done };
}

describe('userspace ISO-TP against the kernel can-isotp', { timeout: 60_000 }, () => {
  withVcan([IF], { cleanup });

  it('agent -> isotprecv: 4,000 bytes on 11-bit identifiers', async () => {
    const payload = randomBytes(4000);
    const got = await kernelReceiver(['-s', '7e8', '-d', '7e0']);
    const { channel } = await agentChannel({ txId: 0x7e0, rxId: 0x7e8 });
    await channel.send(payload);
    assert.deepEqual(Buffer.from(hexBytes(await got.done)), payload);
  });

  it('isotpsend -> agent: 4,000 bytes, the agent pacing the sender with block size 16', async () => {
    const payload = randomBytes(4000);
    const { received } = await agentChannel({ txId: 0x7e0, rxId: 0x7e8, blockSize: 16 });
    const send = background('isotpsend', ['-s', '7e8', '-d', '7e0', IF], hexText(payload));
    cleanup.add(() => send.child.kill());
    assert.deepEqual(Buffer.from(await received), payload);
    await send.done;
  });

  it('both directions on 29-bit identifiers with the largest classic message, 4,095 bytes', async () => {
    const out = randomBytes(4095);
    const got = await kernelReceiver(['-s', '18DAF110', '-d', '18DA10F1']);
    const { channel, received } = await agentChannel({ txId: 0x18da10f1, rxId: 0x18daf110, extended: true, blockSize: 8 });
    await channel.send(out);
    assert.deepEqual(Buffer.from(hexBytes(await got.done)), out);

    const back = randomBytes(4095);
    const send = background('isotpsend', ['-s', '18DAF110', '-d', '18DA10F1', IF], hexText(back));
    cleanup.add(() => send.child.kill());
    assert.deepEqual(Buffer.from(await received), back);
  });

  it('CAN FD (64-byte frames) in both directions, 4,000 bytes', async () => {
    const out = randomBytes(4000);
    const got = await kernelReceiver(['-s', '7e8', '-d', '7e0', '-L', '72:64:0']);
    const { channel, received } = await agentChannel({ txId: 0x7e0, rxId: 0x7e8, fd: true, blockSize: 8 });
    await channel.send(out);
    assert.deepEqual(Buffer.from(hexBytes(await got.done)), out);

    const back = randomBytes(4000);
    const send = background('isotpsend', ['-s', '7e8', '-d', '7e0', '-L', '72:64:0', IF], hexText(back));
    cleanup.add(() => send.child.kill());
    assert.deepEqual(Buffer.from(await received), back);
  });

  it("honours the kernel receiver's block size and STmin (4 frames per block, 2 ms apart)", async () => {
    const payload = randomBytes(1000); // FF + 142 CFs
    const got = await kernelReceiver(['-s', '7e8', '-d', '7e0', '-b', '4', '-m', '2']);
    const { channel } = await agentChannel({ txId: 0x7e0, rxId: 0x7e8 });
    const t0 = performance.now();
    await channel.send(payload);
    const elapsed = performance.now() - t0;
    assert.deepEqual(Buffer.from(hexBytes(await got.done)), payload);
    // 142 CFs at least 2 ms apart: a lower bound only (emulated CPUs are slow, never fast).
    assert.ok(elapsed >= 141 * 2, `sent in ${elapsed.toFixed(0)} ms, faster than STmin allows`);
  });

  it('a single frame each way, padded to 8 bytes as OBD-II ECUs expect', async () => {
    // -P a: the kernel checks every padding byte is the -p byte and drops the frame otherwise.
    const got = await kernelReceiver(['-s', '7e8', '-d', '7e0', '-p', ':CC', '-P', 'a']);
    const { channel, received } = await agentChannel({ txId: 0x7e0, rxId: 0x7e8, padding: 0xcc });
    await channel.send(Uint8Array.of(0x01, 0x0c));
    assert.equal((await got.done).trim().toLowerCase(), '01 0c');
    const send = background('isotpsend', ['-s', '7e8', '-d', '7e0', '-p', 'AA:', IF], '41 0C 1A F8');
    cleanup.add(() => send.child.kill());
    assert.deepEqual([...(await received)], [0x41, 0x0c, 0x1a, 0xf8]);
  });
});
