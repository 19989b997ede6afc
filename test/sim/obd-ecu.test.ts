/**
 * The simulated J1979 ECU, seen from the wire: requests injected as raw frames on a MemoryCanBus (multi-frame answers
 * read back with an ISO-TP channel), answers checked byte by byte and against the drive cycle's state.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exactFilter, MemoryCanBus } from '../../src/can/bus.js';
import { IsoTpChannel } from '../../src/can/isotp.js';
import {
  decodePid,
  encodePid,
  encodeSupportedPids,
  parseCalibrationIdsResponse,
  parseDtcResponse,
  parseVinResponse,
  SUPPORTED_PID_BLOCKS,
  supportedPidsFromBitmap,
} from '../../src/obd/j1979.js';
import { DEMO_VIN, ENGINE_ECU_PIDS, SimulatedObdEcu, type SimulatedObdEcuOptions } from '../../src/sim/obd-ecu.js';
import { hexBytes } from '../support/hex.js';
import { activeTimers, drivingCar, framesOn, singleFrame } from '../support/obd-sim.js';
import { delay, waitFor } from '../support/wait.js';

function setup(options: Partial<SimulatedObdEcuOptions> = {}) {
  const bus = new MemoryCanBus();
  const car = drivingCar();
  const ecu = new SimulatedObdEcu(bus, { vehicle: car, ...options });
  /** Sends a single-frame request and returns the ECU's frames that follow (waiting `settleMs` for silence checks). */
  const ask = async (id: number, payload: number[], expectFrames = 1, settleMs = 0): Promise<number[][]> => {
    const from = bus.log.length;
    bus.inject(id, id > 0x7ff, singleFrame(payload));
    await waitFor(() => framesOn(bus, ecu.responseId, from).length >= expectFrames, `answer to ${payload.join(',')}`, 1000);
    if (settleMs > 0) await delay(settleMs);
    return framesOn(bus, ecu.responseId, from);
  };
  return { bus, car, ecu, ask };
}

/** Reads a whole (possibly multi-frame) answer through a tester-side ISO-TP channel. */
async function transact(bus: MemoryCanBus, ecu: SimulatedObdEcu, request: number[]): Promise<Uint8Array> {
  const extended = ecu.addressing === '29-bit';
  const tester = bus.open({ filters: [exactFilter(ecu.responseId, extended)] });
  const channel = new IsoTpChannel(tester, { txId: ecu.requestId, rxId: ecu.responseId, extended, padding: 0xcc });
  tester.onFrame((f) => channel.onFrame(f));
  try {
    const answer = new Promise<Uint8Array>((resolve) => channel.onMessage(resolve));
    await channel.send(Uint8Array.from(request));
    return await answer;
  } finally {
    channel.close();
    tester.close();
  }
}

describe('SimulatedObdEcu', () => {
  it('answers a functional multi-PID request with the drive cycle values, encoded by j1979', async () => {
    const { ecu, car, ask } = setup();
    const frames = await ask(0x7df, [0x01, 0x0d, 0x05]);
    const s = car.state;
    assert.deepEqual(frames, [singleFrame([0x41, 0x0d, ...encodePid(0x0d, s.speedKph), 0x05, ...encodePid(0x05, s.coolantTempC)])]);
    assert.equal(decodePid(0x0d, encodePid(0x0d, s.speedKph)), Math.round(s.speedKph));
    // Physically addressed, the same.
    assert.deepEqual(await ask(0x7e0, [0x01, 0x0d]), [singleFrame([0x41, 0x0d, ...encodePid(0x0d, s.speedKph)])]);
    // Other ECUs' physical identifiers are not for it.
    assert.deepEqual(await ask(0x7e1, [0x01, 0x0d], 0, 30), []);
    ecu.close();
  });

  it('reports values coherent with the car: rpm, speed, MAF from rpm and load, run time since the start it saw', async () => {
    const { bus, ecu, car } = setup();
    const first = await transact(bus, ecu, [0x01, 0x0c, 0x0d, 0x10, 0x1f, 0x2f, 0x46]);
    const s = car.state;
    let at = 1;
    const values: Record<number, number> = {};
    for (const [pid, n] of [
      [0x0c, 2],
      [0x0d, 1],
      [0x10, 2],
      [0x1f, 2],
      [0x2f, 1],
      [0x46, 1],
    ] as const) {
      assert.equal(first[at], pid);
      values[pid] = decodePid(pid, first.subarray(at + 1, at + 1 + n)) as number;
      at += 1 + n;
    }
    assert.ok(Math.abs(values[0x0c]! - s.engineRpm) <= 0.125, `rpm ${values[0x0c]} vs ${s.engineRpm}`);
    assert.equal(values[0x0d], Math.round(s.speedKph));
    const maf = (s.engineRpm / 120) * 1.6 * 1.2 * (s.engineLoadPct / 100);
    assert.ok(Math.abs(values[0x10]! - maf) <= 0.005 && maf > 3, `MAF ${values[0x10]} vs ${maf}`);
    assert.equal(values[0x1f], 0, 'the ECU saw the engine for the first time just now');
    assert.ok(Math.abs(values[0x2f]! - s.fuelLevelPct) <= 0.2);
    assert.equal(values[0x46], Math.round(s.ambientTempC));
    for (let k = 0; k < 500; k++) car.step(0.01);
    const later = await transact(bus, ecu, [0x01, 0x1f]);
    assert.deepEqual([...later], [0x41, 0x1f, 0x00, 0x05]);
    ecu.close();
  });

  it('reports supported-PID bitmaps that match its PIDs, chained block by block', async () => {
    const pids = [0x05, 0x0c, 0x0d, 0x2f, 0x5c, 0xa6];
    const { bus, ecu, ask } = setup({ pids });
    const reported = new Set<number>();
    for (const block of SUPPORTED_PID_BLOCKS) {
      const frames = await ask(0x7df, [0x01, block], block <= 0xa0 ? 1 : 0, block <= 0xa0 ? 0 : 30);
      if (block > 0xa0) {
        assert.deepEqual(frames, [], `no PID beyond A6, so no block ${block.toString(16)}`);
        continue;
      }
      assert.deepEqual(frames[0]!.slice(0, 3), [0x06, 0x41, block]);
      for (const pid of supportedPidsFromBitmap(block, frames[0]!.slice(3, 7))) reported.add(pid);
    }
    assert.deepEqual(
      [...reported].sort((a, b) => a - b),
      [...pids, 0x20, 0x40, 0x60, 0x80, 0xa0].sort((a, b) => a - b),
    );
    assert.deepEqual(
      [...ecu.supportedPids].sort((a, b) => a - b),
      [...reported].sort((a, b) => a - b),
    );
    // Several PIDs at once, bitmaps included, in request order.
    const mixed = await transact(bus, ecu, [0x01, 0x20, 0x0d]);
    assert.deepEqual([...mixed.subarray(0, 7)], [0x41, 0x20, ...encodeSupportedPids(0x20, ecu.supportedPids), 0x0d]);
    ecu.close();
  });

  it('stays silent to functional requests it cannot serve and refuses physical ones with the J1979 NRC', async () => {
    const { bus, ecu, ask } = setup();
    assert.deepEqual(await ask(0x7df, [0x01, 0x0a], 0, 30), [], 'unsupported PID, functional: silence');
    assert.deepEqual(await ask(0x7df, [0x22, 0xf1, 0x90], 0, 30), [], 'unsupported service, functional: silence');
    assert.deepEqual(await ask(0x7e0, [0x01, 0x0a]), [singleFrame(hexBytes('7F 01 31'))]);
    assert.deepEqual(await ask(0x7e0, [0x22, 0xf1, 0x90]), [singleFrame(hexBytes('7F 22 11'))]);
    assert.deepEqual(await ask(0x7e0, [0x09, 0x0a]), [singleFrame(hexBytes('7F 09 31'))]);
    assert.deepEqual(await ask(0x7e0, [0x03, 0x00]), [singleFrame(hexBytes('7F 03 13'))]);
    // Supported and unsupported together: only the supported one comes back.
    assert.deepEqual((await ask(0x7df, [0x01, 0x0a, 0x0d]))[0]!.slice(0, 3), [0x03, 0x41, 0x0d]);
    // A first frame on the functional identifier is not a request (functional requests are single frames).
    const from = bus.log.length;
    bus.inject(0x7df, false, [0x10, 0x08, 0x01, 0x0c, 0x0d, 0x05, 0x04, 0x11]);
    await delay(30);
    assert.deepEqual(framesOn(bus, 0x7e8, from), []);
    assert.equal(ecu.counters.negativeResponses, 4);
    ecu.close();
  });

  it('as a legacy ECU, answers NRC 0x12 to every multi-PID request and single PIDs normally', async () => {
    const { ecu, ask, car } = setup({ legacy: true, ecu: 1 });
    assert.equal(ecu.responseId, 0x7e9);
    assert.deepEqual(await ask(0x7df, [0x01, 0x0c, 0x0d]), [singleFrame(hexBytes('7F 01 12'))]);
    assert.deepEqual(await ask(0x7e1, [0x01, 0x0c, 0x0d]), [singleFrame(hexBytes('7F 01 12'))]);
    assert.deepEqual(await ask(0x7e1, [0x01, 0x0d]), [singleFrame([0x41, 0x0d, ...encodePid(0x0d, car.state.speedKph)])]);
    ecu.close();
  });

  it('reports DTCs with the CAN count byte; Mode 04 clears stored and pending ones, not permanent ones', async () => {
    const dtcs = { stored: ['P0133', 'C0035', 'B1234', 'U0100'], pending: ['P0420'], permanent: ['P0301'] };
    const { bus, ecu, ask } = setup({ dtcs });
    const stored = await transact(bus, ecu, [0x03]);
    assert.deepEqual([...stored], [...hexBytes('43 04 01 33 40 35 92 34 C1 00')]);
    assert.deepEqual(parseDtcResponse(0x03, stored, { countByte: true }), { kind: 'dtcs', service: 0x03, codes: dtcs.stored });
    assert.deepEqual(await ask(0x7df, [0x07]), [singleFrame(hexBytes('47 01 04 20'))]);
    assert.deepEqual(await ask(0x7df, [0x0a]), [singleFrame(hexBytes('4A 01 03 01'))]);
    assert.deepEqual(await ask(0x7df, [0x04]), [singleFrame(hexBytes('44'))]);
    assert.deepEqual(ecu.dtcs, { stored: [], pending: [], permanent: ['P0301'] });
    assert.deepEqual(await ask(0x7df, [0x03]), [singleFrame(hexBytes('43 00'))]);
    ecu.setStoredDtcs(['P0171']);
    assert.deepEqual(await ask(0x7df, [0x03]), [singleFrame(hexBytes('43 01 01 71'))]);
    ecu.close();
  });

  it('sends the VIN and calibration IDs as multi-frame answers, and its Mode 09 bitmap', async () => {
    const { bus, ecu, ask } = setup({ calibrationIds: ['ENG-CAL-0042', 'ABS0017'] });
    const from = bus.log.length;
    const vin = await transact(bus, ecu, [0x09, 0x02]);
    assert.equal(vin.length, 20);
    assert.equal(parseVinResponse(vin), DEMO_VIN);
    const wire = framesOn(bus, 0x7e8, from);
    assert.deepEqual(
      wire.map((f) => f[0]),
      [0x10, 0x21, 0x22],
      'FF then two CFs',
    );
    assert.deepEqual(framesOn(bus, 0x7e0, from).slice(1), [[0x30, 0x00, 0x00, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc]], 'the tester FC');
    assert.deepEqual(parseCalibrationIdsResponse(await transact(bus, ecu, [0x09, 0x04])), ['ENG-CAL-0042', 'ABS0017']);
    const bitmap = await ask(0x7df, [0x09, 0x00]);
    assert.deepEqual(supportedPidsFromBitmap(0x00, bitmap[0]!.slice(3, 7)), [0x02, 0x04]);
    ecu.close();
  });

  it('uses 29-bit identifiers: functional 18DB33F1, physical 18DAxxF1, answers on 18DAF1xx', async () => {
    const { bus, ecu, ask, car } = setup({ addressing: '29-bit' });
    assert.deepEqual([ecu.ecu, ecu.requestId, ecu.responseId, ecu.functionalId], [0x10, 0x18da10f1, 0x18daf110, 0x18db33f1]);
    assert.deepEqual(await ask(0x18db33f1, [0x01, 0x0d]), [singleFrame([0x41, 0x0d, ...encodePid(0x0d, car.state.speedKph)])]);
    assert.equal(bus.log.at(-1)!.extended, true);
    assert.equal(parseVinResponse(await transact(bus, ecu, [0x09, 0x02])), DEMO_VIN);
    // An 11-bit frame with the same low bits is another identifier altogether.
    assert.deepEqual(await ask(0x7df, [0x01, 0x0d], 0, 30), []);
    ecu.close();
  });

  it('sends response-pending NRCs before the answer when configured, and leaves no timer when closed', async () => {
    const { ask, ecu } = setup({ responsePending: { count: 2, intervalMs: 25, services: [0x01] } });
    const start = performance.now();
    const frames = await ask(0x7df, [0x01, 0x0d], 3);
    assert.ok(performance.now() - start >= 45, 'two pending periods passed');
    assert.deepEqual(frames.slice(0, 2), [singleFrame(hexBytes('7F 01 78')), singleFrame(hexBytes('7F 01 78'))]);
    assert.deepEqual(frames[2]!.slice(0, 3), [0x03, 0x41, 0x0d]);
    // Not for other services, and never for a request it will not answer.
    assert.deepEqual((await ask(0x7df, [0x03]))[0]!.slice(0, 2), [0x02, 0x43]);
    assert.deepEqual(await ask(0x7df, [0x01, 0x0a], 0, 30), []);
    const timers = activeTimers();
    await ask(0x7df, [0x01, 0x0c], 1);
    ecu.close();
    assert.ok(activeTimers() <= timers, 'closing cancels the pending wait');
  });

  it('rejects configurations it cannot simulate', () => {
    const bus = new MemoryCanBus();
    const car = drivingCar();
    assert.throws(() => new SimulatedObdEcu(bus, { vehicle: car, pids: [0x0c, 0x01] }), /PID 0x1 has no simulated source/);
    assert.throws(() => new SimulatedObdEcu(bus, { vehicle: car, vin: 'SHORT' }), /VIN/);
    assert.throws(() => new SimulatedObdEcu(bus, { vehicle: car, dtcs: { stored: ['X1234'] } }), /not a DTC/);
    assert.throws(() => new SimulatedObdEcu(bus, { vehicle: car, ecu: 8 }), /not 0-7/);
    assert.ok(ENGINE_ECU_PIDS.includes(0x0c) && ENGINE_ECU_PIDS.includes(0x5c));
  });
});
