/**
 * The ELM327 driver against the project's ELM327 simulator, through a real pseudo-terminal pair (socat) and real
 * serial I/O (serialport) on both ends: initialisation, every answer shape, adapter errors, noise, slow and silent
 * adapters, and the adapter unplugged and plugged back in.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ObdRequestError } from '../../src/obd/can-client.js';
import { Elm327Client, Elm327Error, type Elm327State } from '../../src/obd/elm327.js';
import { OBD_SERVICE } from '../../src/obd/j1979.js';
import { PidPoller, type PidSample } from '../../src/obd/poller.js';
import { DEMO_VIN } from '../../src/sim/obd-ecu.js';
import { elmOnPty, fastClientOptions, recordedCar, type ElmRig } from '../support/elm327.js';
import { delay, waitFor } from '../support/wait.js';

const rigs: ElmRig[] = [];
const clients: Elm327Client[] = [];
after(async () => {
  for (const client of clients) client.close();
  for (const rig of rigs) await rig.close();
});

async function rig(options: Parameters<typeof elmOnPty>[0] = {}): Promise<ElmRig> {
  const made = await elmOnPty(options);
  rigs.push(made);
  return made;
}

function client(port: string, extra: Parameters<typeof fastClientOptions>[1] = {}): Elm327Client {
  const made = new Elm327Client(fastClientOptions(port, extra));
  clients.push(made);
  return made;
}

async function values(c: Elm327Client, pids: number[], ecu?: number): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const entry of await c.readPids(pids, ecu === undefined ? {} : { ecu })) for (const r of entry.readings) out[`${entry.ecu}:${r.key}`] = r.value;
  return out;
}

describe('ELM327 driver: initialisation', () => {
  it('initialises a v1.5 adapter on CAN 11/500: version, protocol, headers, response count, multi-PID, voltage', async () => {
    const r = await rig();
    const c = client(r.path);
    const info = await c.connect();
    assert.equal(info.version, '1.5');
    assert.equal(info.device, 'ELM327');
    assert.equal(info.baudRate, 38400, 'the first rate tried answers on a pty');
    assert.deepEqual(info.protocol, { number: 6, auto: true, description: 'ISO 15765-4 (CAN 11/500)', family: 'can11' });
    assert.equal(info.headers, true);
    assert.equal(info.responseCount, true);
    assert.equal(info.multiPid, true);
    assert.equal(typeof info.voltage, 'number');
    assert.equal(c.state, 'ready');
    assert.deepEqual(
      c.ecus.map((e) => [e.ecu, e.responseId]),
      [[0, 0x7e8]],
    );
    assert.ok(c.ecus[0]!.supportedPids.includes(0x0c) && c.ecus[0]!.supportedPids.includes(0x20));
    // The adapter was left as the driver needs it.
    const s = r.sim.settings;
    assert.deepEqual([s.echo, s.linefeeds, s.spaces, s.headers], [false, false, false, true]);
    assert.equal(s.protocolFound, 6);
  });

  it('reads live values, the VIN (multi-frame) and DTCs, and clears DTCs, all decoded by the J1979 module', async () => {
    const r = await rig();
    const c = client(r.path);
    await c.connect();
    assert.deepEqual(await values(c, [0x0c, 0x0d, 0x05]), { '0:rpm': 750, '0:speed': 50, '0:coolantTemp': 90 });
    assert.deepEqual(await c.readVin(), [{ ecu: 0, ok: true, value: DEMO_VIN }]);
    assert.deepEqual(await c.readDtcs(), [{ ecu: 0, ok: true, value: ['P0133', 'P0300'] }]);
    assert.deepEqual(await c.readDtcs(OBD_SERVICE.pendingDtcs), [{ ecu: 0, ok: true, value: [] }]);
    assert.deepEqual(await c.clearDtcs(), [{ ecu: 0, ok: true, value: true }]);
    assert.deepEqual(await c.readDtcs(), [{ ecu: 0, ok: true, value: [] }]);
    // 8 PIDs: a request of 6 and one of 2, with the count digit (the adapter needs to wait for nobody else).
    const many = await c.readPids([0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10, 0x11, 0x2f]);
    assert.equal(many[0]!.readings.length, 8);
    assert.deepEqual(many[0]!.missing, []);
  });

  it('tells ECUs apart by their headers: two ECUs, reading one of them', async () => {
    const car = recordedCar();
    const r = await rig({ ecus: [{ address: 0 }, { address: 2, pids: [0x05, 0x0c, 0x42], vin: null }], vehicle: car });
    const c = client(r.path);
    await c.connect();
    assert.deepEqual(
      c.ecus.map((e) => e.ecu),
      [0, 2],
    );
    assert.deepEqual(await values(c, [0x0c, 0x0d]), { '0:rpm': 750, '0:speed': 50, '2:rpm': 750 });
    assert.deepEqual(await values(c, [0x0c], 2), { '2:rpm': 750 });
    assert.deepEqual(
      (await c.readVin()).filter((a) => a.ok),
      [{ ecu: 0, ok: true, value: DEMO_VIN }],
    );
  });

  it('speaks 29-bit CAN (ECU 0x10 on 18DAF110)', async () => {
    const r = await rig({ protocol: 7 });
    const c = client(r.path);
    const info = await c.connect();
    assert.equal(info.protocol.description, 'ISO 15765-4 (CAN 29/500)');
    assert.deepEqual(
      c.ecus.map((e) => [e.ecu, e.responseId.toString(16)]),
      [[0x10, '18daf110']],
    );
    assert.deepEqual(await values(c, [0x0c, 0x0d]), { '16:rpm': 750, '16:speed': 50 });
    assert.deepEqual(await c.readVin(), [{ ecu: 0x10, ok: true, value: DEMO_VIN }]);
  });

  for (const protocol of [3, 4, 5] as const) {
    it(`speaks legacy protocol ${protocol}: BUS INIT, one PID per request, DTCs without a count, the VIN in five messages`, async () => {
      const r = await rig({ protocol, dtcs: { stored: ['P0133', 'P0300', 'C0123', 'U0100'] } });
      const c = client(r.path);
      const info = await c.connect();
      assert.equal(info.protocol.family, 'legacy');
      assert.equal(info.multiPid, false);
      assert.equal(info.responseCount, false);
      assert.deepEqual(
        c.ecus.map((e) => e.ecu),
        [0x10],
      );
      assert.deepEqual(await values(c, [0x0c, 0x0d, 0x05]), { '16:rpm': 750, '16:speed': 50, '16:coolantTemp': 90 });
      assert.deepEqual(await c.readVin(), [{ ecu: 0x10, ok: true, value: DEMO_VIN }]);
      assert.deepEqual(await c.readDtcs(), [{ ecu: 0x10, ok: true, value: ['P0133', 'P0300', 'C0123', 'U0100'] }]);
    });
  }

  it('copes with a "v2.1" clone lacking ATAT, ATDPN and more, that keeps echoing after ATE0', async () => {
    const r = await rig({ profile: 'clone-v2.1', stickyEcho: true });
    const c = client(r.path);
    const info = await c.connect();
    assert.equal(info.version, '2.1');
    // ATDPN answered `?`: the protocol came from ATDP.
    assert.equal(info.protocol.number, 6);
    assert.deepEqual(await values(c, [0x0c, 0x0d]), { '0:rpm': 750, '0:speed': 50 });
    assert.deepEqual(await c.readVin(), [{ ecu: 0, ok: true, value: DEMO_VIN }]);
  });

  it('falls back to one PID per request for an ECU that refuses multi-PID requests', async () => {
    const r = await rig({ ecus: [{ legacy: true }] });
    const c = client(r.path);
    const info = await c.connect();
    assert.equal(info.multiPid, false);
    assert.equal(c.isSinglePidOnly(), true);
    assert.deepEqual(await values(c, [0x0c, 0x0d, 0x05]), { '0:rpm': 750, '0:speed': 50, '0:coolantTemp': 90 });
  });

  it('does without the response-count digit on an adapter that refuses it', async () => {
    // An adapter that does not know the digit reads `01001` as a malformed request.
    const r = await rig({ unsupported: ['01001'] });
    const c = client(r.path);
    const info = await c.connect();
    assert.equal(info.responseCount, false);
    assert.deepEqual(await values(c, [0x0c]), { '0:rpm': 750 });
  });

  it('finds the baud rate by probing (the simulator understands only a host at 115200)', async () => {
    const r = await rig({ baudRate: 115200 });
    const c = client(r.path, { baudRates: [38400, 9600, 115200] });
    const info = await c.connect();
    assert.equal(info.baudRate, 115200);
    assert.deepEqual(await values(c, [0x0c]), { '0:rpm': 750 });
  });

  it('an adapter slower than the probe window is still found, and its late answer is not taken for the next command (ATZ)', async () => {
    // Every AT command answered after 350 ms: the probe's window (250 ms) passes before the answer to ATI comes.
    const r = await rig({ timing: { atMs: 350 } });
    const c = client(r.path, { baudRate: 38400 });
    const info = await c.connect();
    assert.equal(info.version, '1.5');
    assert.equal(info.headers, true);
    assert.equal(c.state, 'ready');
    assert.deepEqual(await values(c, [0x0c]), { '0:rpm': 750 });
  });

  it('fails clearly: no such port, a wrong fixed baud rate, the ignition off', async () => {
    const missing = client('/dev/serial/by-id/usb-nothing-here');
    await assert.rejects(missing.connect(), (err: Elm327Error) => err.code === 'no-port' && /no such serial port/.test(err.message));

    const r = await rig({ baudRate: 115200 });
    const wrong = client(r.path, { baudRate: 9600 });
    await assert.rejects(wrong.connect(), (err: Elm327Error) => err.code === 'no-adapter');
    assert.equal(wrong.state, 'idle');

    const off = await rig({ ignition: false });
    const c = client(off.path);
    await assert.rejects(c.connect(), (err: Elm327Error) => err.code === 'no-vehicle' && /UNABLE TO CONNECT/.test(err.message) && /ignition/.test(err.message));
    // Requests on an adapter that is not connected fail at once, with a code the poller understands.
    await assert.rejects(c.readPids([0x0c]), (err: ObdRequestError) => err.code === 'adapter');
  });

  it('fails clearly when the port carries something that is not an ELM327', async () => {
    const r = await rig({ baudRate: 57600 });
    const c = client(r.path, { baudRates: [38400, 9600] });
    await assert.rejects(c.connect(), (err: Elm327Error) => err.code === 'no-adapter' && /no ELM327 prompt .* at 38400, 9600 baud/.test(err.message));
  });
});

describe('ELM327 driver: adapter errors and a bad line', () => {
  it('turns each adapter error into a typed request error and carries on', async () => {
    const r = await rig();
    const c = client(r.path);
    await c.connect();
    const cases: [Parameters<typeof r.sim.failNext>[0], string][] = [
      ['can-error', 'bus'],
      ['bus-init-error', 'bus'],
      ['unable-to-connect', 'bus'],
      ['buffer-full', 'transport'],
      ['stopped', 'transport'],
      ['half-line', 'transport'],
      ['garbled', 'transport'],
    ];
    for (const [fault, code] of cases) {
      r.sim.failNext(fault);
      await assert.rejects(c.readPids([0x0c]), (err: ObdRequestError) => err.code === code, fault);
      assert.deepEqual(await values(c, [0x0c]), { '0:rpm': 750 }, `after ${fault}`);
    }
    r.sim.failNext('no-data');
    await assert.rejects(c.readPids([0x0c]), (err: ObdRequestError) => err.code === 'timeout');
    // A line of a multi-frame answer lost: the VIN is not made up from what is left.
    r.sim.failNext('dropped-line');
    await assert.rejects(c.readVin(), (err: ObdRequestError) => err.code === 'transport');
    assert.deepEqual(await c.readVin(), [{ ecu: 0, ok: true, value: DEMO_VIN }]);
    assert.equal(c.state, 'ready');
  });

  it('a garbled answer costs its own PIDs only: the rest of a long read still comes back', async () => {
    const r = await rig();
    const c = client(r.path);
    await c.connect();
    r.sim.failNext('garbled');
    // Seven PIDs: a request of six (garbled) and one of one.
    const [entry] = await c.readPids([0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10, 0x11]);
    assert.deepEqual(
      entry!.readings.map((x) => x.key),
      ['throttlePosition'],
    );
    assert.deepEqual(entry!.missing, [0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10]);
    assert.equal(entry!.error?.code, 'transport');
  });

  it('ignores line noise between answers', async () => {
    const r = await rig();
    const c = client(r.path);
    await c.connect();
    r.sim.sendGarbage();
    await delay(30);
    assert.deepEqual(await values(c, [0x0c]), { '0:rpm': 750 });
    assert.ok(c.counters.link.strayBytes >= 7, `stray bytes ${c.counters.link.strayBytes}`);
  });

  it('waits for a slow adapter, within the request timeout', async () => {
    const r = await rig();
    const c = client(r.path);
    await c.connect();
    r.sim.slowBy(300);
    assert.deepEqual(await values(c, [0x0c, 0x0d]), { '0:rpm': 750, '0:speed': 50 });
    r.sim.slowBy(0);
  });
});

describe('ELM327 driver: losing the adapter', () => {
  it('an adapter that stops answering is closed and reopened; requests meanwhile wait, then carry on', async () => {
    const r = await rig();
    const c = client(r.path);
    const states: Elm327State[] = [];
    c.onStateChange((s) => states.push(s));
    c.start();
    await waitFor(() => c.state === 'ready', 'ready', 5000);
    r.sim.setSilent(true);
    await assert.rejects(c.readPids([0x0c]), (err: ObdRequestError) => err.code === 'adapter');
    await assert.rejects(c.readPids([0x0c]), (err: ObdRequestError) => err.code === 'adapter');
    await waitFor(() => c.state !== 'ready', 'loss noticed', 2000);
    assert.match(c.error?.message ?? '', /stopped answering/);
    r.sim.setSilent(false);
    // The request waits for the reconnection instead of failing.
    assert.deepEqual(await values(c, [0x0c]), { '0:rpm': 750 });
    assert.equal(c.state, 'ready');
    assert.ok(c.counters.losses >= 1 && c.counters.connects >= 2, JSON.stringify(c.counters));
    assert.deepEqual(states.slice(0, 2), ['connecting', 'ready']);
    assert.ok(states.includes('waiting'), states.join(' '));
  });

  it('the adapter unplugged and plugged back in: noticed at once, reopened by path, re-initialised', async () => {
    const r = await rig();
    const c = client(r.path);
    c.start();
    await waitFor(() => c.state === 'ready', 'ready', 5000);
    const before = c.counters.connects;
    // Meanwhile the rest of the agent runs: a timer keeps ticking through the unplug.
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      await r.server.unplug();
      await waitFor(() => c.state !== 'ready', 'unplug noticed', 2000);
      assert.match(c.error?.message ?? '', /ttyELM/);
      await assert.rejects(c.readPids([0x0c], { signal: AbortSignal.timeout(300) }), (err: ObdRequestError) => err.code === 'aborted');
      const ticksWhileUnplugged = ticks;
      await delay(300);
      assert.ok(ticks > ticksWhileUnplugged + 10, 'the event loop kept running');
      await r.server.plug();
      await waitFor(() => c.state === 'ready', 'ready again', 5000);
      assert.ok(c.counters.connects > before);
      assert.deepEqual(await values(c, [0x0c, 0x0d]), { '0:rpm': 750, '0:speed': 50 });
    } finally {
      clearInterval(ticker);
    }
  });

  it('feeds the same PID poller as OBD over CAN, through an unplug', async () => {
    const r = await rig();
    const c = client(r.path);
    c.start();
    await waitFor(() => c.state === 'ready', 'ready', 5000);
    const samples: PidSample[] = [];
    const errors: Error[] = [];
    const poller = new PidPoller(
      c,
      {
        pids: [
          { pid: 'rpm', intervalMs: 50 },
          { pid: 'speed', intervalMs: 50 },
        ],
      },
      { onSample: (s) => samples.push(s), onError: (e) => errors.push(e) },
    );
    const stop = new AbortController();
    const running = poller.run(stop.signal);
    try {
      await waitFor(() => samples.length >= 10, 'samples', 3000);
      assert.deepEqual(new Set(samples.map((s) => `${s.name}=${JSON.stringify(s.value)}`)), new Set(['rpm=750', 'speed=50']));
      await r.server.unplug();
      await delay(200);
      await r.server.plug();
      const count = samples.length;
      await waitFor(() => samples.length >= count + 10, 'samples after the replug', 8000);
    } finally {
      stop.abort();
      await running;
    }
    assert.ok(
      errors.every((e) => e instanceof ObdRequestError),
      errors.map((e) => e.message).join('; '),
    );
  });
});
