/**
 * The SocketCAN addon's error paths on the host (native/can-rx, src/can/can-socket.ts): this host's kernel may have no
 * CAN at all, so what is checked here is that every failure is one clear error naming the interface and the errno,
 * that bad arguments are TypeErrors and never a crash, and that an endpoint turns a failed open into a state. The
 * receive path itself is tested on a real kernel in socketcan-rx.vmtest.ts.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { CanBusError } from '../../src/can/bus.js';
import { CanSocket, CanSocketError, type CanSocketOptions } from '../../src/can/can-socket.js';
import { createFrame } from '../../src/can/frame.js';
import { SocketCanEndpoint, type EndpointStateChange } from '../../src/can/socketcan.js';
import { waitFor } from '../support/wait.js';

const options: CanSocketOptions = { filters: null, errorMask: 0, timestamps: true, receiveBufferBytes: 1 << 20, coalesceMs: 5 };
const events = { sink: () => {}, onDrops: () => {}, onLost: () => {} };

/** The addon itself, as the build leaves it (dist/test/can -> native/can-rx). */
const addon = createRequire(import.meta.url)('../../../native/can-rx/build/Release/can_rx.node') as {
  slotBytes: number;
  open(...args: unknown[]): unknown;
  read(handle: unknown): number;
  close(handle: unknown): void;
};

describe('[19.socketcan] the SocketCAN addon: failures are clear errors', () => {
  it('[19.socketcan] opening a missing interface throws a CanSocketError naming the interface and the errno (ENODEV, or EAFNOSUPPORT without kernel CAN)', () => {
    assert.throws(
      () => new CanSocket('nosuchcan9', options, createFrame(), events),
      (e: unknown) => {
        assert.ok(e instanceof CanSocketError, String(e));
        assert.ok(e.code === 'ENODEV' || e.code === 'EAFNOSUPPORT', e.code);
        assert.match(e.message, /^nosuchcan9: (no such interface|cannot create a CAN socket): /);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      },
    );
  });

  it('[19.socketcan] a name longer than the kernel takes is ENODEV on any host, before any socket', () => {
    assert.throws(
      () => new CanSocket('can-name-far-too-long', options, createFrame(), events),
      (e: unknown) =>
        e instanceof CanSocketError && e.code === 'ENODEV' && /^can-name-far-too-long: interface name empty or longer than 15 bytes: /.test(e.message),
    );
  });

  it('[19.socketcan] bad arguments to the addon are TypeErrors, not crashes', () => {
    assert.equal(addon.slotBytes, 88);
    const typeError = (message: RegExp) => (e: unknown) => e instanceof TypeError && message.test(e.message);
    assert.throws(() => addon.open('can0'), typeError(/5 arguments/));
    assert.throws(() => addon.open('can0', {}, new Uint8Array(88), new Uint32Array(2), () => {}), typeError(/slots must be an ArrayBuffer/));
    assert.throws(() => addon.open('can0', {}, new ArrayBuffer(88), new Uint32Array(1), () => {}), typeError(/stats must be a Uint32Array/));
    assert.throws(() => addon.open('can0', { filters: [1, 2] }, new ArrayBuffer(88), new Uint32Array(2), () => {}), typeError(/filters must be a Uint32Array/));
    assert.throws(() => addon.open('can0', { rcvbuf: 'big' }, new ArrayBuffer(88), new Uint32Array(2), () => {}), typeError(/rcvbuf/));
    assert.throws(() => addon.open('can0', {}, new ArrayBuffer(88), new Uint32Array(2), 'not a function'), typeError(/onReadable must be a function/));
    assert.throws(() => addon.read({}), typeError(/not a socket handle/));
    assert.throws(() => addon.close(undefined), typeError(/not a socket handle/));
  });

  it('[19.socketcan] an endpoint on an interface that is up but no CAN device turns the failed open into a state with the reason, and keeps trying', async () => {
    const states: EndpointStateChange[] = [];
    const endpoint = new SocketCanEndpoint('lo', { retry: { initialMs: 10, maxMs: 20 }, onStateChange: (c) => states.push(c) });
    try {
      await waitFor(() => states.length > 0, 'a state change');
      assert.equal(states[0]!.state, 'down');
      // Without kernel CAN the socket cannot be made; with it, lo is no CAN device to bind to.
      assert.match(states[0]!.reason ?? '', /^lo: (cannot create a CAN socket: Address family not supported|cannot bind to the interface: No such device)/);
      assert.equal(endpoint.receiveBufferBytes, 0);
      assert.throws(
        () => endpoint.send(0x123, false, Uint8Array.of(1)),
        (e: unknown) => e instanceof CanBusError && e.code === 'down',
      );
    } finally {
      endpoint.close();
    }
    assert.deepEqual(
      states.map((c) => c.state),
      ['down', 'closed'],
    );
  });
});
