/**
 * J1979 decoding: the answers recorded from an ELM327 in the shared testdata README, hand-computed cases for each
 * formula and bitfield, and a fuzz loop that feeds random bytes to every parser.
 *
 * Reproduce a fuzz failure with its seed: OBD_FUZZ_SEED=<seed> node --test dist/test/obd/j1979.test.js
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  buildClearDtcsRequest,
  buildFreezeFrameRequest,
  buildMode01Requests,
  buildRequest,
  decodePid,
  dtcFromBytes,
  dtcToBytes,
  encodePid,
  encodeSupportedPids,
  isPidEncodable,
  MODE01_PIDS,
  MODE01_PIDS_BY_KEY,
  mergeSupportedPids,
  nextSupportedPidBlock,
  ObdDecodeError,
  ObdNegativeResponse,
  parseCalibrationIdsResponse,
  parseCvnResponse,
  parseDtcResponse,
  parseMode01Response,
  parseMode02Response,
  parseNegativeResponse,
  parseVinResponse,
  supportedPidsFromBitmap,
} from '../../src/obd/j1979.js';
import { readRecordedAnswers } from '../support/elm327-recording.js';
import { hexBytes } from '../support/hex.js';
import { mode01Values, positive } from '../support/j1979-values.js';
import { seededRandom, type SeededRandom } from '../support/random.js';
import { NO_SHARED_TESTDATA, sharedTestdata } from '../support/shared.js';

const README = sharedTestdata('obd', 'README.md');
const HAVE_README = existsSync(README);

function close(actual: unknown, expected: number, message?: string): void {
  assert.equal(typeof actual, 'number', message);
  assert.ok(Math.abs((actual as number) - expected) < 1e-9, `${message ?? ''} ${String(actual)} != ${expected}`);
}

function throwsDecodeError(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof ObdDecodeError && (pattern === undefined || pattern.test(e.message)));
}

// ---------------------------------------------------------------------------------------------------------------
// The recorded answers

/**
 * One ECU message out of an ELM327 answer: without headers, a single line or the `014` / `0: …` multi-frame form;
 * with headers (ATH1, CAN), the ISO-TP frames after the CAN ID, reassembled here by their PCI byte.
 */
function elmMessage(answer: string, headers: boolean): Uint8Array {
  const lines = answer
    .split('\r')
    .map((l) => l.trim())
    .filter((l) => l !== '' && l !== '>' && !l.startsWith('SEARCHING'));
  if (headers) {
    let length = 0;
    const data: number[] = [];
    for (const line of lines) {
      const frame = hexBytes(line.slice(line.indexOf(' ') + 1));
      const pci = frame[0]! >> 4;
      if (pci === 0) {
        length = frame[0]! & 0x0f;
        data.push(...frame.slice(1));
      } else if (pci === 1) {
        length = ((frame[0]! & 0x0f) << 8) | frame[1]!;
        data.push(...frame.slice(2));
      } else {
        assert.equal(pci, 2, `unexpected PCI in ${line}`);
        data.push(...frame.slice(1));
      }
    }
    return Uint8Array.from(data.slice(0, length));
  }
  if (/^[0-9A-F]{3}$/.test(lines[0]!)) {
    const length = parseInt(lines[0]!, 16);
    const data = lines.slice(1).flatMap((l) => [...hexBytes(l.replace(/^[0-9A-F]:\s*/, ''))]);
    return Uint8Array.from(data.slice(0, length));
  }
  assert.equal(lines.length, 1, `expected one line in ${JSON.stringify(answer)}`);
  return hexBytes(lines[0]!);
}

describe('recorded ELM327 answers (shared testdata README)', { skip: HAVE_README ? false : NO_SHARED_TESTDATA }, () => {
  const answers = HAVE_README ? readRecordedAnswers() : new Map<string, string>();
  const message = (command: string, headers = false): Uint8Array => {
    const answer = answers.get(command);
    assert.ok(answer !== undefined, `the README no longer records ${command}`);
    return elmMessage(answer, headers);
  };

  it('0100: supported PIDs 01-20 and the hint to ask for 21-40', () => {
    const bytes = message('0100');
    assert.deepEqual(bytes, hexBytes('41 00 BE 3F A8 13'));
    // BE = 1011 1110, 3F = 0011 1111, A8 = 1010 1000, 13 = 0001 0011, bit 7 of BE is PID 01.
    const expected = [0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x13, 0x15, 0x1c, 0x1f, 0x20];
    assert.deepEqual(mode01Values(bytes), { pidsSupported00: expected });
    assert.equal(nextSupportedPidBlock(0x00, bytes.slice(2)), 0x20);
  });

  it('010C / 010D / 0105: rpm, speed, coolant temperature', () => {
    assert.deepEqual(mode01Values(message('010C')), { rpm: 750 });
    assert.deepEqual(mode01Values(message('010D')), { speed: 50 });
    assert.deepEqual(mode01Values(message('0105')), { coolantTemp: 90 });
  });

  it('010C with headers (ATH1) and without spaces (ATS0) decode the same', () => {
    assert.deepEqual(mode01Values(message('ATH1 010C', true)), { rpm: 750 });
    assert.deepEqual(mode01Values(message('ATS0 010C')), { rpm: 750 });
  });

  it('0902: the VIN from the CAN multi-frame answer, with and without headers', () => {
    const bytes = message('0902');
    assert.equal(bytes.length, 0x14);
    assert.equal(parseVinResponse(bytes), 'WP0ZZZ99ZTS390000');
    assert.equal(parseVinResponse(message('ATH1 0902', true)), 'MAT403096BNL00000');
  });

  it('03 / 07: stored and pending DTCs with the CAN count byte', () => {
    assert.deepEqual(parseDtcResponse(0x03, message('03'), { countByte: true }), {
      kind: 'dtcs',
      service: 0x03,
      codes: ['P0133', 'P0300'],
    });
    assert.deepEqual(positive(parseDtcResponse(0x07, message('07'), { countByte: true })).codes, []);
  });

  it('every Mode 01 PID of the formula table is in our table, with the same data length', () => {
    const text = readFileSync(README, 'utf8');
    let checked = 0;
    for (const line of text.split('\n')) {
      const cells = line.split('|').map((c) => c.trim());
      if (cells.length < 5 || !/^01[0-9A-F]{2}/.test(cells[1]!)) continue;
      const bytes = Number(cells[3]);
      const pids: number[] = [];
      // "0106–0109" is a range, "0121 / 0131" a list, "0100/20/40…" the supported-PIDs family (checked elsewhere).
      const range = /^01([0-9A-F]{2})\s*[–-]\s*01([0-9A-F]{2})$/.exec(cells[1]!);
      if (range) for (let p = parseInt(range[1]!, 16); p <= parseInt(range[2]!, 16); p++) pids.push(p);
      else for (const m of cells[1]!.matchAll(/\b01([0-9A-F]{2})\b/g)) pids.push(parseInt(m[1]!, 16));
      for (const pid of pids) {
        const def = MODE01_PIDS.get(pid);
        assert.ok(def, `PID 0x${pid.toString(16)} (${cells[2]}) missing from the table`);
        assert.equal(def.bytes, bytes, `data length of PID 0x${pid.toString(16)}`);
        checked++;
      }
    }
    assert.ok(checked >= 20, `only ${checked} PIDs found in the README table`);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Hand-computed cases

describe('Mode 01 formulas', () => {
  it('decodes the everyday PIDs', () => {
    assert.deepEqual(mode01Values(hexBytes('41 0C 1A F8')), { rpm: 1726 }); // (26·256 + 248) / 4
    assert.deepEqual(mode01Values(hexBytes('41 0D 32')), { speed: 50 });
    assert.deepEqual(mode01Values(hexBytes('41 05 7B')), { coolantTemp: 83 });
    assert.deepEqual(mode01Values(hexBytes('41 0F 00')), { intakeAirTemp: -40 });
    assert.deepEqual(mode01Values(hexBytes('41 0C FF FF')), { rpm: 16383.75 });
    assert.deepEqual(mode01Values(hexBytes('41 04 FF')), { engineLoad: 100 });
    close(mode01Values(hexBytes('41 04 80')).engineLoad, 12800 / 255);
    close(mode01Values(hexBytes('41 11 33')).throttlePosition, 20); // 51·100/255
    assert.deepEqual(mode01Values(hexBytes('41 06 80 07 00 08 FF')), {
      shortTermFuelTrimBank1: 0,
      longTermFuelTrimBank1: -100,
      shortTermFuelTrimBank2: 99.21875,
    });
    assert.deepEqual(mode01Values(hexBytes('41 0A 64')), { fuelPressure: 300 });
    assert.deepEqual(mode01Values(hexBytes('41 0E 00')), { timingAdvance: -64 });
    assert.deepEqual(mode01Values(hexBytes('41 0E 94')), { timingAdvance: 10 });
    assert.deepEqual(mode01Values(hexBytes('41 10 01 F4')), { maf: 5 });
    assert.deepEqual(mode01Values(hexBytes('41 1F 0E 10')), { runTimeSinceStart: 3600 });
    assert.deepEqual(mode01Values(hexBytes('41 21 00 2A')), { distanceWithMil: 42 });
    assert.deepEqual(mode01Values(hexBytes('41 33 65')), { barometricPressure: 101 });
    assert.deepEqual(mode01Values(hexBytes('41 42 35 DC')), { controlModuleVoltage: 13.788 });
    assert.deepEqual(mode01Values(hexBytes('41 44 80 00')), { commandedEquivalenceRatio: 1 });
    assert.deepEqual(mode01Values(hexBytes('41 4D 00 3C 4E 01 00')), { timeWithMil: 60, timeSinceCodesCleared: 256 });
    assert.deepEqual(mode01Values(hexBytes('41 5C 82')), { oilTemp: 90 });
    assert.deepEqual(mode01Values(hexBytes('41 5E 00 64')), { fuelRate: 5 });
    assert.deepEqual(mode01Values(hexBytes('41 62 E1 63 01 F4')), { actualEngineTorque: 100, engineReferenceTorque: 500 });
    assert.deepEqual(mode01Values(hexBytes('41 A6 00 01 E2 40')), { odometer: 12345.6 }); // 0x01E240 = 123456
    assert.deepEqual(mode01Values(hexBytes('41 3C 11 94')), { catalystTempBank1Sensor1: 410 }); // 4500/10 - 40
  });

  it('reads the evaporative vapour pressure as a signed value', () => {
    assert.deepEqual(mode01Values(hexBytes('41 32 FF FC')), { evapVaporPressure: -1 });
    assert.deepEqual(mode01Values(hexBytes('41 32 00 64')), { evapVaporPressure: 25 });
  });

  it('decodes the bitfield and enumerated PIDs', () => {
    // A = 0x83: MIL on, 3 DTCs. B = 0x07: spark, misfire/fuel/components present and complete.
    // C = 0x65: catalyst, evap, O2 sensor, O2 heater present. D = 0x04: evap not complete yet.
    assert.deepEqual(mode01Values(hexBytes('41 01 83 07 65 04')).monitorStatus, {
      milOn: true,
      dtcCount: 3,
      ignition: 'spark',
      readiness: {
        misfire: 'complete',
        fuelSystem: 'complete',
        components: 'complete',
        catalyst: 'complete',
        evaporativeSystem: 'incomplete',
        oxygenSensor: 'complete',
        oxygenSensorHeater: 'complete',
      },
    });
    // Diesel: B = 0x1D (bit 3 compression, misfire and components present, misfire incomplete), C = 0xC1, D = 0x40.
    assert.deepEqual(mode01Values(hexBytes('41 01 00 1D C1 40')).monitorStatus, {
      milOn: false,
      dtcCount: 0,
      ignition: 'compression',
      readiness: {
        misfire: 'incomplete',
        components: 'complete',
        nmhcCatalyst: 'complete',
        pmFilter: 'incomplete',
        egrVvtSystem: 'complete',
      },
    });
    assert.deepEqual(mode01Values(hexBytes('41 03 02 00')).fuelSystemStatus, { system1: 'closedLoop', system2: null });
    assert.deepEqual(mode01Values(hexBytes('41 03 04 01')).fuelSystemStatus, {
      system1: 'openLoopEngineLoadOrDecel',
      system2: 'openLoopInsufficientTemperature',
    });
    assert.deepEqual(mode01Values(hexBytes('41 12 01')), { secondaryAirStatus: 'upstream' });
    assert.deepEqual(mode01Values(hexBytes('41 13 13')), { o2SensorsPresent: { bank1: [1, 2], bank2: [1] } });
    assert.deepEqual(mode01Values(hexBytes('41 1C 06')), { obdStandard: 'EOBD' });
    assert.deepEqual(mode01Values(hexBytes('41 1C 01')), { obdStandard: 'OBD-II (CARB)' });
    assert.deepEqual(mode01Values(hexBytes('41 1C FE')), { obdStandard: 'unknown(0xFE)' });
    assert.deepEqual(mode01Values(hexBytes('41 51 01')), { fuelType: 'gasoline' });
    assert.deepEqual(mode01Values(hexBytes('41 51 04')), { fuelType: 'diesel' });
    assert.deepEqual(mode01Values(hexBytes('41 14 5A 80')), { o2Sensor1: { voltage: 0.45, shortTermFuelTrim: 0 } });
    assert.deepEqual(mode01Values(hexBytes('41 15 5A FF')), { o2Sensor2: { voltage: 0.45, shortTermFuelTrim: null } });
    assert.deepEqual(mode01Values(hexBytes('41 02 01 33')), { freezeFrameDtc: 'P0133' });
  });

  it('splits a multi-PID response and keeps the order', () => {
    const response = positive(parseMode01Response(hexBytes('41 0C 1A F8 0D 32 05 7B 2F 80 46 41 5C 82')));
    assert.deepEqual(
      response.readings.map((r) => [r.key, r.unit]),
      [
        ['rpm', 'rpm'],
        ['speed', 'km/h'],
        ['coolantTemp', '°C'],
        ['fuelLevel', '%'],
        ['ambientAirTemp', '°C'],
        ['oilTemp', '°C'],
      ],
    );
    assert.deepEqual(response.readings[1]!.data, Uint8Array.of(0x32));
    assert.equal(response.readings[4]!.value, 25);
  });

  it('keeps an unknown PID raw when it is alone, and refuses to guess inside a multi-PID response', () => {
    const response = positive(parseMode01Response(hexBytes('41 FF 01 02')));
    assert.deepEqual(response.readings, [{ pid: 0xff, key: null, unit: '', data: Uint8Array.of(1, 2), value: null }]);
    throwsDecodeError(() => parseMode01Response(hexBytes('41 0D 32 FF 01')), /cannot be split/);
  });

  it('rejects short and foreign messages', () => {
    throwsDecodeError(() => parseMode01Response([]), /empty/);
    throwsDecodeError(() => parseMode01Response(hexBytes('41')), /too short/);
    throwsDecodeError(() => parseMode01Response(hexBytes('41 0C 1A')), /rpm.*needs 2 data bytes, got 1/);
    throwsDecodeError(() => parseMode01Response(hexBytes('41 0C 1A F8 0D')), /speed/);
    throwsDecodeError(() => parseMode01Response(hexBytes('49 02 01')), /expected a response to service 0x01/);
    throwsDecodeError(() => parseMode01Response([0x41, 0x0d, 300]), /not a byte/);
    throwsDecodeError(() => decodePid(0x0c, [0x1a]), /needs 2 data bytes/);
    throwsDecodeError(() => decodePid(0xfe, [0]), /not in the J1979 table/);
    assert.equal(decodePid(0x0d, Buffer.from([0x32])), 50);
  });

  it('the table has a unique key per PID and every key the agent publishes', () => {
    assert.equal(MODE01_PIDS_BY_KEY.size, MODE01_PIDS.size);
    for (const key of [
      'rpm',
      'speed',
      'coolantTemp',
      'engineLoad',
      'throttlePosition',
      'intakeAirTemp',
      'maf',
      'fuelLevel',
      'timingAdvance',
      'fuelPressure',
      'intakeManifoldPressure',
      'runTimeSinceStart',
      'distanceWithMil',
      'controlModuleVoltage',
      'ambientAirTemp',
      'oilTemp',
      'fuelRate',
      'shortTermFuelTrimBank1',
      'longTermFuelTrimBank2',
      'o2Sensor1',
      'barometricPressure',
      'absoluteLoad',
      'commandedEquivalenceRatio',
      'relativeThrottle',
      'acceleratorPedalD',
      'acceleratorPedalE',
      'commandedThrottleActuator',
      'timeWithMil',
      'timeSinceCodesCleared',
      'fuelType',
      'ethanolPercent',
      'engineReferenceTorque',
      'actualEngineTorque',
      'odometer',
      'monitorStatus',
      'fuelSystemStatus',
      'obdStandard',
      'evapVaporPressure',
      'distanceSinceCodesCleared',
    ]) {
      assert.ok(MODE01_PIDS_BY_KEY.has(key), key);
    }
    assert.equal(MODE01_PIDS_BY_KEY.get('odometer')!.pid, 0xa6);
    for (const def of MODE01_PIDS.values()) {
      assert.match(def.key, /^[a-z][A-Za-z0-9]*$/, `key of PID 0x${def.pid.toString(16)}`);
      assert.ok(def.bytes >= 1 && def.bytes <= 5);
    }
  });
});

describe('Mode 02 freeze frames', () => {
  it('decodes with the Mode 01 table and keeps the frame number', () => {
    const response = positive(parseMode02Response(hexBytes('42 0C 00 1A F8 02 00 01 33')));
    assert.deepEqual(
      response.readings.map((r) => [r.key, r.frame, r.value]),
      [
        ['rpm', 0, 1726],
        ['freezeFrameDtc', 0, 'P0133'],
      ],
    );
    throwsDecodeError(() => parseMode02Response(hexBytes('42 0C')), /too short/);
    throwsDecodeError(() => parseMode02Response(hexBytes('42 0C 00 1A')), /needs 2 data bytes/);
  });
});

describe('supported-PID bitmaps', () => {
  it('decodes each block and knows when to go on', () => {
    assert.deepEqual(supportedPidsFromBitmap(0x20, hexBytes('80 00 00 01')), [0x21, 0x40]);
    assert.equal(nextSupportedPidBlock(0x20, hexBytes('80 00 00 01')), 0x40);
    assert.equal(nextSupportedPidBlock(0x40, hexBytes('FF FF FF FE')), null);
    assert.deepEqual(supportedPidsFromBitmap(0xa0, hexBytes('04 00 00 00')), [0xa6]);
    // There is no block after E0 and no PID 0x100.
    assert.deepEqual(supportedPidsFromBitmap(0xe0, hexBytes('00 00 00 03')), [0xff]);
    assert.equal(nextSupportedPidBlock(0xe0, hexBytes('00 00 00 01')), null);
    throwsDecodeError(() => supportedPidsFromBitmap(0x10, hexBytes('00 00 00 00')), /not a supported-PIDs PID/);
    throwsDecodeError(() => supportedPidsFromBitmap(0x00, hexBytes('00 00 00')), /4 bytes/);
  });

  it('merges the lists of several ECUs', () => {
    const engine = supportedPidsFromBitmap(0x00, hexBytes('BE 3F A8 13'));
    const transmission = supportedPidsFromBitmap(0x00, hexBytes('80 18 00 01'));
    assert.deepEqual(
      mergeSupportedPids([engine, transmission, [0xa6]]),
      [0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x13, 0x15, 0x1c, 0x1f, 0x20, 0xa6],
    );
  });
});

describe('requests', () => {
  it('builds Mode 01 requests of at most 6 PIDs', () => {
    assert.deepEqual(buildRequest(0x01, [0x0c, 0x0d]), Uint8Array.of(0x01, 0x0c, 0x0d));
    throwsDecodeError(() => buildRequest(0x01, [1, 2, 3, 4, 5, 6, 7]), /1 to 6 PIDs/);
    throwsDecodeError(() => buildRequest(0x01, []), /1 to 6 PIDs/);
    throwsDecodeError(() => buildRequest(0x01, [0x100]), /not a byte/);
    const pids = Array.from({ length: 13 }, (_, k) => k + 1);
    assert.deepEqual(
      buildMode01Requests(pids).map((r) => [...r]),
      [
        [1, 1, 2, 3, 4, 5, 6],
        [1, 7, 8, 9, 10, 11, 12],
        [1, 13],
      ],
    );
  });

  it('builds the other services', () => {
    assert.deepEqual(buildRequest(0x03), Uint8Array.of(0x03));
    assert.deepEqual(buildRequest(0x07), Uint8Array.of(0x07));
    assert.deepEqual(buildRequest(0x0a), Uint8Array.of(0x0a));
    assert.deepEqual(buildClearDtcsRequest(), Uint8Array.of(0x04));
    assert.deepEqual(buildRequest(0x09, [0x02]), Uint8Array.of(0x09, 0x02));
    assert.deepEqual(buildFreezeFrameRequest([0x0c, 0x02]), Uint8Array.of(0x02, 0x0c, 0x00, 0x02, 0x00));
    throwsDecodeError(() => buildRequest(0x03, [0x01]), /takes no PIDs/);
    throwsDecodeError(() => buildRequest(0x09, [0x02, 0x04]), /exactly one/);
    throwsDecodeError(() => buildRequest(0x02, [0x0c]), /buildFreezeFrameRequest/);
    throwsDecodeError(() => buildRequest(0x22, [0xf1]), /not an OBD-II service/);
    throwsDecodeError(() => buildFreezeFrameRequest([1, 2, 3, 4]), /1 to 3 PIDs/);
  });
});

describe('negative responses', () => {
  it('are returned typed, with NRC names', () => {
    const rejected = parseMode01Response(hexBytes('7F 01 12'));
    assert.ok(rejected instanceof ObdNegativeResponse);
    assert.equal(rejected.service, 0x01);
    assert.equal(rejected.nrcName, 'subFunctionNotSupported');
    assert.equal(rejected.isUnsupportedRequest, true);
    assert.equal(rejected.isPending, false);

    const pending = parseNegativeResponse(hexBytes('7F 09 78'));
    assert.ok(pending);
    assert.equal(pending.nrcName, 'responsePending');
    assert.equal(pending.isPending, true);

    const names = (['10', '11', '22', '31', '21', '99'] as const).map((nrc) => new ObdNegativeResponse(1, parseInt(nrc, 16)).nrcName);
    assert.deepEqual(names, ['generalReject', 'serviceNotSupported', 'conditionsNotCorrect', 'requestOutOfRange', 'busyRepeatRequest', 'unknown(0x99)']);

    const vin = parseVinResponse(hexBytes('7F 09 31'));
    assert.ok(vin instanceof ObdNegativeResponse && vin.nrcName === 'requestOutOfRange');
    const dtcs = parseDtcResponse(0x0a, hexBytes('7F 0A 11'), { countByte: true });
    assert.ok(dtcs instanceof ObdNegativeResponse && dtcs.nrcName === 'serviceNotSupported');
    assert.equal(parseNegativeResponse(hexBytes('41 0D 32')), null);
  });

  it('rejects malformed ones and ones for another service', () => {
    throwsDecodeError(() => parseMode01Response(hexBytes('7F 01')), /3 bytes/);
    throwsDecodeError(() => parseMode01Response(hexBytes('7F 03 22')), /service 0x03, not 0x01/);
  });
});

describe('DTCs', () => {
  it('decodes the two bytes of a DTC', () => {
    assert.equal(dtcFromBytes(0x01, 0x33), 'P0133');
    assert.equal(dtcFromBytes(0x03, 0x00), 'P0300');
    assert.equal(dtcFromBytes(0xc0, 0x35), 'U0035'); // 11 -> U, 00 -> 0, then 0 3 5
    assert.equal(dtcFromBytes(0xc1, 0x23), 'U0123');
    assert.equal(dtcFromBytes(0xc1, 0x00), 'U0100');
    assert.equal(dtcFromBytes(0x40, 0x35), 'C0035');
    assert.equal(dtcFromBytes(0x92, 0x34), 'B1234'); // 10 -> B, 01 -> 1, then 2 3 4
    assert.equal(dtcFromBytes(0x3a, 0xbc), 'P3ABC');
  });

  it('encodes every DTC back to its bytes', () => {
    for (let raw = 1; raw <= 0xffff; raw++) {
      const [a, b] = dtcToBytes(dtcFromBytes(raw >> 8, raw & 0xff));
      assert.equal((a << 8) | b, raw);
    }
    throwsDecodeError(() => dtcToBytes('P4000'), /not a DTC/);
  });

  it('reads CAN responses with their count byte', () => {
    assert.deepEqual(positive(parseDtcResponse(0x03, hexBytes('43 02 01 33 03 00'), { countByte: true })).codes, ['P0133', 'P0300']);
    assert.deepEqual(positive(parseDtcResponse(0x03, hexBytes('43 00'), { countByte: true })).codes, []);
    assert.deepEqual(positive(parseDtcResponse(0x0a, hexBytes('4A 01 C1 00'), { countByte: true })), {
      kind: 'dtcs',
      service: 0x0a,
      codes: ['U0100'],
    });
    throwsDecodeError(() => parseDtcResponse(0x03, hexBytes('43 03 01 33 03 00'), { countByte: true }), /announces 3/);
    throwsDecodeError(() => parseDtcResponse(0x03, hexBytes('43 01 01 33 03 00'), { countByte: true }), /more DTCs/);
    throwsDecodeError(() => parseDtcResponse(0x03, hexBytes('43 01 01'), { countByte: true }), /odd length/);
    throwsDecodeError(() => parseDtcResponse(0x03, hexBytes('43'), { countByte: true }), /too short/);
  });

  it('reads legacy responses, skipping the 00 00 padding', () => {
    assert.deepEqual(positive(parseDtcResponse(0x03, hexBytes('43 01 33 03 00 00 00'), { countByte: false })).codes, ['P0133', 'P0300']);
    assert.deepEqual(positive(parseDtcResponse(0x07, hexBytes('47 00 00 00 00 00 00'), { countByte: false })).codes, []);
    assert.deepEqual(positive(parseDtcResponse(0x07, hexBytes('47'), { countByte: false })).codes, []);
    throwsDecodeError(() => parseDtcResponse(0x03, hexBytes('43 00'), { countByte: false }), /odd length/);
    throwsDecodeError(() => parseDtcResponse(0x03, hexBytes('47 00'), { countByte: true }), /service 0x03/);
  });
});

describe('Mode 09 vehicle information', () => {
  const vin = 'WP0ZZZ99ZTS390000';
  const ascii = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

  it('reads the VIN with the CAN count byte, without it, and with NUL padding', () => {
    assert.equal(parseVinResponse([0x49, 0x02, 0x01, ...ascii(vin)]), vin);
    assert.equal(parseVinResponse([0x49, 0x02, ...ascii(vin)]), vin);
    assert.equal(parseVinResponse([0x49, 0x02, 0x01, 0x00, 0x00, 0x00, ...ascii(vin)]), vin);
    assert.equal(parseVinResponse([0x49, 0x02, 0x01, ...ascii(vin), 0x00, 0x00]), vin);
    throwsDecodeError(() => parseVinResponse([0x49, 0x02, 0x01, ...ascii(vin.slice(1))]), /17 characters, got 16/);
    throwsDecodeError(() => parseVinResponse([0x49, 0x02, 0x01, ...ascii(vin.slice(1)), 0x07]), /non-alphanumeric/);
    throwsDecodeError(() => parseVinResponse([0x49, 0x04, 0x01, ...ascii(vin)]), /info type 0x02/);
  });

  it('reads calibration IDs as 16-byte chunks without their NUL padding', () => {
    const padded = (s: string): number[] => [...ascii(s), ...new Array<number>(16 - s.length).fill(0)];
    assert.deepEqual(parseCalibrationIdsResponse([0x49, 0x04, 0x01, ...padded('JMB*36761500')]), ['JMB*36761500']);
    assert.deepEqual(parseCalibrationIdsResponse([0x49, 0x04, 0x02, ...padded('0261S12345'), ...padded('1037512345678901')]), [
      '0261S12345',
      '1037512345678901',
    ]);
    assert.deepEqual(parseCalibrationIdsResponse([0x49, 0x04, ...padded('ABC')]), ['ABC']);
    throwsDecodeError(() => parseCalibrationIdsResponse([0x49, 0x04, 0x02, ...padded('ABC')]), /announces 2 items/);
    throwsDecodeError(() => parseCalibrationIdsResponse([0x49, 0x04, 0x01, 0x41, 0x42]), /16-byte items/);
  });

  it('reads CVNs as hex strings', () => {
    assert.deepEqual(parseCvnResponse(hexBytes('49 06 01 A1 B2 C3 D4')), ['A1B2C3D4']);
    assert.deepEqual(parseCvnResponse(hexBytes('49 06 02 00 00 12 34 DE AD BE EF')), ['00001234', 'DEADBEEF']);
    throwsDecodeError(() => parseCvnResponse(hexBytes('49 06 01 A1 B2')), /4-byte items/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Fuzzing

/** No NaN or infinity anywhere in a decoded value. */
function assertFinite(value: unknown, where: string): void {
  if (typeof value === 'number') assert.ok(Number.isFinite(value), `${where}: ${value}`);
  else if (value instanceof Uint8Array) return;
  else if (Array.isArray(value)) value.forEach((v) => assertFinite(v, where));
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) assertFinite(v, where);
}

/** A random message that one of the parsers accepts. */
function wellFormed(random: SeededRandom, byte: () => number, pids: readonly number[]): number[] {
  const dtcs = Array.from({ length: Math.floor(random() * 4) }, () => [byte() | 1, byte()]).flat();
  const alnum = '0123456789ABCDEFGHJKLMNPRSTUVWXYZ';
  switch (Math.floor(random() * 6)) {
    case 0:
    case 1: {
      const service = random() < 0.5 ? 0x41 : 0x42;
      const out = [service];
      for (let n = 1 + Math.floor(random() * 3); n > 0; n--) {
        const pid = random.pick(pids);
        out.push(pid);
        if (service === 0x42) out.push(byte() & 1);
        for (let b = MODE01_PIDS.get(pid)!.bytes; b > 0; b--) out.push(byte());
      }
      return out;
    }
    case 2:
      return [random.pick([0x43, 0x47, 0x4a]), dtcs.length / 2, ...dtcs];
    case 3:
      return [random.pick([0x43, 0x47, 0x4a]), ...dtcs];
    case 4:
      return [0x49, 0x02, 0x01, ...Array.from({ length: 17 }, () => alnum.charCodeAt(byte() % alnum.length))];
    default:
      return [0x49, 0x06, 2, ...Array.from({ length: 8 }, byte)];
  }
}

describe('encoding (the simulator side)', () => {
  it('encodes the everyday PIDs to the bytes a real ECU sends', () => {
    assert.deepEqual([...encodePid(0x0c, 750)], [0x0b, 0xb8]);
    assert.deepEqual([...encodePid(0x0d, 50)], [50]);
    assert.deepEqual([...encodePid(0x05, 90)], [130]);
    assert.deepEqual([...encodePid(0x10, 2.5)], [0x00, 0xfa]);
    assert.deepEqual([...encodePid(0x2f, 100)], [0xff]);
    assert.deepEqual([...encodePid(0x0e, -64)], [0x00]);
    assert.deepEqual([...encodePid(0xa6, 123456.7)], [0x00, 0x12, 0xd6, 0x87]);
  });

  it('rounds to the nearest step and saturates at the ends of the range', () => {
    assert.deepEqual([...encodePid(0x0c, 1234.6)], [0x13, 0x4a]); // 4938.4 -> 4938 = 1234.5 rpm
    assert.deepEqual([...encodePid(0x0d, 300)], [0xff]);
    assert.deepEqual([...encodePid(0x05, -60)], [0x00]);
    assert.deepEqual([...encodePid(0x11, -3)], [0x00]);
  });

  it("encodes two's complement PIDs as signed", () => {
    assert.deepEqual([...encodePid(0x32, -1.25)], [0xff, 0xfb]);
    assert.deepEqual([...encodePid(0x54, -32768)], [0x80, 0x00]);
    assert.deepEqual([...encodePid(0x54, 40000)], [0x7f, 0xff]);
    assert.equal(decodePid(0x32, encodePid(0x32, -100)), -100);
  });

  it("is the inverse of the table's decoder for every scalar PID", () => {
    let checked = 0;
    for (const def of MODE01_PIDS.values()) {
      if (!isPidEncodable(def.pid)) continue;
      checked++;
      const span = 2 ** (8 * def.bytes);
      // Every raw value of 1-byte PIDs, a spread of them for the wider ones.
      const step = def.bytes === 1 ? 1 : Math.floor(span / 4099);
      for (let raw = 0; raw < span; raw += step) {
        const bytes = new Uint8Array(def.bytes);
        for (let k = def.bytes - 1, r = raw; k >= 0; k--, r = Math.floor(r / 256)) bytes[k] = r % 256;
        assert.deepEqual([...encodePid(def.pid, decodePid(def.pid, bytes) as number)], [...bytes], `${def.key} raw ${raw}`);
      }
    }
    assert.ok(checked >= 50, `only ${checked} PIDs encodable`);
    for (const pid of [0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10, 0x11, 0x1f, 0x2f, 0x33, 0x42, 0x46, 0x5c, 0x5e, 0xa6]) {
      assert.ok(isPidEncodable(pid), `PID ${pid.toString(16)} must be encodable`);
    }
  });

  it('refuses bitfields, enumerations, bitmaps, reserved-byte PIDs and non-numbers', () => {
    for (const pid of [0x00, 0x01, 0x03, 0x12, 0x13, 0x1c, 0x1e, 0x14, 0x24, 0x50, 0x51, 0x64, 0x20]) {
      assert.equal(isPidEncodable(pid), false, `PID ${pid.toString(16)}`);
      throwsDecodeError(() => encodePid(pid, 1), /not a single scaled number/);
    }
    throwsDecodeError(() => encodePid(0xff, 1), /not in the J1979 table/);
    throwsDecodeError(() => encodePid(0x0c, Number.NaN), /not a finite number/);
    throwsDecodeError(() => encodePid(0x0c, '750' as unknown as number), /not a finite number/);
  });

  it('encodes supported-PID bitmaps as the inverse of their decoder', () => {
    const recorded = [0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x13, 0x15, 0x1c, 0x1f, 0x20];
    assert.deepEqual([...encodeSupportedPids(0x00, recorded)], [...hexBytes('BE 3F A8 13')]);
    // PIDs of other blocks are left out, so an ECU passes its whole list.
    assert.deepEqual([...encodeSupportedPids(0x40, [0x0c, 0x41, 0x46, 0x5c, 0x60, 0xa6])], [...hexBytes('84 00 00 11')]);
    assert.deepEqual(supportedPidsFromBitmap(0x40, encodeSupportedPids(0x40, [0x41, 0x46, 0x5c, 0x60])), [0x41, 0x46, 0x5c, 0x60]);
    throwsDecodeError(() => encodeSupportedPids(0x10, [0x11]));
  });
});

describe('fuzzing', () => {
  const SEED = Number(process.env.OBD_FUZZ_SEED ?? 0x0b2d1979);
  const CASES = 10_000;
  const SERVICE_BYTES = [0x41, 0x42, 0x43, 0x47, 0x4a, 0x49, 0x7f];
  const KNOWN_PIDS = [...MODE01_PIDS.keys()];

  const parsers: [string, (b: number[]) => unknown][] = [
    ['parseMode01Response', parseMode01Response],
    ['parseMode02Response', parseMode02Response],
    ['parseDtcResponse 03 CAN', (b) => parseDtcResponse(0x03, b, { countByte: true })],
    ['parseDtcResponse 07 legacy', (b) => parseDtcResponse(0x07, b, { countByte: false })],
    ['parseDtcResponse 0A CAN', (b) => parseDtcResponse(0x0a, b, { countByte: true })],
    ['parseVinResponse', parseVinResponse],
    ['parseCalibrationIdsResponse', parseCalibrationIdsResponse],
    ['parseCvnResponse', parseCvnResponse],
    ['parseNegativeResponse', parseNegativeResponse],
    ['supportedPidsFromBitmap', (b) => supportedPidsFromBitmap(0x00, b)],
    ['nextSupportedPidBlock', (b) => nextSupportedPidBlock(0x20, b)],
    ['decodePid', (b) => decodePid(b[0] ?? 0, b.slice(1))],
  ];

  it(`${CASES} random messages through every parser: a value, a negative response or an ObdDecodeError (seed ${SEED})`, () => {
    const random = seededRandom(SEED);
    const byte = (): number => Math.floor(random() * 256);
    const outcomes = new Map<string, { ok: number; rejected: number }>(parsers.map(([name]) => [name, { ok: 0, rejected: 0 }]));
    for (let k = 0; k < CASES; k++) {
      let bytes: number[];
      if (random() < 0.5) {
        // Noise with plausible headers and PIDs, so the inputs get past the first check.
        const length = Math.floor(random() * 24);
        bytes = Array.from({ length }, byte);
        if (length > 0 && random() < 0.8) bytes[0] = SERVICE_BYTES[Math.floor(random() * SERVICE_BYTES.length)]!;
        if (length > 1 && random() < 0.6) bytes[1] = bytes[0] === 0x49 ? [0x02, 0x04, 0x06][k % 3]! : KNOWN_PIDS[byte() % KNOWN_PIDS.length]!;
      } else {
        // A well-formed message, then at most one mutation, so the success paths and their edges are reached too.
        bytes = wellFormed(random, byte, KNOWN_PIDS);
        const mutation = Math.floor(random() * 4);
        if (mutation === 1) bytes.pop();
        else if (mutation === 2) bytes.push(byte());
        else if (mutation === 3 && bytes.length > 0) bytes[Math.floor(random() * bytes.length)] = byte();
      }
      for (const [name, parse] of parsers) {
        const outcome = outcomes.get(name)!;
        try {
          assertFinite(parse(bytes), `${name} case ${k}`);
          outcome.ok++;
        } catch (e) {
          if (!(e instanceof ObdDecodeError)) {
            assert.fail(`${name} threw ${String(e)} for case ${k} [${bytes.map((b) => b.toString(16)).join(' ')}] (seed ${SEED})`);
          }
          outcome.rejected++;
        }
      }
    }
    // The biased generator must reach the success paths of the main parsers, or the loop proves little.
    for (const name of ['parseMode01Response', 'parseMode02Response', 'parseDtcResponse 03 CAN', 'parseDtcResponse 07 legacy', 'decodePid']) {
      assert.ok(outcomes.get(name)!.ok > 20, `${name} accepted only ${outcomes.get(name)!.ok} cases`);
    }
  });

  it('every table entry decodes every value of each data byte to finite values', () => {
    for (const def of MODE01_PIDS.values()) {
      for (let v = 0; v <= 0xff; v++) {
        for (let at = 0; at < def.bytes; at++) {
          const data = new Uint8Array(def.bytes).fill(0x5a);
          data[at] = v;
          assertFinite(decodePid(def.pid, data), def.key);
        }
      }
    }
  });

  it('rejects inputs that are not byte arrays with an ObdDecodeError', () => {
    const garbage: unknown[] = [null, undefined, 'abc', 42, {}, [0x41, -1], [0x41, 1.5], [0x41, Number.NaN], [0x41, '0C']];
    // decodePid's fuzz wrapper slices its input, so it gets its own call here.
    const targets: [string, (b: number[]) => unknown][] = [...parsers.filter(([name]) => name !== 'decodePid'), ['decodePid', (b) => decodePid(0x0c, b)]];
    for (const input of garbage) {
      for (const [name, parse] of targets) {
        assert.throws(
          () => parse(input as number[]),
          (e: unknown) => e instanceof ObdDecodeError,
          `${name}(${String(input)}) must throw an ObdDecodeError`,
        );
      }
    }
  });
});
