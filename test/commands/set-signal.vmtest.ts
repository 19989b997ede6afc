/**
 * setSignal through a real SocketCAN interface (runs inside the VM: scripts/vm/run-in-vm.sh): the frame the command
 * writes is received by another socket on the interface, as every other node of the bus would receive it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { cloneFrame, type CanFrame } from '../../src/can/frame.js';
import { SocketCanSource } from '../../src/can/socketcan.js';
import { createCommandContext } from '../../src/agent/command-context.js';
import { takeSnapshot } from '../../src/agent/snapshot.js';
import { CommandFailure, type CommandContext } from '../../src/commands/handler.js';
import { setSignal } from '../../src/commands/handlers/index.js';
import { parseDeviceConfig, type DeviceConfig } from '../../src/config/device-config.js';
import { BusDecoder } from '../../src/dbc/bus-decoder.js';
import { compileDatabase, loadDbcFile } from '../../src/dbc/index.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { repoRoot } from '../support/shared.js';
import { createVcan, deleteVcan, setLink } from '../support/vcan.js';
import { delay, waitFor } from '../support/wait.js';

const IF = 'vt-cmd0';

describe('setSignal on a real kernel', { timeout: 30_000 }, () => {
  const database = compileDatabase(loadDbcFile(DEMO_DBC_PATH, { strict: true }));
  let context: CommandContext;
  const frames: CanFrame[] = [];
  const stop = new AbortController();
  let running: Promise<void>;
  let peer: SocketCanSource;

  before(async () => {
    createVcan(IF);
    const loaded = parseDeviceConfig(
      { deviceId: 'vm-car', buses: [{ name: 'body', dbc: DEMO_DBC_PATH, source: { type: 'socketcan', interface: IF } }] },
      { file: 'inline', baseDir: repoRoot },
    );
    const config = { ...loaded, commands: { allowedSignals: [{ bus: 'body', message: 'BODY_STATUS', signal: 'TrunkOpen', min: 0, max: 1 }] } } as DeviceConfig;
    const buses = [new BusDecoder('body', database)];
    context = createCommandContext({
      config,
      buses,
      snapshot: () => takeSnapshot({ config, buses }),
      statusReport: () => {
        throw new Error('getStatus is not run in this test');
      },
      dataPath: undefined,
      setLogLevel: () => undefined,
      requestRestart: () => undefined,
    });
    // Another node on the bus: a socket of its own.
    peer = new SocketCanSource({ interface: IF, retry: { initialMs: 20, maxMs: 200 } });
    running = peer.run((f) => frames.push(cloneFrame(f)), stop.signal);
    await peer.whenOpen();
  });
  after(async () => {
    stop.abort();
    await running;
    deleteVcan(IF);
  });

  it('puts one DBC-encoded frame on the interface', async () => {
    const run = { id: 'vm-1', signal: new AbortController().signal, progress: () => undefined };
    const result = await setSignal.run({ bus: 'body', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 }, context, run);
    assert.deepEqual(result, { bus: 'body', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 1 });
    await waitFor(() => frames.length === 1, 'the frame at the peer', 2000);
    const frame = frames[0]!;
    assert.equal(frame.id, 0x2c0);
    assert.equal(frame.extended, false);
    assert.deepEqual(database.byName('BODY_STATUS')!.decode(frame.data), {
      IgnitionState: 0,
      DriverSeatbelt: 0,
      DoorOpenFL: 0,
      DoorOpenFR: 0,
      DoorOpenRL: 0,
      DoorOpenRR: 0,
      TrunkOpen: 1,
    });
  });

  it('fails with bus-unavailable while the interface is down, and sends again when it is back', async () => {
    const run = { id: 'vm-2', signal: new AbortController().signal, progress: () => undefined };
    const peerOpens = peer.opens;
    setLink(IF, 'down');
    await assert.rejects(
      setSignal.run({ bus: 'body', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 0 }, context, run),
      (err: unknown) => err instanceof CommandFailure && err.reason === 'bus-unavailable' && /vt-cmd0/.test(err.message),
    );
    setLink(IF, 'up');
    // The peer lost its socket with the interface: it must have a new one to see the frame.
    await waitFor(() => peer.opens > peerOpens && peer.state === 'open', 'the peer to reopen its socket', 5000);
    const before = frames.length;
    // The endpoint reopens its socket on its next retry after the link is up: until then the command still fails.
    const upAt = performance.now();
    for (;;) {
      try {
        await setSignal.run({ bus: 'body', message: 'BODY_STATUS', signal: 'TrunkOpen', value: 0 }, context, run);
        break;
      } catch (err) {
        if (!(err instanceof CommandFailure && err.reason === 'bus-unavailable') || performance.now() - upAt > 5000) throw err;
        await delay(50);
      }
    }
    await waitFor(() => frames.length === before + 1, 'the frame after the interface came back', 3000);
    assert.equal(database.byName('BODY_STATUS')!.decode(frames.at(-1)!.data).TrunkOpen, 0);
  });
});
