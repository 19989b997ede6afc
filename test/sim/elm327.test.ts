/**
 * The ELM327 simulator, driven as a host drives an adapter: command lines written in, bytes collected up to the
 * prompt. Every answer the shared testdata README records is reproduced byte for byte; every other shape it prints is
 * read back with the agent's own parser (parseElmResponse) and decoded with j1979. Timing-sensitive behaviour runs on
 * a fake clock; the rest on the real one with millisecond delays.
 *
 * Reproduce a fuzz failure with its seed: ELM_SIM_FUZZ_SEED=<seed> node --test dist/test/sim/elm327.test.js
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { IsoTpClock } from '../../src/can/isotp.js';
import {
  ElmResponseError,
  parseElmResponse,
  parseElmVersion,
  parseProtocolNumber,
  parseVoltage,
  type ElmErrorCode,
  type ElmParseOptions,
  type ElmResponse,
} from '../../src/obd/elm327-response.js';
import { parseDtcResponse, parseMode01Response, parseVinResponse, type DtcService } from '../../src/obd/j1979.js';
import { DriveCycle, type VehicleState } from '../../src/sim/drive-cycle.js';
import { Elm327Simulator, type Elm327Fault, type Elm327SimulatorOptions, type Elm327Timing } from '../../src/sim/elm327.js';
import { ObdEcuModel } from '../../src/sim/obd-ecu.js';
import { RECORDED_03_NONE, RECORDED_ANSWERS, RECORDED_VIN, RECORDED_VIN_H1, throwsElm } from '../support/elm327-recording.js';
import { hexText } from '../support/hex.js';
import { positive } from '../support/j1979-values.js';
import { activeTimers } from '../support/obd-sim.js';
import { seededRandom } from '../support/random.js';
import { delay } from '../support/wait.js';

// ---------------------------------------------------------------------------------------------------------------
// The recorded car and its answers

/** The car of the recording: 750 rpm, 50 km/h, 90 °C coolant, 13.1 V. */
const RECORDED_STATE: Readonly<VehicleState> = {
  ...new DriveCycle({ seed: 1 }).state,
  engineRunning: true,
  engineRpm: 750,
  speedKph: 50,
  coolantTempC: 90,
  batteryVoltageV: 13.1,
};
const RECORDED_CAR = { state: RECORDED_STATE };
/**
 * The recording's engine ECU advertises BE 3F A8 13 in 0100: the PIDs we simulate, plus PIDs it advertises without
 * a simulated source (01, 03, 06 …), which `unansweredPids` models. 0x2F makes block 0x20 supported.
 */
const RECORDED_ENGINE = {
  vin: RECORDED_VIN,
  dtcs: { stored: ['P0133', 'P0300'] },
  pids: [0x04, 0x05, 0x0c, 0x0d, 0x0f, 0x10, 0x11, 0x1f, 0x2f],
  unansweredPids: [0x01, 0x03, 0x06, 0x07, 0x0b, 0x0e, 0x13, 0x15, 0x1c],
};

/** Milliseconds small enough for a fast suite, large enough to see the order of events. */
const FAST: Partial<Elm327Timing> = { resetMs: 4, warmStartMs: 2, searchMs: 6, answerMs: 1, atMs: 0 };

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** A host on the simulator's byte stream. */
class Host {
  out = '';
  private readonly wake = new Set<() => void>();

  constructor(readonly sim: Elm327Simulator) {
    sim.onOutput((bytes) => {
      this.out += bytes.toString('latin1');
      for (const w of [...this.wake]) w();
    });
  }

  /** Writes `command` and a CR; resolves with the adapter's bytes up to and including the prompt. */
  async send(command: string, timeoutMs = 2000): Promise<string> {
    const from = this.out.length;
    this.sim.write(`${command}\r`);
    await this.until(() => this.out.length > from && this.out.endsWith('>'), timeoutMs, `the prompt after ${JSON.stringify(command)}`);
    return this.out.slice(from);
  }

  until(condition: () => boolean, timeoutMs = 2000, what = 'output'): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (!condition()) return;
        clearTimeout(timer);
        this.wake.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.wake.delete(check);
        reject(new Error(`timed out waiting for ${what}; got ${JSON.stringify(this.out.slice(-200))}`));
      }, timeoutMs);
      this.wake.add(check);
    });
  }
}

function host(options: Partial<Elm327SimulatorOptions> = {}): Host {
  return new Host(new Elm327Simulator({ vehicle: RECORDED_CAR, ecus: [RECORDED_ENGINE], timing: FAST, ...options }));
}

/** A host with echo off and the protocol found, ready for requests. */
async function readyHost(options: Partial<Elm327SimulatorOptions> = {}): Promise<Host> {
  const h = host(options);
  assert.equal(await h.send('ATE0'), 'ATE0\rOK\r\r>');
  assert.match(await h.send('0100'), /^SEARCHING\.\.\.\r/);
  return h;
}

/** A clock that only moves when told. */
class FakeClock implements IsoTpClock {
  private t = 0;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  get pending(): number {
    return this.timers.size;
  }
  /** Runs every timer due within `ms`, in time order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let first: [number, { at: number; fn: () => void }] | null = null;
      for (const entry of this.timers) if (entry[1].at <= end && (first === null || entry[1].at < first[1].at)) first = entry;
      if (first === null) break;
      this.timers.delete(first[0]);
      this.t = first[1].at;
      first[1].fn();
    }
    this.t = end;
  }
  /** Runs timers until none is left. */
  runAll(): void {
    for (let k = 0; this.timers.size > 0; k++) {
      assert.ok(k < 10_000, 'timers keep re-arming');
      const next = Math.min(...[...this.timers.values()].map((t) => t.at));
      this.advance(next - this.t);
    }
  }
}

/** A simulator on a fake clock, with its output collected. */
function clocked(options: Partial<Elm327SimulatorOptions> = {}) {
  const clock = new FakeClock();
  const sim = new Elm327Simulator({ vehicle: RECORDED_CAR, ecus: [RECORDED_ENGINE], clock, ...options });
  let out = '';
  sim.onOutput((b) => {
    out += b.toString('latin1');
  });
  const take = (): string => {
    const o = out;
    out = '';
    return o;
  };
  return { sim, clock, take };
}

/** The answer without its prompt, as a driver hands it to the parser. */
function body(answer: string): string {
  assert.ok(answer.endsWith('>'), `no prompt: ${JSON.stringify(answer)}`);
  return answer.slice(0, -1);
}

function parse(answer: string, options: ElmParseOptions = {}): ElmResponse {
  return parseElmResponse(body(answer), options);
}

/** Mode 01 readings of one message, by PID. */
function pidValues(data: Uint8Array): Record<number, unknown> {
  return Object.fromEntries(positive(parseMode01Response(data)).readings.map((r) => [r.pid, r.value]));
}

/** Legacy Mode 09: `49 02 nn <4 bytes>` messages to one CAN-style payload `49 02 <bytes…>`. */
function joinLegacyInfo(messages: readonly { data: Uint8Array }[]): Uint8Array {
  const out = [messages[0]!.data[0]!, messages[0]!.data[1]!];
  messages.forEach((m, k) => {
    assert.equal(m.data[2], k + 1, 'message counter');
    out.push(...m.data.subarray(3));
  });
  return Uint8Array.from(out);
}

/** Legacy DTC messages (no count byte) to their codes, in order. */
function legacyDtcs(service: DtcService, messages: readonly { data: Uint8Array }[]): string[] {
  return messages.flatMap((m) => positive(parseDtcResponse(service, m.data, { countByte: false })).codes);
}

// ---------------------------------------------------------------------------------------------------------------

describe('ObdEcuModel (the bus-free answer logic)', () => {
  it('answers like the CAN ECU: functional silence, physical NRCs, Mode 04 clearing only in respond()', () => {
    const model = new ObdEcuModel({ vehicle: RECORDED_CAR, dtcs: { stored: ['P0133'], pending: ['P0420'], permanent: ['P0301'] } });
    assert.equal(hexText(model.respond(Uint8Array.of(0x01, 0x0c), true)!), '41 0C 0B B8');
    assert.equal(model.respond(Uint8Array.of(0x01, 0x01), true), null);
    assert.equal(hexText(model.respond(Uint8Array.of(0x01, 0x01), false)!), '7F 01 31');
    assert.equal(hexText(model.respond(Uint8Array.of(0x22, 0xf1, 0x90), false)!), '7F 22 11');
    assert.ok(model.supportedPids.has(0x0c) && model.supportedPids.has(0x20));
    assert.equal(hexText(model.preview(Uint8Array.of(0x04), true)!), '44');
    assert.deepEqual(model.dtcs.stored, ['P0133'], 'preview has no effect');
    model.respond(Uint8Array.of(0x04), true);
    assert.deepEqual(model.dtcs, { stored: [], pending: [], permanent: ['P0301'] });
    model.setStoredDtcs(['P0171']);
    assert.equal(hexText(model.respond(Uint8Array.of(0x03), true)!), '43 01 01 71');
    assert.throws(() => new ObdEcuModel({ vehicle: RECORDED_CAR, pids: [0x01] }), /no simulated source/);
  });
});

describe('Elm327Simulator: the recorded answers, byte for byte', () => {
  it('one session from ATZ: reset, echo, search, PIDs, VIN, DTCs, headers, spaces, errors', async () => {
    const h = host();
    const expect = async (command: string, key = command): Promise<void> => assert.equal(await h.send(command), RECORDED_ANSWERS[key], key);
    await expect('ATZ');
    await expect('ATE0');
    await expect('ATSP0');
    await expect('ATRV');
    await expect('0100');
    // The recording's emulator named the protocol before its search; a real adapter, and this one, once found.
    await expect('ATDP');
    for (const command of ['010C', '010D', '0105', '0902', '03', '07', '01FF', 'XYZ']) await expect(command);
    await h.send('ATH1');
    await expect('010C', 'ATH1 010C');
    await h.send('ATH0');
    await h.send('ATS0');
    await expect('010C', 'ATS0 010C');
    await h.send('ATS1');
    h.sim.ecus[0]!.model.setStoredDtcs([]);
    assert.equal(await h.send('03'), RECORDED_03_NONE);
  });

  it('ATH1 0902: the raw first and consecutive frames of the other recorded car', async () => {
    const h = await readyHost({ ecus: [{ ...RECORDED_ENGINE, vin: RECORDED_VIN_H1 }] });
    await h.send('ATH1');
    assert.equal(await h.send('0902'), RECORDED_ANSWERS['ATH1 0902']);
  });

  it('the recorded answers read back through parseElmResponse and j1979 to the recorded car', async () => {
    const h = host();
    assert.equal(parseElmVersion(body(await h.send('ATZ')), 'ATZ').version, '1.5');
    await h.send('ATE0');
    assert.equal(parseVoltage(body(await h.send('ATRV'))), 13.1);
    const first = parse(await h.send('0100'));
    assert.equal(first.searching, true);
    assert.equal(parseProtocolNumber(body(await h.send('ATDPN'))).number, 6);
    assert.deepEqual(pidValues(parse(await h.send('010C')).messages[0]!.data), { 12: 750 });
    assert.deepEqual(pidValues(parse(await h.send('010D')).messages[0]!.data), { 13: 50 });
    assert.deepEqual(pidValues(parse(await h.send('0105')).messages[0]!.data), { 5: 90 });
    assert.equal(parseVinResponse(parse(await h.send('0902')).messages[0]!.data), RECORDED_VIN);
    assert.deepEqual(positive(parseDtcResponse(0x03, parse(await h.send('03')).messages[0]!.data, { countByte: true })).codes, ['P0133', 'P0300']);
    throwsElm(() => parse(RECORDED_ANSWERS['01FF']!), 'no-data');
  });
});

describe('Elm327Simulator: framing and settings', () => {
  it('every echo / linefeed / spaces / headers combination parses to the same values', async () => {
    const h = await readyHost();
    for (let mask = 0; mask < 16; mask++) {
      const [echo, linefeeds, spaces, headers] = [1, 2, 4, 8].map((bit) => (mask & bit) !== 0) as [boolean, boolean, boolean, boolean];
      for (const setting of [`ATE${+echo}`, `ATL${+linefeeds}`, `ATS${+spaces}`, `ATH${+headers}`]) await h.send(setting);
      const s = h.sim.settings;
      assert.deepEqual([s.echo, s.linefeeds, s.spaces, s.headers], [echo, linefeeds, spaces, headers]);
      const label = JSON.stringify({ echo, linefeeds, spaces, headers });
      for (const command of ['01 0c', '0902']) {
        const answer = await h.send(command);
        assert.equal(answer.includes('\r\n'), linefeeds, label);
        assert.equal(answer.replace(/\r\n/g, '\r').includes('\n'), false, label);
        assert.ok(answer.endsWith(linefeeds ? '\r\n\r\n>' : '\r\r>'), label);
        assert.equal(answer.startsWith(`${command}\r`), echo, label);
        const printed = echo ? answer.slice(command.length + (linefeeds ? 2 : 1)) : answer;
        assert.equal(/[0-9A-F] [0-9A-F]/.test(printed), spaces, label);
        assert.equal(answer.includes('7E8'), headers, label);
        const { messages } = parse(answer, { command, headers, protocol: 'can11' });
        assert.equal(messages.length, 1);
        assert.equal(messages[0]!.ecu, headers ? '7E8' : '');
        if (command === '0902') assert.equal(parseVinResponse(messages[0]!.data), RECORDED_VIN, label);
        else assert.deepEqual(pidValues(messages[0]!.data), { 12: 750 }, label);
      }
    }
  });

  it('case, spaces, LF and NUL in commands are ignored; the echo is the line as typed', async () => {
    const h = host();
    assert.equal(await h.send('\nat e0'), 'at e0\rOK\r\r>');
    await h.send('0100');
    assert.equal(await h.send('\u0000 01\t0c \n'), '41 0C 0B B8 \r\r>');
    await h.send('ATE1');
    assert.equal(await h.send('01 0d'), '01 0d\r41 0D 32 \r\r>');
  });

  it('an empty line repeats the last OBD request; long lines and control bytes answer ?', async () => {
    const h = await readyHost();
    await h.send('010D');
    assert.equal(await h.send(''), '41 0D 32 \r\r>');
    await h.send('ATH1');
    assert.equal(await h.send(''), '7E8 03 41 0D 32 \r\r>', 'the repeat uses the new settings');
    assert.equal(await h.send(`AT${'S'.repeat(100)}`), '?\r\r>');
    assert.equal(await h.send(`01${'0C'.repeat(40)}`), '?\r\r>');
    assert.equal(await h.send('01\u00070C'), '?\r\r>');
    assert.equal(await h.send('01\u00ff0C'), '?\r\r>');
    const fresh = host();
    assert.equal(await fresh.send(''), '\r?\r\r>', 'nothing to repeat yet (echo on: the empty line is echoed)');
  });

  it('OBD requests: 1-7 bytes of hex, an optional count digit; anything else is ?', async () => {
    const h = await readyHost();
    for (const bad of ['0', '01G0', '0102030405060708', '010C0', 'ATX', '>']) assert.equal(await h.send(bad), '?\r\r>', bad);
    assert.ok(h.sim.counters.unknownCommands >= 6);
  });

  it('ATZ, ATWS and ATD restore the defaults; ATSP is saved across them, ATTP is not', async () => {
    const h = await readyHost();
    for (const c of ['ATL1', 'ATS0', 'ATH1', 'ATSH7E0', 'ATCRA7E8']) await h.send(c);
    assert.equal(await h.send('ATWS'), '\r\rELM327 v1.5\r\r>', 'the defaults (no linefeeds) apply to its own answer');
    assert.deepEqual(h.sim.settings, {
      echo: true,
      linefeeds: false,
      spaces: true,
      headers: false,
      protocol: { auto: true, number: 0 },
      protocolFound: null,
      header: null,
      receiveFilter: null,
    });
    await h.send('ATE0');
    await h.send('ATSP6');
    await h.send('ATZ');
    await h.send('ATE0');
    assert.equal(await h.send('ATDPN'), '6\r\r>');
    assert.equal(await h.send('ATDP'), 'ISO 15765-4 (CAN 11/500) \r\r>');
    assert.equal(await h.send('010C'), '41 0C 0B B8 \r\r>', 'no search with a fixed protocol');
    await h.send('ATTP0');
    assert.equal(await h.send('ATDPN'), 'A0\r\r>');
    await h.send('ATD');
    await h.send('ATE0');
    assert.equal(await h.send('ATDPN'), '6\r\r>');
    await h.send('ATSPA6');
    assert.equal(await h.send('ATDPN'), 'A6\r\r>');
    assert.equal(await h.send('ATDP'), 'AUTO, ISO 15765-4 (CAN 11/500) \r\r>');
    assert.match(await h.send('010C'), /^SEARCHING/);
  });

  it('the other AT commands: OK, ATI, AT@1, ATRV, ATDP before the search, unknown ones ?', async () => {
    const h = host();
    await h.send('ATE0');
    for (const c of [
      'ATAT0',
      'ATAT1',
      'ATAT2',
      'ATST32',
      'ATCAF1',
      'ATM0',
      'ATM1',
      'ATCFC0',
      'ATCFC1',
      'ATAL',
      'ATNL',
      'ATAR',
      'ATPC',
      'ATSH7DF',
      'ATSH18DB33F1',
      'ATSHDB33F1',
      'ATCRA7EX',
    ]) {
      assert.equal(await h.send(c), 'OK\r\r>', c);
    }
    assert.equal(await h.send('ATCAF0'), '?\r\r>', 'only auto-formatting is modelled');
    assert.equal(await h.send('ATI'), 'ELM327 v1.5\r\r>');
    assert.equal(await h.send('AT@1'), 'OBDII to RS232 Interpreter\r\r>');
    assert.equal(await h.send('ATDP'), 'AUTO \r\r>');
    assert.equal(await h.send('ATDPN'), 'A0\r\r>');
    for (const c of ['ATSH7E', 'ATSP', 'ATSPD', 'ATST', 'ATE2', 'ATFOO', 'AT']) assert.equal(await h.send(c), '?\r\r>', c);
    const counters = h.sim.counters;
    assert.equal(counters.obdRequests, 0);
    assert.equal(counters.atCommands, counters.commands);
    assert.equal(counters.unknownCommands, 8);
  });

  it('several output listeners, each can unsubscribe', async () => {
    const h = host();
    let second = '';
    const off = h.sim.onOutput((b) => {
      second += b.toString('latin1');
    });
    await h.send('ATI');
    off();
    await h.send('ATI');
    assert.equal(second, 'ATI\rELM327 v1.5\r\r>');
    assert.ok(h.out.endsWith('ATI\rELM327 v1.5\r\r>ATI\rELM327 v1.5\r\r>'));
  });

  it('takes Uint8Array input and answers in Buffers', () => {
    const { sim, take } = clocked({ timing: { atMs: 0 } });
    let chunk: unknown = null;
    sim.onOutput((b) => {
      chunk = b;
    });
    sim.write(new TextEncoder().encode('ATI\r'));
    assert.ok(Buffer.isBuffer(chunk));
    assert.equal(take(), 'ATI\rELM327 v1.5\r\r>');
  });
});

describe('Elm327Simulator: requests and answers', () => {
  it('multi-PID requests: one message, multi-frame when long', async () => {
    const h = await readyHost();
    assert.equal(await h.send('01 0C 0D'), '41 0C 0B B8 0D 32 \r\r>');
    // Eight bytes no longer fit a single frame.
    assert.equal(await h.send('01 0C 0D 05'), '008\r0: 41 0C 0B B8 0D 32 \r1: 05 82 CC CC CC CC CC \r\r>');
    assert.deepEqual(pidValues(parse(await h.send('010C0D05')).messages[0]!.data), { 12: 750, 13: 50, 5: 90 });
    const six = await h.send('01 0C 0D 05 04 11 0F');
    assert.match(six, /^00E\r0: 41 0C 0B B8 0D 32 \r1: [^\r]*\r2: [0-9A-F]{2} CC CC CC CC CC CC \r\r>$/);
    assert.deepEqual(Object.keys(pidValues(parse(six).messages[0]!.data)).map(Number), [4, 5, 12, 13, 15, 17]);
    await h.send('ATH1');
    const framed = await h.send('01 0C 0D 05 04 11 0F');
    assert.match(framed, /^7E8 10 0E 41 0C 0B B8 0D 32 \r7E8 21 [^\r]*\r7E8 22 [0-9A-F]{2} CC CC CC CC CC CC \r\r>$/);
    assert.deepEqual(parse(framed).messages[0]!.data, parse(six).messages[0]!.data);
  });

  it('two ECUs answer in address order; the response count digit stops after n', async () => {
    const ecus = [RECORDED_ENGINE, { address: 1, pids: [0x05, 0x0d, 0x0f], vin: null, calibrationIds: ['TCM-CAL-7'] }];
    const h = await readyHost({ ecus });
    assert.equal(await h.send('010D'), '41 0D 32 \r41 0D 32 \r\r>');
    assert.equal(await h.send('010D1'), '41 0D 32 \r\r>');
    assert.equal(await h.send('010D2'), '41 0D 32 \r41 0D 32 \r\r>');
    assert.equal(await h.send('010C'), '41 0C 0B B8 \r\r>', 'the transmission has no rpm and keeps quiet');
    await h.send('ATH1');
    const both = parse(await h.send('0100'), { headers: true, protocol: 'can11' });
    assert.deepEqual(
      both.messages.map((m) => m.ecu),
      ['7E8', '7E9'],
    );
    const calids = parse(await h.send('0904'), { headers: true, protocol: 'can11' }).messages;
    assert.deepEqual(
      calids.map((m) => m.ecu),
      ['7E8', '7E9'],
    );
    await h.send('ATH0');
    assert.equal(await h.send('09021'), RECORDED_ANSWERS['0902'], 'one VIN answer: the count is met at once');
  });

  it('ATSH addresses one ECU physically (NRCs show); ATCRA shows one ECU; ATAR and ATSH7DF undo them', async () => {
    const ecus = [RECORDED_ENGINE, { address: 1, pids: [0x05, 0x0d, 0x0f], vin: null }];
    const h = await readyHost({ ecus });
    await h.send('ATH1');
    await h.send('ATSH7E1');
    assert.equal(h.sim.settings.header, '7E1');
    assert.equal(await h.send('010D'), '7E9 03 41 0D 32 \r\r>');
    assert.equal(await h.send('010C'), '7E9 03 7F 01 31 \r\r>', 'a physical request gets a negative response');
    await h.send('ATSH7E0');
    assert.equal(await h.send('010D'), '7E8 03 41 0D 32 \r\r>');
    await h.send('ATSH7E5');
    assert.equal(await h.send('010D'), 'NO DATA\r\r>');
    await h.send('ATSH7DF');
    await h.send('ATCRA7E9');
    assert.equal(await h.send('010D'), '7E9 03 41 0D 32 \r\r>');
    await h.send('ATCRA7EX');
    assert.equal(await h.send('010D'), '7E8 03 41 0D 32 \r7E9 03 41 0D 32 \r\r>');
    await h.send('ATCRA7E9');
    await h.send('ATAR');
    assert.equal(await h.send('010D'), '7E8 03 41 0D 32 \r7E9 03 41 0D 32 \r\r>');
  });

  it('Mode 04 clears the DTCs of the ECUs it reaches', async () => {
    const h = await readyHost();
    assert.equal(await h.send('04'), '44 \r\r>');
    assert.deepEqual(h.sim.ecus[0]!.model.dtcs.stored, []);
    assert.equal(await h.send('03'), RECORDED_03_NONE);
  });

  it('29-bit CAN: 4-byte headers, ISO-TP frames, physical 18DAxxF1 addressing', async () => {
    const h = await readyHost({ protocol: 7 });
    assert.equal(await h.send('ATDP'), 'AUTO, ISO 15765-4 (CAN 29/500) \r\r>');
    assert.equal(await h.send('ATDPN'), 'A7\r\r>');
    assert.equal(await h.send('010C'), RECORDED_ANSWERS['010C']);
    await h.send('ATH1');
    assert.equal(await h.send('010C'), '18 DA F1 10 04 41 0C 0B B8 \r\r>');
    const vin = await h.send('0902');
    assert.equal(vin, '18 DA F1 10 10 14 49 02 01 57 50 30 \r18 DA F1 10 21 5A 5A 5A 39 39 5A 54 \r18 DA F1 10 22 53 33 39 30 30 30 30 \r\r>');
    const options = { headers: true, protocol: 'can29' } as const;
    const message = parse(vin, options).messages[0]!;
    assert.equal(message.ecu, '18DAF110');
    assert.equal(parseVinResponse(message.data), RECORDED_VIN);
    await h.send('ATS0');
    assert.equal(await h.send('010C'), '18DAF11004410C0BB8\r\r>');
    assert.equal(parse(await h.send('0902'), options).messages[0]!.ecu, '18DAF110');
    await h.send('ATSHDA10F1');
    assert.equal(await h.send('010D'), '18DAF11003410D32\r\r>');
    await h.send('ATSH18DA11F1');
    assert.equal(await h.send('010D'), 'NO DATA\r\r>');
    await h.send('ATSH18DB33F1');
    await h.send('ATCRA18DAF110');
    assert.equal(await h.send('010D'), '18DAF11003410D32\r\r>');
    await h.send('ATCRA7E8');
    assert.equal(await h.send('010D'), 'NO DATA\r\r>', 'an 11-bit filter matches no 29-bit answer');
  });

  it('legacy ISO 9141-2: headers with checksum, DTCs three per message, the VIN in five messages, no multi-PID', async () => {
    const dtcs = ['P0133', 'P0300', 'C0035', 'U0100'];
    const ecus = [
      { ...RECORDED_ENGINE, dtcs: { stored: dtcs } },
      { address: 0x1a, pids: [0x0d], vin: null, calibrationIds: [] },
    ];
    const h = await readyHost({ protocol: 3, ecus });
    assert.equal(await h.send('ATDPN'), 'A3\r\r>');
    assert.equal(await h.send('010C'), '41 0C 0B B8 \r\r>');
    assert.equal(await h.send('010C0D'), 'NO DATA\r\r>');
    await h.send('ATH1');
    assert.equal(await h.send('010C'), '48 6B 10 41 0C 0B B8 D3 \r\r>');
    const options = { headers: true, protocol: 'legacy' } as const;
    const speed = parse(await h.send('010D'), options).messages;
    assert.deepEqual(
      speed.map((m) => m.ecu),
      ['10', '1A'],
    );
    assert.deepEqual(
      speed.map((m) => pidValues(m.data)),
      [{ 13: 50 }, { 13: 50 }],
    );

    const stored = await h.send('03');
    assert.equal(stored, '48 6B 10 43 01 33 03 00 40 35 B2 \r48 6B 10 43 C1 00 00 00 00 00 C7 \r48 6B 1A 43 00 00 00 00 00 00 10 \r\r>');
    const dtcMessages = parse(stored, options).messages;
    assert.deepEqual(
      legacyDtcs(
        0x03,
        dtcMessages.filter((m) => m.ecu === '10'),
      ),
      dtcs,
    );
    assert.deepEqual(
      legacyDtcs(
        0x03,
        dtcMessages.filter((m) => m.ecu === '1A'),
      ),
      [],
    );

    const vin = await h.send('0902');
    assert.match(vin, /^48 6B 10 49 02 01 00 00 00 57 [0-9A-F]{2} \r48 6B 10 49 02 02 50 30 5A 5A /);
    const vinMessages = parse(vin, options).messages;
    assert.equal(vinMessages.length, 5);
    assert.equal(parseVinResponse(joinLegacyInfo(vinMessages)), RECORDED_VIN);

    await h.send('ATH0');
    await h.send('ATS0');
    const plain = parse(await h.send('0902')).messages;
    assert.equal(plain[0] && hexText(plain[0].data), '49 02 01 00 00 00 57');
    assert.equal(parseVinResponse(joinLegacyInfo(plain)), RECORDED_VIN);
    assert.deepEqual(legacyDtcs(0x03, parse(await h.send('03')).messages), dtcs);
    const calids = parse(await h.send('0904')).messages;
    assert.equal(calids.length, 4, 'one 16-byte calibration ID in 4-byte messages');
  });

  it('legacy with a fixed protocol: BUS INIT: ...OK before the first answer, again after ATPC; KWP fast too', async () => {
    for (const protocol of [3, 4, 5] as const) {
      const h = host({ protocol });
      await h.send('ATE0');
      await h.send(`ATSP${protocol}`);
      const first = await h.send('010D');
      assert.equal(first, 'BUS INIT: ...OK\r41 0D 32 \r\r>');
      assert.equal(parse(first).busInit, true);
      assert.equal(await h.send('010D'), '41 0D 32 \r\r>');
      assert.equal(await h.send('ATDPN'), `${protocol}\r\r>`);
      await h.send('ATPC');
      assert.equal(await h.send('010D'), 'BUS INIT: ...OK\r41 0D 32 \r\r>');
      h.sim.setIgnition(false);
      assert.equal(await h.send('010D'), 'NO DATA\r\r>');
      await h.send('ATPC');
      assert.equal(await h.send('010D'), 'BUS INIT: ...ERROR\r\r>');
    }
  });

  it('a protocol the car does not speak: CAN ERROR on CAN, BUS INIT: ...ERROR on legacy', async () => {
    const can = host();
    await can.send('ATE0');
    for (const [setting, answer, code] of [
      ['ATSP7', 'CAN ERROR\r\r>', 'can-error'],
      ['ATSP8', 'CAN ERROR\r\r>', 'can-error'],
      ['ATSP3', 'BUS INIT: ...ERROR\r\r>', 'bus-init-error'],
      ['ATSP5', 'BUS INIT: ...ERROR\r\r>', 'bus-init-error'],
      ['ATSPA', 'CAN ERROR\r\r>', 'can-error'],
      ['ATSP1', 'NO DATA\r\r>', 'no-data'],
    ] as const) {
      await can.send(setting);
      const got = await can.send('010C');
      assert.equal(got, answer, setting);
      throwsElm(() => parse(got), code);
    }
    const legacy = host({ protocol: 4 });
    await legacy.send('ATE0');
    await legacy.send('ATSP6');
    assert.equal(await legacy.send('010C'), 'CAN ERROR\r\r>');
    await legacy.send('ATSP3');
    assert.equal(await legacy.send('010C'), 'BUS INIT: ...ERROR\r\r>');
  });

  it('ignition off: UNABLE TO CONNECT while searching, NO DATA once the protocol is known', async () => {
    const h = host({ ignition: false });
    await h.send('ATE0');
    const failed = await h.send('0100');
    assert.equal(failed, 'SEARCHING...\rUNABLE TO CONNECT\r\r>');
    throwsElm(() => parse(failed), 'unable-to-connect');
    assert.equal(await h.send('ATDPN'), 'A0\r\r>');
    h.sim.setIgnition(true);
    assert.equal(h.sim.ignition, true);
    assert.equal(await h.send('010D'), 'SEARCHING...\r41 0D 32 \r\r>');
    h.sim.setIgnition(false);
    assert.equal(await h.send('010D'), 'NO DATA\r\r>');
    await h.send('ATSP6');
    assert.equal(await h.send('010D'), 'NO DATA\r\r>');
  });
});

describe('Elm327Simulator: timing and interruption', () => {
  it('SEARCHING... goes out at once, the answer after searchMs + answerMs; ATZ after resetMs', () => {
    const { sim, clock, take } = clocked();
    assert.deepEqual(sim.timing, { resetMs: 500, warmStartMs: 100, searchMs: 1500, answerMs: 25, atMs: 0 });
    sim.write('ATZ\r');
    assert.equal(take(), 'ATZ\r');
    clock.advance(499);
    assert.equal(take(), '');
    clock.advance(1);
    assert.equal(take(), '\r\rELM327 v1.5\r\r>');
    sim.write('ATE0\r');
    assert.equal(take(), 'ATE0\rOK\r\r>', 'AT commands answer at once with atMs 0');
    sim.write('010C\r');
    assert.equal(take(), 'SEARCHING...\r');
    clock.advance(1524);
    assert.equal(take(), '');
    clock.advance(1);
    assert.equal(take(), '41 0C 0B B8 \r\r>');
    sim.write('010C\r');
    clock.advance(24);
    assert.equal(take(), '');
    clock.advance(1);
    assert.equal(take(), '41 0C 0B B8 \r\r>');
    sim.slowBy(100);
    sim.write('010C\r');
    clock.advance(124);
    assert.equal(take(), '');
    clock.advance(1);
    assert.equal(take(), '41 0C 0B B8 \r\r>');
    sim.write('ATI\r');
    clock.advance(100);
    assert.equal(take(), 'ELM327 v1.5\r\r>', 'slowBy delays AT answers too');
    sim.close();
    assert.equal(clock.pending, 0);
  });

  it('a byte during an OBD request stops it (STOPPED) and starts the next command; LF does not', () => {
    const { sim, clock, take } = clocked({ timing: { answerMs: 50, searchMs: 100 } });
    sim.write('ATE0\r');
    take();
    sim.write('0100\r');
    assert.equal(take(), 'SEARCHING...\r');
    sim.write('0');
    assert.equal(take(), 'STOPPED\r\r>');
    assert.equal(sim.settings.protocolFound, null, 'an interrupted search finds nothing');
    sim.write('10D\r');
    clock.runAll();
    assert.equal(take(), 'SEARCHING...\r41 0D 32 \r\r>');
    // A host sending CR LF: the LF is not an interruption.
    sim.write('010C\r\n');
    clock.runAll();
    assert.equal(take(), '41 0C 0B B8 \r\r>');
    // Two requests in one write: the second stops the first.
    sim.write('010C\r010D\r');
    clock.runAll();
    assert.equal(take(), 'STOPPED\r\r>41 0D 32 \r\r>');
    assert.equal(sim.counters.interrupted, 2);
    throwsElm(() => parse('STOPPED\r\r>'), 'stopped');
    sim.close();
  });

  it('bytes during an AT command wait their turn (real clock)', async () => {
    const h = host({ timing: { ...FAST, resetMs: 20, atMs: 2 } });
    h.sim.write('ATZ\rATE0\rATI\r');
    await h.until(() => (h.out.match(/>/g) ?? []).length === 3);
    assert.equal(h.out, 'ATZ\r\r\rELM327 v1.5\r\r>ATE0\rOK\r\r>ELM327 v1.5\r\r>');
    assert.equal(h.sim.counters.interrupted, 0);
  });

  it('STOPPED on the real clock, and close() leaves no timer behind', async () => {
    const before = activeTimers();
    const h = await readyHost({ timing: { ...FAST, answerMs: 200 } });
    const from = h.out.length;
    h.sim.write('010C\r');
    await delay(5);
    h.sim.write('010D\r');
    await h.until(() => h.out.endsWith('32 \r\r>'));
    assert.equal(h.out.slice(from), 'STOPPED\r\r>41 0D 32 \r\r>');
    h.sim.write('010C\r');
    await delay(2);
    assert.ok(activeTimers() > before);
    h.sim.close();
    assert.equal(activeTimers(), before);
    h.sim.write('ATI\r');
    await delay(5);
    assert.ok(h.out.endsWith('41 0D 32 \r\r>'), 'closed: silent');
  });

  it('listeners may write the next command from inside an answer', () => {
    const { sim, clock } = clocked({ timing: { answerMs: 0, searchMs: 0 } });
    const queue = ['ATE0', '010C', '010D', 'ATI'];
    let out = '';
    sim.onOutput((b) => {
      out += b.toString('latin1');
      if (out.endsWith('>') && queue.length > 0) sim.write(`${queue.shift()}\r`);
    });
    sim.write('ATZ\r');
    clock.runAll();
    assert.equal(out, 'ATZ\r\r\rELM327 v1.5\r\r>ATE0\rOK\r\r>SEARCHING...\r41 0C 0B B8 \r\r>41 0D 32 \r\r>ELM327 v1.5\r\r>');
  });
});

describe('Elm327Simulator: fault injection', () => {
  const cases: ReadonlyArray<[Elm327Fault, string, string, ElmErrorCode]> = [
    ['no-data', '010C', 'NO DATA\r\r>', 'no-data'],
    ['can-error', '010C', 'CAN ERROR\r\r>', 'can-error'],
    ['buffer-full', '0902', '014\rBUFFER FULL\r\r>', 'buffer-full'],
    ['bus-init-error', '010C', 'BUS INIT: ...ERROR\r\r>', 'bus-init-error'],
    ['stopped', '010C', 'STOPPED\r\r>', 'stopped'],
    ['unable-to-connect', '010C', 'UNABLE TO CONNECT\r\r>', 'unable-to-connect'],
    ['half-line', '010C', '41 0C 0B B\r\r>', 'garbage'],
    ['half-line', '0902', '014\r0: 49 02 01 57 50 30 \r1: 5A 5A 5A 39 39 5A 5\r\r>', 'garbage'],
    ['garbled', '010C', '41 ZC #B \u00ff8 \r\r>', 'garbage'],
    ['dropped-line', '0902', '014\r1: 5A 5A 5A 39 39 5A 54 \r2: 53 33 39 30 30 30 30 \r\r>', 'data-error'],
    ['dropped-line', '010C', '\r>', 'garbage'],
  ];
  for (const [fault, command, answer, code] of cases) {
    it(`${fault} on ${command}: ${JSON.stringify(answer)} -> ${code}`, async () => {
      const h = await readyHost();
      h.sim.failNext(fault);
      const got = await h.send(command);
      assert.equal(got, answer);
      throwsElm(() => parse(got, { command }), code);
      assert.equal(await h.send(command), RECORDED_ANSWERS[command], 'one request only');
    });
  }

  it('faults queue up, one per OBD request; AT commands do not use them', async () => {
    const h = await readyHost();
    h.sim.failNext('no-data');
    h.sim.failNext('stopped');
    assert.equal(await h.send('ATI'), 'ELM327 v1.5\r\r>');
    assert.equal(await h.send('010C'), 'NO DATA\r\r>');
    assert.equal(await h.send('010C'), 'STOPPED\r\r>');
    assert.equal(await h.send('010C'), RECORDED_ANSWERS['010C']);
  });

  it('garbled and dropped lines with headers on', async () => {
    const h = await readyHost();
    await h.send('ATH1');
    h.sim.failNext('dropped-line');
    const dropped = await h.send('0902');
    assert.equal(dropped.split('\r').length, 4);
    throwsElm(() => parse(dropped, { headers: true }), 'data-error');
    h.sim.failNext('garbled');
    const garbled = await h.send('010C');
    throwsElm(() => parse(garbled, { headers: true }), 'garbage');
  });

  it('setSilent: a hung adapter drops its answer and all input; it answers again when switched back', async () => {
    const h = await readyHost({ timing: { ...FAST, answerMs: 20 } });
    h.sim.write('010C\r');
    h.sim.setSilent(true);
    const before = h.out;
    h.sim.write('ATI\r');
    await delay(40);
    assert.equal(h.out, before);
    h.sim.setSilent(false);
    assert.equal(await h.send('010D'), '41 0D 32 \r\r>');
  });

  it('sendGarbage writes noise at once, raw', () => {
    const { sim, take } = clocked();
    sim.sendGarbage();
    assert.ok(take().length > 0);
    sim.sendGarbage(Uint8Array.of(0xff, 0x00, 0x41));
    assert.equal(take(), '\u00ff\u0000A');
    sim.sendGarbage('\r\r');
    assert.equal(take(), '\r\r', 'even with ATL1 it would stay raw');
  });
});

describe('Elm327Simulator: clone profiles', () => {
  it('clone-v2.1: v2.1 banner, ? to ATAT, ATWS, ATCRA, AT@1, ATDPN; the rest works', async () => {
    const h = host({ profile: 'clone-v2.1' });
    assert.equal(await h.send('ATZ'), 'ATZ\r\r\rELM327 v2.1\r\r>');
    await h.send('ATE0');
    assert.equal(parseElmVersion(body(await h.send('ATI'))).version, '2.1');
    for (const c of ['ATAT1', 'ATWS', 'ATCRA7E8', 'AT@1', 'ATDPN']) assert.equal(await h.send(c), '?\r\r>', c);
    for (const c of ['ATH0', 'ATS1', 'ATSP0']) assert.equal(await h.send(c), 'OK\r\r>', c);
    assert.equal(await h.send('0100'), RECORDED_ANSWERS['0100']);
    assert.equal(await h.send('ATDP'), RECORDED_ANSWERS['ATDP']);
  });

  it('clone-v1.5: v1.5 banner, ? to AT@1 and ATWS only', async () => {
    const h = host({ profile: 'clone-v1.5' });
    await h.send('ATE0');
    assert.equal(await h.send('ATI'), 'ELM327 v1.5\r\r>');
    for (const c of ['AT@1', 'ATWS']) assert.equal(await h.send(c), '?\r\r>', c);
    for (const c of ['ATAT1', 'ATCRA7E8', 'ATDPN']) assert.notEqual(await h.send(c), '?\r\r>', c);
  });

  it('stickyEcho keeps echoing after ATE0; `unsupported` models any clone', async () => {
    const sticky = host({ profile: 'clone-v1.5', stickyEcho: true });
    assert.equal(await sticky.send('ATE0'), 'ATE0\rOK\r\r>');
    assert.equal(await sticky.send('ATI'), 'ATI\rELM327 v1.5\r\r>');
    assert.equal(sticky.sim.settings.echo, true);
    const custom = host({ unsupported: ['at h', 'ATSP'] });
    await custom.send('ATE0');
    assert.equal(await custom.send('ATH1'), '?\r\r>');
    assert.equal(await custom.send('ATSP6'), '?\r\r>');
    assert.equal(await custom.send('AT@1'), 'OBDII to RS232 Interpreter\r\r>');
  });

  it('rejects options it cannot simulate', () => {
    assert.throws(() => new Elm327Simulator({ vehicle: RECORDED_CAR, protocol: 2 as 3 }), /not simulated/);
    assert.throws(() => new Elm327Simulator({ vehicle: RECORDED_CAR, ecus: [{ address: 8 }] }), /not 0-7/);
    assert.throws(() => new Elm327Simulator({ vehicle: RECORDED_CAR, ecus: [{ address: 1 }, { address: 1 }] }), /two ECUs/);
    assert.throws(() => new Elm327Simulator({ vehicle: RECORDED_CAR, ecus: [] }), /at least one/);
    assert.throws(() => new Elm327Simulator({ vehicle: RECORDED_CAR, timing: { answerMs: -1 } }), /timing\.answerMs/);
    // Defaults: one engine ECU at 7E8 (11-bit) or 10 (29-bit, legacy), with the demo VIN.
    assert.deepEqual(
      new Elm327Simulator({ vehicle: RECORDED_CAR }).ecus.map((e) => e.header),
      ['7E8'],
    );
    assert.deepEqual(
      new Elm327Simulator({ vehicle: RECORDED_CAR, protocol: 9 }).ecus.map((e) => e.header),
      ['18DAF110'],
    );
    assert.deepEqual(
      new Elm327Simulator({ vehicle: RECORDED_CAR, protocol: 5 }).ecus.map((e) => e.address),
      [0x10],
    );
  });
});

describe('Elm327Simulator: fuzz', () => {
  it('2,000 random command lines: never a throw, one prompt per command, parseable OBD answers', () => {
    const seed = Number(process.env.ELM_SIM_FUZZ_SEED ?? 20240611);
    const random = seededRandom(seed);
    const protocol = random.pick([3, 4, 5, 6, 7, 8, 9] as const);
    const ecus = [RECORDED_ENGINE, { address: protocol === 6 || protocol === 8 ? 1 : 0x1a, pids: [0x05, 0x0d], vin: null }];
    const { sim, clock } = clocked({ protocol, ecus, timing: { resetMs: 50, warmStartMs: 10, searchMs: 30, answerMs: 5, atMs: 1 } });
    let out = '';
    sim.onOutput((b) => {
      out += b.toString('latin1');
    });
    const atCommands = [
      'ATZ',
      'ATWS',
      'ATD',
      'ATE0',
      'ATE1',
      'ATL0',
      'ATL1',
      'ATS0',
      'ATS1',
      'ATH0',
      'ATH1',
      'ATSP0',
      `ATSP${protocol}`,
      'ATSP6',
      'ATSP3',
      'ATTP0',
      'ATSPA7',
      'ATDP',
      'ATDPN',
      'ATRV',
      'ATI',
      'AT@1',
      'ATPC',
      'ATAT1',
      'ATST20',
      'ATSH7E0',
      'ATSH7DF',
      'ATSH686AF1',
      'ATSHDA10F1',
      'ATCRA7E8',
      'ATAR',
      'ATCAF0',
      'ATQQ',
    ];
    const obd = [
      '0100',
      '010C',
      '010D',
      '0105',
      '01 0C 0D',
      '010C0D05041110',
      '0902',
      '0904',
      '0900',
      '03',
      '07',
      '0A',
      '04',
      '01FF',
      '2101',
      '010D1',
      '010C2',
      '',
    ];
    const faults: Elm327Fault[] = [
      'no-data',
      'can-error',
      'buffer-full',
      'bus-init-error',
      'stopped',
      'unable-to-connect',
      'half-line',
      'garbled',
      'dropped-line',
    ];
    const noise = (): string => {
      let s = '';
      const n = 1 + Math.floor(random() * 12);
      // Any byte but the prompt character, so the prompts can be counted.
      for (let k = 0; k < n; k++) {
        const c = Math.floor(random() * 256);
        s += String.fromCharCode(c === 0x3e ? 0x3f : c);
      }
      return s;
    };
    const mangle = (text: string): string => {
      const r = random();
      if (r < 0.2) return text.toLowerCase();
      if (r < 0.3) return text.split('').join(' ');
      return text;
    };

    let obdAnswersParsed = 0;
    for (let step = 0; step < 2000; step++) {
      const r = random();
      if (r < 0.03) sim.failNext(random.pick(faults));
      else if (r < 0.05) sim.setIgnition(random() < 0.7);
      const kind = random();
      const line = kind < 0.4 ? random.pick(atCommands) : kind < 0.9 ? random.pick(obd) : noise();
      const commandsBefore = sim.counters.commands;
      const from = out.length;
      // Now and then a second line arrives before the first is answered (interruption or queueing).
      const typed = mangle(line);
      const text = `${typed}\r${random() < 0.05 ? `${mangle(random.pick(obd))}\r` : ''}`;
      assert.doesNotThrow(() => sim.write(text), `step ${step} (seed ${seed}): ${JSON.stringify(text)}`);
      assert.doesNotThrow(() => clock.runAll(), `step ${step} (seed ${seed})`);
      const commands = sim.counters.commands;
      assert.equal((out.match(/>/g) ?? []).length, commands, `step ${step} (seed ${seed}): one prompt per command`);
      if (commands > commandsBefore) assert.ok(out.endsWith('>'), `step ${step} (seed ${seed}): ends with the prompt`);
      // The answer to a plain OBD request reads back through the parser: data, or one of its error codes.
      if (kind >= 0.4 && kind < 0.9 && line !== '' && commands === commandsBefore + 1) {
        const answer = out.slice(from);
        const headers = sim.settings.headers;
        try {
          parseElmResponse(answer.slice(0, -1), {
            command: typed,
            headers,
            protocol: protocol === 6 || protocol === 8 ? 'can11' : protocol >= 7 ? 'can29' : 'legacy',
          });
          obdAnswersParsed++;
        } catch (e) {
          assert.ok(e instanceof ElmResponseError, `step ${step} (seed ${seed}): ${String(e)} for ${JSON.stringify(answer)}`);
        }
      }
    }
    assert.ok(obdAnswersParsed > 100, `only ${obdAnswersParsed} OBD answers parsed`);
    sim.close();
    assert.equal(clock.pending, 0);
  });
});
