/**
 * The driver against an ELM327 implementation that is not the project's simulator: a scripted adapter behaving as the
 * widely used Python ELM327-emulator does in its default scenario (as read from its source), with the habits that
 * differ from ours. It matches requests by pattern and knows no multi-PID requests (NO DATA), echoes byte by byte,
 * answers 0100 from two ECUs (7EA before 7E8), prints ATDP without "AUTO", has no DTC answers (NO DATA), and takes
 * a response-count digit of 0-6 only. Served on a socat pty pair like a real adapter.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SerialPort } from 'serialport';
import { readVehicleSummary } from '../../src/cli/obd.js';
import { ObdRequestError } from '../../src/obd/can-client.js';
import { Elm327Client } from '../../src/obd/elm327.js';
import { SocatPtyPair } from '../../src/sim/elm327-pty.js';
import { fastClientOptions } from '../support/elm327.js';
import { RECORDED_VIN } from '../support/elm327-recording.js';
import { makeTempDir } from '../support/temp.js';
import { delay } from '../support/wait.js';

/** Answers by pattern, per responding ECU header (headers on), data bytes as recorded. */
const SCRIPT: ReadonlyArray<[RegExp, ReadonlyArray<[string, string]>]> = [
  [
    /^0100[0-6]?$/,
    [
      ['7EA', '06 41 00 98 3A 80 13'],
      ['7E8', '06 41 00 BE 3F A8 13'],
    ],
  ],
  [
    /^0120[0-6]?$/,
    [
      ['7EA', '06 41 20 80 01 A0 01'],
      ['7E8', '06 41 20 90 15 B0 15'],
    ],
  ],
  [
    /^0140[0-6]?$/,
    [
      ['7EA', '06 41 40 44 CC 00 21'],
      ['7E8', '06 41 40 7A 1C 80 00'],
    ],
  ],
  [
    /^010C[0-6]?$/,
    [
      ['7EA', '04 41 0C 1A F8'],
      ['7E8', '04 41 0C 0B B8'],
    ],
  ],
  [
    /^010D[0-6]?$/,
    [
      ['7EA', '03 41 0D 32'],
      ['7E8', '03 41 0D 32'],
    ],
  ],
  [/^0105[0-6]?$/, [['7E8', '03 41 05 82']]],
  [
    /^0902[0-6]?$/,
    [
      ['7E8', '10 14 49 02 01 57 50 30'],
      ['7E8', '21 5A 5A 5A 39 39 5A 54'],
      ['7E8', '22 53 33 39 30 30 30 30'],
    ],
  ],
];

/** The emulator-like adapter: state, and what it writes for each line it reads. */
class ScriptedAdapter {
  echo = true;
  spaces = true;
  headers = false;
  searched = false;
  commands: string[] = [];
  private line = '';

  constructor(private readonly send: (text: string) => void) {}

  onBytes(text: string): void {
    for (const ch of text) {
      if (this.echo) this.send(ch);
      if (ch !== '\r') {
        this.line += ch;
        continue;
      }
      const command = this.line.replace(/\s+/g, '').toUpperCase();
      this.line = '';
      this.commands.push(command);
      void this.answer(command).then((body) => this.send(`${body}\r>`));
    }
  }

  private async answer(command: string): Promise<string> {
    if (command.startsWith('AT')) {
      const at = command.slice(2);
      if (at === 'Z') {
        await delay(50);
        this.echo = true;
        this.spaces = true;
        this.headers = false;
        return '\r\rELM327 v1.5\r';
      }
      if (at === 'I') return 'ELM327 v1.5\r';
      if (at === 'E0' || at === 'E1') this.echo = at === 'E1';
      else if (at === 'S0' || at === 'S1') this.spaces = at === 'S1';
      else if (at === 'H0' || at === 'H1') this.headers = at === 'H1';
      else if (at === 'DPN') return 'A6\r';
      else if (at === 'DP') return 'ISO 15765-4 (CAN 11/500)\r';
      else if (at === 'RV') return '13.4V\r';
      else if (!/^(L[01]|AT[012]|SP[0-9A-C]|ST[0-9A-F]{2}|CAF[01]|M[01])$/.test(at)) return '?\r';
      return 'OK\r';
    }
    const entry = SCRIPT.find(([pattern]) => pattern.test(command));
    let prefix = '';
    if (command.startsWith('0100') && !this.searched) {
      this.searched = true;
      prefix = 'SEARCHING...\r';
      await delay(100);
    }
    if (!entry) return /^([0-9A-F]{2})+$/.test(command) ? 'NO DATA\r' : '?\r';
    const frames = entry[1];
    let lines: string[];
    if (this.headers) lines = frames.map(([header, bytes]) => `${header} ${bytes}`);
    else if (frames.length > 1 && frames[0]![1].startsWith('10')) {
      // CAN multi-frame with headers off: the byte count, then numbered frames.
      const payload = frames.flatMap(([, bytes], k) => bytes.split(' ').slice(k === 0 ? 2 : 1));
      lines = ['014', ...[0, 1, 2].map((k) => `${k}: ${payload.slice(k === 0 ? 0 : 6 + 7 * (k - 1), k === 0 ? 6 : 13 + 7 * (k - 1)).join(' ')}`)];
    } else lines = frames.map(([, bytes]) => bytes.split(' ').slice(1).join(' '));
    const shaped = lines.map((l) => (this.spaces ? `${l} ` : l.replace(/ /g, '')));
    return `${prefix}${shaped.join('\r')}\r\r`;
  }
}

describe('ELM327 driver against another implementation (emulator-like, scripted)', () => {
  let pair: SocatPtyPair;
  let device: SerialPort;
  let adapter: ScriptedAdapter;
  const clients: Elm327Client[] = [];

  before(async () => {
    const dir = makeTempDir('elm-foreign-');
    pair = new SocatPtyPair(path.join(dir, 'ttyEMU'), path.join(dir, 'ttyEMU.device'));
    await pair.start();
    device = new SerialPort({ path: pair.devicePath, baudRate: 38400, autoOpen: false });
    await new Promise<void>((resolve, reject) => device.open((err) => (err ? reject(err) : resolve())));
    adapter = new ScriptedAdapter((text) => device.write(text, 'latin1'));
    device.on('data', (chunk: Buffer) => adapter.onBytes(chunk.toString('latin1')));
  });

  after(async () => {
    for (const c of clients) c.close();
    if (device.isOpen) await new Promise<void>((resolve) => device.close(() => resolve()));
    await pair.stop();
  });

  it('initialises, finds both ECUs, learns there are no multi-PID requests, and reads values and the VIN', async () => {
    const c = new Elm327Client(fastClientOptions(pair.hostPath));
    clients.push(c);
    const info = await c.connect();
    assert.equal(info.version, '1.5');
    assert.equal(info.protocol.description, 'ISO 15765-4 (CAN 11/500)');
    assert.equal(info.multiPid, false, 'NO DATA to a multi-PID request');
    assert.equal(info.responseCount, true);
    assert.equal(info.voltage, 13.4);
    assert.deepEqual(
      c.ecus.map((e) => e.ecu),
      [0, 2],
    );
    assert.ok(adapter.commands.includes('01001'), adapter.commands.join(' '));

    const readings = await c.readPids([0x0c, 0x0d, 0x05]);
    assert.deepEqual(
      readings.map((r) => [r.ecu, Object.fromEntries(r.readings.map((x): [string, unknown] => [String(x.key), x.value]))]),
      [
        [0, { rpm: 750, speed: 50, coolantTemp: 90 }],
        [2, { rpm: 1726, speed: 50 }],
      ],
    );
    // One PID per request, each with the number of ECUs that report it: the emulator takes 0-6.
    assert.ok(adapter.commands.includes('010C2') && adapter.commands.includes('01052'), adapter.commands.slice(-6).join(' '));
    assert.deepEqual(await c.readVin(), [{ ecu: 0, ok: true, value: RECORDED_VIN }]);
    await assert.rejects(c.readDtcs(), (err: ObdRequestError) => err.code === 'timeout' && /no ECU answered 03/.test(err.message));
    // The port is locked while open (another program could not interleave commands); closing frees it.
    await assert.rejects(new Elm327Client(fastClientOptions(pair.hostPath)).connect(), /in use by another program/);
    c.close();
  });

  it('gives the summary obd --port prints: what the car answered, and what it did not', async () => {
    const c = new Elm327Client(fastClientOptions(pair.hostPath));
    clients.push(c);
    const info = await c.connect();
    const summary = await readVehicleSummary(c, info.protocol.description);
    assert.equal(summary.vin, RECORDED_VIN);
    assert.equal(summary.protocol, 'ISO 15765-4 (CAN 11/500)');
    assert.deepEqual(summary.ecus, [0, 2]);
    assert.ok(
      ['0101', '010C', '010D', '0120', '0140'].every((p) => summary.supportedPids.includes(p)),
      summary.supportedPids.join(' '),
    );
    assert.deepEqual(summary.values, { coolantTemp: 90, rpm: 750, speed: 50 });
    assert.deepEqual(summary.dtcs, []);
    assert.match(summary.errors?.dtcs ?? '', /no ECU answered 03/);
    c.close();
  });
});
