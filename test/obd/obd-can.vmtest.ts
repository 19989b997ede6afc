/**
 * OBD-II over CAN on a real kernel: the agent's client reads a simulated engine ECU and a legacy ECU, each on its own
 * raw socket, through vcan (runs inside the VM). The same code is tested on the in-memory bus in can-client.test.ts;
 * here the frames, filters, loopback and timing are the kernel's.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SocketCanBus, type SocketCanEndpoint } from '../../src/can/socketcan.js';
import { ObdCanClient, type EcuPidReadings } from '../../src/obd/can-client.js';
import { PidPoller, type PidSample } from '../../src/obd/poller.js';
import { DEMO_VIN, SimulatedObdEcu } from '../../src/sim/obd-ecu.js';
import { drivingCar } from '../support/obd-sim.js';
import { Cleanup, run, setLink, withVcan } from '../support/vcan.js';
import { delay, waitFor } from '../support/wait.js';

const IF = 'vt-obd0';
const IF29 = 'vt-obd1';
const cleanup = new Cleanup();
/**
 * ISO 15765-4's P2 is 50 ms; an emulated CPU running ECU and tester in one process needs longer to answer a
 * functional request, and a loaded host stalls the emulated CPU for more than a second at times (300 ms and then
 * 1000 ms were missed with two CPU hogs beside the suite), so the tests give it 3000 ms: they are about what is read,
 * not how fast the VM answers. Production uses the default.
 */
const P2_MS = 3000;

function readings(result: EcuPidReadings[], ecu: number): Record<string, unknown> {
  const entry = result.find((r) => r.ecu === ecu);
  assert.ok(entry, `no answer from ECU ${ecu}`);
  return Object.fromEntries(entry.readings.map((r): [string, unknown] => [String(r.key), r.value]));
}

describe('OBD-II over CAN on a real kernel', { timeout: 90_000 }, () => {
  withVcan([IF, IF29], { cleanup });

  async function setUp(ifname: string, addressing: '11-bit' | '29-bit' = '11-bit') {
    // Keeps the endpoints the ECUs and the client open, to wait until each has its socket.
    const endpoints: SocketCanEndpoint[] = [];
    const bus = new (class extends SocketCanBus {
      override open(options?: Parameters<SocketCanBus['open']>[0]): SocketCanEndpoint {
        const endpoint = super.open(options);
        endpoints.push(endpoint);
        return endpoint;
      }
    })(ifname, { retry: { initialMs: 20, maxMs: 200 } });
    const car = drivingCar();
    const engine = new SimulatedObdEcu(bus, {
      vehicle: car,
      addressing,
      dtcs: { stored: ['P0133', 'C0035', 'B1234', 'U0100'], pending: ['P0420'] },
    });
    cleanup.add(() => engine.close());
    const gearbox = new SimulatedObdEcu(bus, {
      vehicle: car,
      addressing,
      ecu: addressing === '29-bit' ? 0x18 : 1,
      legacy: true,
      pids: [0x05, 0x0d],
      vin: null,
    });
    cleanup.add(() => gearbox.close());
    const client = new ObdCanClient(bus, { addressing, p2Ms: P2_MS });
    cleanup.add(() => client.close());
    await Promise.all(endpoints.map((e) => e.whenOpen()));
    return { car, engine, gearbox, client };
  }

  it('discovers both ECUs and reads supported PIDs, RPM, speed, VIN and DTCs from the simulated ECU', async () => {
    const { car, engine, client } = await setUp(IF);
    const ecus = await client.discover();
    assert.deepEqual(
      ecus.map((e) => [e.ecu, e.responseId]),
      [
        [0, 0x7e8],
        [1, 0x7e9],
      ],
    );
    assert.deepEqual(
      ecus[0]!.supportedPids,
      [...engine.supportedPids].sort((a, b) => a - b),
    );
    assert.deepEqual(ecus[1]!.supportedPids, [0x05, 0x0d]);

    const values = readings(await client.readPids([0x0c, 0x0d, 0x05], { ecu: 0 }), 0);
    assert.equal(values.rpm, Math.round(car.state.engineRpm * 4) / 4);
    assert.equal(values.speed, Math.round(car.state.speedKph));
    assert.equal(typeof values.coolantTemp, 'number');

    const vin = await client.readVin();
    assert.deepEqual(
      vin.filter((a) => a.ok).map((a) => [a.ecu, a.ok && a.value]),
      [[0, DEMO_VIN]],
    );
    const dtcs = await client.readDtcs(0x03);
    assert.deepEqual(
      dtcs.map((a) => [a.ecu, a.ok ? a.value : a.error.code]),
      [
        [0, ['P0133', 'C0035', 'B1234', 'U0100']],
        [1, []],
      ],
    );
    const pending = await client.readDtcs(0x07, { ecu: 0 });
    assert.deepEqual(pending[0]!.ok && pending[0]!.value, ['P0420']);
  });

  it('falls back to one PID per request when the legacy ECU answers NRC 0x12', async () => {
    const { client, gearbox } = await setUp(IF);
    await client.discover();
    const result = await client.readPids([0x05, 0x0d], { ecu: 1 });
    assert.deepEqual(Object.keys(readings(result, 1)).sort(), ['coolantTemp', 'speed']);
    assert.equal(client.isSinglePidOnly(1), true);
    assert.ok(gearbox.counters.negativeResponses >= 1, 'the ECU refused the multi-PID request first');
  });

  it('speaks 29-bit ISO 15765-4 (0x18DB33F1 / 0x18DAF1xx)', async () => {
    const { client } = await setUp(IF29, '29-bit');
    const ecus = await client.discover();
    assert.deepEqual(
      ecus.map((e) => [e.ecu, e.responseId.toString(16), e.extended]),
      [
        [0x10, '18daf110', true],
        [0x18, '18daf118', true],
      ],
    );
    const vin = await client.readVin({ ecu: 0x10 });
    assert.deepEqual(vin[0]!.ok && vin[0]!.value, DEMO_VIN);
  });

  it('the poller keeps sampling through bus-off and the interface going down and up', async () => {
    const { client } = await setUp(IF);
    const samples: PidSample[] = [];
    const errors: Error[] = [];
    const poller = new PidPoller(
      client,
      { pids: [{ pid: 'rpm', intervalMs: 100, ecu: 0 }] },
      { onSample: (s) => samples.push(s), onError: (e) => errors.push(e) },
    );
    const abort = new AbortController();
    const running = poller.run(abort.signal);
    cleanup.add(async () => {
      abort.abort();
      await running;
    });
    await waitFor(() => samples.length >= 3, '3 samples', 15_000);
    run('cansend', IF, '20000040#0000000000000000'); // a bus-off error frame
    const afterBusOff = samples.length;
    await waitFor(() => samples.length >= afterBusOff + 3, 'samples after bus-off', 15_000);
    setLink(IF, 'down');
    await delay(500);
    const whileDown = samples.length;
    setLink(IF, 'up');
    await waitFor(() => samples.length >= whileDown + 3, 'samples after the interface came back', 20_000);
    assert.ok(samples.every((s) => s.name === 'rpm' && s.ecu === 0 && typeof s.value === 'number'));
    assert.ok(errors.length >= 1, 'requests failed while the interface was down');
  });
});
