/**
 * The OBD-on-CAN client against simulated ECUs on a MemoryCanBus: discovery, values against the drive cycle, the
 * legacy single-PID fallback, multi-frame answers, DTCs, response pending, timeouts, and hostile traffic played by
 * the test itself.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exactFilter, MemoryCanBus } from '../../src/can/bus.js';
import { ObdCanClient, ObdRequestError, type EcuPidReadings } from '../../src/obd/can-client.js';
import { DEMO_VIN, SimulatedObdEcu } from '../../src/sim/obd-ecu.js';
import { hexBytes } from '../support/hex.js';
import { activeTimers, drivingCar, framesOn, singleFrame } from '../support/obd-sim.js';
import { seededRandom } from '../support/random.js';
import { delay } from '../support/wait.js';

const ENGINE_DTCS = { stored: ['P0133', 'C0035', 'B1234', 'U0100'], pending: ['P0420'], permanent: ['P0301'] };

/** An engine ECU (0x7E0/0x7E8) and a legacy transmission ECU (0x7E1/0x7E9) on one bus. */
function twoEcus() {
  const bus = new MemoryCanBus();
  const car = drivingCar();
  const engine = new SimulatedObdEcu(bus, { vehicle: car, dtcs: ENGINE_DTCS, calibrationIds: ['ENG-CAL-0042'] });
  const gearbox = new SimulatedObdEcu(bus, { vehicle: car, ecu: 1, legacy: true, pids: [0x05, 0x0d, 0x0f], vin: null, calibrationIds: ['TCU-0815'] });
  // 200 ms rather than the standard 50: the ECUs answer from this same event loop, which a busy machine can stall longer than 50 ms.
  const client = new ObdCanClient(bus, { p2Ms: 200 });
  const close = () => {
    client.close();
    engine.close();
    gearbox.close();
  };
  return { bus, car, engine, gearbox, client, close };
}

function readingsOf(result: EcuPidReadings[], ecu: number): Record<string, unknown> {
  const entry = result.find((r) => r.ecu === ecu);
  assert.ok(entry, `no entry for ECU ${ecu}`);
  return Object.fromEntries(entry.readings.map((r): [string, unknown] => [String(r.key), r.value]));
}

async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<ObdRequestError> {
  let caught: unknown;
  await promise.then(
    () => assert.fail(`expected an ObdRequestError ${code}`),
    (err: unknown) => {
      caught = err;
    },
  );
  assert.ok(caught instanceof ObdRequestError, `got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** The test plays an ECU: `respond` sees each request payload (functional or physical) and may inject frames. */
function playedEcu(bus: MemoryCanBus, respond: (payload: number[], id: number) => void) {
  const endpoint = bus.open({ filters: [exactFilter(0x7df), exactFilter(0x7e0)] });
  endpoint.onFrame((f) => {
    const d = [...f.data];
    if (d[0]! >> 4 === 0) respond(d.slice(1, 1 + d[0]!), f.id);
  });
  return endpoint;
}

describe('ObdCanClient', () => {
  it('discovers an engine ECU and a legacy ECU, walking each bitmap chain only as far as it goes', async () => {
    const { bus, client, engine, gearbox, close } = twoEcus();
    const ecus = await client.discover();
    assert.deepEqual(
      ecus.map((e) => [e.ecu, e.requestId, e.responseId, e.extended, e.singlePidOnly]),
      [
        [0, 0x7e0, 0x7e8, false, false],
        [1, 0x7e1, 0x7e9, false, false],
      ],
    );
    assert.deepEqual(
      ecus[0]!.supportedPids,
      [...engine.supportedPids].sort((a, b) => a - b),
    );
    assert.deepEqual(ecus[1]!.supportedPids, [0x05, 0x0d, 0x0f]);
    assert.ok(ecus[0]!.supportedPids.includes(0xa6), 'the odometer, five bitmaps down the chain');
    assert.deepEqual(
      framesOn(bus, 0x7df).map((f) => f.slice(0, 3)),
      [
        [2, 1, 0x00],
        [2, 1, 0x20],
        [2, 1, 0x40],
        [2, 1, 0x60],
        [2, 1, 0x80],
        [2, 1, 0xa0],
      ],
    );
    assert.equal(client.supportsPid(0, 0x0c), true);
    assert.equal(client.supportsPid(1, 0x0c), false);
    assert.equal(client.supportsPid(5, 0x0c), null);
    // Only the response identifiers reach the client: other traffic is filtered out by the endpoint.
    const before = client.counters.framesReceived;
    bus.inject(0x123, false, [1, 2, 3]);
    bus.inject(0x7e7, false, singleFrame([0x01, 0x0c]));
    await delay(10);
    assert.equal(client.counters.framesReceived, before);
    assert.equal(gearbox.counters.unanswered >= 5, true, 'the gearbox stayed silent to the bitmaps it lacks');
    close();
  });

  it('reads RPM and speed matching the drive cycle; after NRC 0x12 the legacy ECU is asked one PID per request', async () => {
    const { bus, car, client, close } = twoEcus();
    await client.discover();
    const from = bus.log.length;
    const result = await client.readPids([0x0c, 0x0d]);
    const s = car.state;
    const engine = readingsOf(result, 0);
    assert.ok(Math.abs((engine.rpm as number) - s.engineRpm) <= 0.125, `rpm ${String(engine.rpm)} vs ${s.engineRpm}`);
    assert.equal(engine.speed, Math.round(s.speedKph));
    assert.deepEqual(readingsOf(result, 1), { speed: Math.round(s.speedKph) });
    assert.deepEqual(
      result.map((r) => [r.ecu, r.missing, r.error]),
      [
        [0, [], undefined],
        [1, [], undefined],
      ],
    );

    // On the wire: the functional multi-PID request, the legacy ECU's NRC 0x12, then single-PID requests to it only.
    const log = bus.log.slice(from).map((f) => ({ id: f.id, data: [...f.data] }));
    assert.deepEqual(log[0], { id: 0x7df, data: singleFrame([0x01, 0x0c, 0x0d]) });
    const nrc = log.findIndex((f) => f.id === 0x7e9 && f.data.slice(0, 4).join() === hexBytes('03 7F 01 12').join());
    assert.ok(nrc > 0, 'the legacy ECU refused the multi-PID request');
    const after = log.slice(nrc + 1).filter((f) => f.id === 0x7e1);
    assert.deepEqual(after, [{ id: 0x7e1, data: singleFrame([0x01, 0x0d]) }], 'one single-PID request, for the PID it has');
    assert.equal(client.isSinglePidOnly(1), true);
    assert.equal(client.ecus[1]!.singlePidOnly, true);

    // It is remembered: the next read asks the legacy ECU one PID at a time straight away.
    const from2 = bus.log.length;
    const again = await client.readPids([0x05, 0x0d, 0x0c]);
    assert.deepEqual(Object.keys(readingsOf(again, 1)), ['coolantTemp', 'speed']);
    assert.deepEqual(Object.keys(readingsOf(again, 0)), ['coolantTemp', 'speed', 'rpm']);
    assert.deepEqual(framesOn(bus, 0x7e1, from2), [singleFrame([0x01, 0x05]), singleFrame([0x01, 0x0d])]);
    close();
  });

  it('packs at most 6 PIDs per request, physically addressed when asked for one ECU', async () => {
    const { bus, client, close } = twoEcus();
    await client.discover();
    const from = bus.log.length;
    const pids = [0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10, 0x11, 0x2f];
    const result = await client.readPids(pids, { ecu: 0 });
    assert.equal(result.length, 1);
    assert.deepEqual(
      result[0]!.readings.map((r) => r.pid),
      pids,
    );
    assert.deepEqual(
      framesOn(bus, 0x7e0, from).filter((f) => f[0]! >> 4 === 0),
      [[0x07, 0x01, 0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10], singleFrame([0x01, 0x11, 0x2f])],
    );
    assert.deepEqual(framesOn(bus, 0x7df, from), [], 'no functional request');
    await rejectsWith(client.readPids([]), 'invalid-request');
    await rejectsWith(client.readPids([0x100]), 'invalid-request');
    await rejectsWith(client.readPids([0x0c], { ecu: 9 }), 'invalid-request');
    close();
  });

  it('reads the VIN (multi-frame, flow control to the ECU) and the calibration IDs of each ECU', async () => {
    const { bus, client, close } = twoEcus();
    await client.discover();
    const from = bus.log.length;
    assert.deepEqual(await client.readVin(), [{ ecu: 0, ok: true, value: DEMO_VIN }]);
    assert.deepEqual(
      framesOn(bus, 0x7e8, from).map((f) => f[0]),
      [0x10, 0x21, 0x22],
    );
    assert.deepEqual(framesOn(bus, 0x7e0, from), [[0x30, 0x00, 0x00, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc]]);
    assert.deepEqual(await client.readCalibrationIds(), [
      { ecu: 0, ok: true, value: ['ENG-CAL-0042'] },
      { ecu: 1, ok: true, value: ['TCU-0815'] },
    ]);
    assert.deepEqual(await client.readVin({ ecu: 0 }), [{ ecu: 0, ok: true, value: DEMO_VIN }]);
    // Physically addressed, the gearbox says it has no VIN.
    const [refused] = await client.readVin({ ecu: 1 });
    assert.ok(refused && !refused.ok);
    assert.equal(refused.error.code, 'negative-response');
    assert.equal(refused.error.negative?.nrc, 0x31);
    close();
  });

  it('reads P, C, B and U codes; Mode 04 clears them only when called, and the stored list is empty after', async () => {
    const { bus, client, engine, close } = twoEcus();
    await client.discover();
    assert.deepEqual(await client.readDtcs(), [
      { ecu: 0, ok: true, value: ['P0133', 'C0035', 'B1234', 'U0100'] },
      { ecu: 1, ok: true, value: [] },
    ]);
    assert.deepEqual(await client.readDtcs(0x07, { ecu: 0 }), [{ ecu: 0, ok: true, value: ['P0420'] }]);
    assert.deepEqual(
      framesOn(bus, 0x7df).filter((f) => f[1] === 0x04),
      [],
      'nothing clears DTCs on its own',
    );
    assert.deepEqual(await client.clearDtcs(), [
      { ecu: 0, ok: true, value: true },
      { ecu: 1, ok: true, value: true },
    ]);
    assert.deepEqual(await client.readDtcs(), [
      { ecu: 0, ok: true, value: [] },
      { ecu: 1, ok: true, value: [] },
    ]);
    assert.deepEqual(await client.readDtcs(0x0a), [
      { ecu: 0, ok: true, value: ['P0301'] },
      { ecu: 1, ok: true, value: [] },
    ]);
    assert.deepEqual(engine.dtcs.stored, []);
    await rejectsWith(client.readDtcs(0x05 as 0x03), 'invalid-request');
    close();
  });

  it('waits through response-pending NRCs with P2*, and bounds how many it accepts', async () => {
    const car = drivingCar();
    /** A fresh bus per case: an ECU still busy with the previous request would answer late into the next one. */
    const slowEcu = (count: number, intervalMs: number) => {
      const bus = new MemoryCanBus();
      const ecu = new SimulatedObdEcu(bus, { vehicle: car, responsePending: { count, intervalMs, services: [0x01] } });
      return { bus, ecu };
    };

    const slow = slowEcu(3, 30);
    const patient = new ObdCanClient(slow.bus, { p2Ms: 20 });
    const start = performance.now();
    const result = await patient.readPids([0x0d], { ecu: 0 });
    assert.ok(performance.now() - start >= 80, 'the answer came long after P2');
    assert.deepEqual(readingsOf(result, 0), { speed: Math.round(car.state.speedKph) });
    assert.equal(framesOn(slow.bus, 0x7e8).filter((f) => f.slice(0, 4).join() === hexBytes('03 7F 01 78').join()).length, 3);
    patient.close();
    slow.ecu.close();

    const stubborn = slowEcu(4, 10);
    const strict = new ObdCanClient(stubborn.bus, { p2Ms: 20, maxResponsePending: 2 });
    const [bounded] = await strict.readPids([0x0d], { ecu: 0 });
    assert.equal(bounded!.error?.code, 'too-many-pending');
    assert.deepEqual(bounded!.missing, [0x0d]);
    strict.close();
    stubborn.ecu.close();

    // P2* runs out: the ECU asked for patience and then took longer than P2* to say anything more.
    const sluggish = slowEcu(1, 60);
    const hurried = new ObdCanClient(sluggish.bus, { p2Ms: 20, p2StarMs: 25 });
    const [late] = await hurried.readPids([0x0d], { ecu: 0 });
    assert.equal(late!.error?.code, 'timeout');
    assert.match(late!.error.message, /response-pending/);
    hurried.close();
    sluggish.ecu.close();
  });

  it('times out with a typed error when no ECU answers, on 11-bit and then 29-bit in auto mode', async () => {
    const timers = activeTimers();
    const bus = new MemoryCanBus();
    const client = new ObdCanClient(bus, { p2Ms: 30 });
    const start = performance.now();
    await rejectsWith(client.discover(), 'timeout', /no ECU answered 01 00/);
    assert.ok(performance.now() - start < 500);
    await rejectsWith(client.readPids([0x0c]), 'timeout', /no ECU answered/);
    const err = await rejectsWith(client.readPids([0x0c], { ecu: 2 }), 'timeout', /ECU 2 did not answer/);
    assert.equal(err.ecu, 2);
    await rejectsWith(client.readVin(), 'timeout');
    client.close();

    const auto = new ObdCanClient(bus, { addressing: 'auto', p2Ms: 30 });
    await rejectsWith(auto.readDtcs(), 'timeout', /11-bit, then 29-bit/);
    assert.equal(auto.addressingInUse, null);
    const functional = bus.log.filter((f) => f.id === 0x7df || f.id === 0x18db33f1).slice(-2);
    assert.deepEqual(
      functional.map((f) => [f.id, f.extended]),
      [
        [0x7df, false],
        [0x18db33f1, true],
      ],
    );
    auto.close();
    assert.ok(activeTimers() <= timers, 'no timer left behind');
  });

  it('finds a 29-bit ECU in auto mode and talks to it on 18DAxxF1 / 18DAF1xx', async () => {
    const bus = new MemoryCanBus();
    const car = drivingCar();
    const ecu = new SimulatedObdEcu(bus, { vehicle: car, addressing: '29-bit', ecu: 0x10 });
    const client = new ObdCanClient(bus, { addressing: 'auto', p2Ms: 30 });
    const [found] = await client.discover();
    assert.equal(client.addressingInUse, '29-bit');
    assert.deepEqual([found!.ecu, found!.requestId, found!.responseId, found!.extended], [0x10, 0x18da10f1, 0x18daf110, true]);
    assert.deepEqual(readingsOf(await client.readPids([0x0d]), 0x10), { speed: Math.round(car.state.speedKph) });
    const from = bus.log.length;
    assert.deepEqual(await client.readVin(), [{ ecu: 0x10, ok: true, value: DEMO_VIN }]);
    assert.equal(framesOn(bus, 0x18da10f1, from)[0]![0], 0x30, 'flow control to the ECU');
    client.close();
    ecu.close();
  });

  it('ignores garbage, truncated frames and answers to other requests, and reports a garbled answer as malformed', async () => {
    const bus = new MemoryCanBus();
    const client = new ObdCanClient(bus, { p2Ms: 40 });
    // Noise before any request: random frames on every response identifier.
    const random = seededRandom(7);
    for (let k = 0; k < 300; k++) {
      const data = Array.from({ length: Math.floor(random() * 9) }, () => Math.floor(random() * 256));
      bus.inject(0x7e8 + Math.floor(random() * 8), false, data);
    }
    await delay(20);
    assert.equal(client.counters.unsolicitedFrames, 300);
    assert.equal(client.counters.handlerErrors, 0);

    let answer: number[][] = [];
    const ecu = playedEcu(bus, () => answer.forEach((frame) => bus.inject(0x7e8, false, frame)));
    answer = [
      [0xf1, 0x02, 0x03], // reserved PCI type
      [0x05, 0x41, 0x0c], // single frame announcing more bytes than it has
      [0x03, 0x41, 0x0d, 0x32], // a (late) answer for another PID
      [0x03, 0x7f, 0x09, 0x31], // a refusal of another service
      [0x02, 0x7f, 0x01], // a cut-off negative response
      singleFrame(hexBytes('41 0C 0B B8')), // the real answer
    ];
    const result = await client.readPids([0x0c], { ecu: 0 });
    assert.deepEqual(readingsOf(result, 0), { rpm: 750 });
    assert.equal(client.counters.unexpectedMessages, 3);

    answer = [singleFrame(hexBytes('41 0C 0B'))];
    const [garbled] = await client.readPids([0x0c], { ecu: 0 });
    assert.equal(garbled!.error?.code, 'malformed');
    assert.deepEqual(garbled!.missing, [0x0c]);

    // A multi-frame answer that stops after the first frame: N_Cr ends it as a transport error, not a hang.
    answer = [[0x10, 0x14, 0x49, 0x02, 0x01, 0x57, 0x44, 0x58]];
    const [cut] = await client.readVin();
    assert.equal(cut!.ok, false);
    assert.equal(!cut!.ok && cut!.error.code, 'transport');
    assert.equal(client.counters.handlerErrors, 0);
    ecu.close();
    client.close();
  });

  it('survives an ECU that floods response-pending NRCs while another answers', async () => {
    const bus = new MemoryCanBus();
    const car = drivingCar();
    const engine = new SimulatedObdEcu(bus, { vehicle: car });
    const flooder = playedEcu(bus, (payload, id) => {
      if (id === 0x7df) for (let k = 0; k < 50; k++) bus.inject(0x7eb, false, singleFrame([0x7f, payload[0]!, 0x78]));
    });
    const client = new ObdCanClient(bus, { p2Ms: 30, maxResponsePending: 5 });
    const result = await client.readPids([0x0d]);
    assert.deepEqual(readingsOf(result, 0), { speed: Math.round(car.state.speedKph) });
    const flood = result.find((r) => r.ecu === 3);
    assert.equal(flood?.error?.code, 'too-many-pending');
    assert.ok(client.counters.unsolicitedFrames >= 40, 'the rest of the flood was dropped');
    flooder.close();
    engine.close();
    client.close();
  });

  it('keeps one request on the bus at a time: concurrent calls queue', async () => {
    const { bus, client, close } = twoEcus();
    await client.discover();
    const from = bus.log.length;
    const [pids, vin, dtcs] = await Promise.all([client.readPids([0x0c]), client.readVin(), client.readDtcs()]);
    assert.equal(readingsOf(pids, 0).rpm !== undefined, true);
    assert.equal(vin[0]!.ok, true);
    assert.equal(dtcs.length, 2);
    // Each request goes out only once the previous one has been answered.
    const order = bus.log.slice(from).map((f) => (f.id === 0x7df ? `req:${f.data[1]!.toString(16)}` : f.id >= 0x7e8 ? 'ans' : 'fc'));
    const requests = order.map((o, k) => [o, k] as const).filter(([o]) => o.startsWith('req'));
    assert.deepEqual(
      requests.map(([o]) => o),
      ['req:1', 'req:9', 'req:3'],
    );
    for (let k = 1; k < requests.length; k++) {
      assert.ok(order.slice(requests[k - 1]![1], requests[k]![1]).includes('ans'), `request ${k} waited for answers`);
    }
    close();
  });

  it('rejects functional requests longer than one frame, and requests after close or abort', async () => {
    const { client, close } = twoEcus();
    await client.discover();
    await rejectsWith(client.request(Uint8Array.of(0x01, 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0, 0xc0)), 'invalid-request', /one frame/);
    const raw = await client.request(Uint8Array.of(0x01, 0x0d), { ecu: 0 });
    assert.deepEqual(
      raw.map((a) => a.ok && [...a.value].slice(0, 2)),
      [[0x41, 0x0d]],
    );

    const controller = new AbortController();
    const aborted = client.readVin({ signal: controller.signal });
    controller.abort();
    await rejectsWith(aborted, 'aborted');

    const inFlight = client.readPids([0x0c]);
    const queued = client.readDtcs();
    close();
    await rejectsWith(inFlight, 'closed');
    await rejectsWith(queued, 'closed');
    await rejectsWith(client.discover(), 'closed');
  });
});
