/**
 * A simulated ELM327 OBD-II adapter with the car behind it, as a byte stream: host bytes go in through `write`,
 * adapter bytes come out through `onOutput`. It does no I/O itself (a pty or socket bridge pipes the bytes), and all
 * its waiting goes through an injectable clock.
 *
 * It answers as an ELM327 v1.5 does, byte for byte where the shared testdata README records an answer: echo, `\r`
 * line ends, an empty line and `>` after every answer, `SEARCHING...` on the first request after ATSP0, ISO-TP frames
 * printed raw with ATH1 or as the ELM's `014` / `0:` listing without. The ECUs behind it are `ObdEcuModel`s, so their
 * answers are those of the CAN ECU simulator.
 *
 * Choices where the real adapter is not modelled, or where the recording and a real adapter differ:
 * - ATDP ends with a space (`AUTO, ISO 15765-4 (CAN 11/500) `), as recorded; it names the protocol only once the
 *   search has found it (the recording's emulator printed it before searching).
 * - ATCAF0 answers `?`: only the auto-formatted output (CAF1) is modelled, and a driver should not rely on CAF0.
 * - LF, NUL, spaces and tabs do not interrupt a request in progress, so hosts that send `\r\n` are not STOPPED.
 * - Legacy protocols (ISO 9141-2, KWP) all use the ISO 9141-2 header bytes `48 6B <ecu>`, and the KWP/ISO bus
 *   initialisation takes `searchMs` like the search does.
 * - ATSP saves the protocol as the default that ATZ, ATWS and ATD restore (as the ELM's EEPROM does); ATTP does not.
 * - Values are read from the car when the request arrives (when it reaches the ECUs); the answer goes out `answerMs`
 *   later, in one piece. A response-count digit limits the ECU messages printed; it does not shorten the delay.
 */
import { Buffer } from 'node:buffer';
import { systemClock, type IsoTpClock } from '../can/isotp.js';
import type { VehicleState } from './drive-cycle.js';
import { ObdEcuModel, type ObdEcuModelOptions } from './obd-ecu.js';

export type Elm327Profile = 'elm327-v1.5' | 'clone-v1.5' | 'clone-v2.1';

/** The car's OBD protocol, as ATSP numbers it: CAN 11/500, 29/500, 11/250, 29/250, or ISO 9141-2, KWP slow/fast. */
export type Elm327CarProtocol = 3 | 4 | 5 | 6 | 7 | 8 | 9;

export type Elm327Fault =
  'no-data' | 'can-error' | 'buffer-full' | 'bus-init-error' | 'stopped' | 'unable-to-connect' | 'half-line' | 'garbled' | 'dropped-line';

export interface Elm327Timing {
  /** ATZ: from the command to the banner. */
  resetMs: number;
  /** ATWS. */
  warmStartMs: number;
  /** Protocol search after ATSP0, and the KWP / ISO 9141 bus initialisation. */
  searchMs: number;
  /** Per OBD request: getting the answer off the bus. */
  answerMs: number;
  /** Per AT command (and `?`); 0 answers synchronously inside `write`. */
  atMs: number;
}

export const DEFAULT_ELM327_TIMING: Readonly<Elm327Timing> = Object.freeze({ resetMs: 500, warmStartMs: 100, searchMs: 1500, answerMs: 25, atMs: 0 });

export interface Elm327EcuOptions extends Omit<ObdEcuModelOptions, 'vehicle'> {
  /** Default: the simulator's vehicle. */
  vehicle?: ObdEcuModelOptions['vehicle'];
  /**
   * 0-7 on 11-bit CAN (answers on 7E8+n), a byte on 29-bit CAN (18DAF1xx) and legacy protocols (source address).
   * Default: the list position, plus 0x10 on 29-bit and legacy.
   */
  address?: number;
  /** Fill byte of the last consecutive frame of a multi-frame answer; null: short frame. Default 0xCC. */
  padding?: number | null;
}

export interface Elm327SimulatorOptions {
  /** The car (read at each request; the simulator never steps it). Battery voltage for ATRV comes from it too. */
  vehicle: { readonly state: Readonly<VehicleState> };
  /** Default 6 (ISO 15765-4 CAN 11/500). */
  protocol?: Elm327CarProtocol;
  /** ECUs behind the adapter. Default: one engine ECU (demo VIN, `dtcs` below). */
  ecus?: readonly Elm327EcuOptions[];
  /** DTCs of the default engine ECU (ignored when `ecus` is given). */
  dtcs?: ObdEcuModelOptions['dtcs'];
  /** Default true. Off: UNABLE TO CONNECT while searching, NO DATA once the protocol is known. */
  ignition?: boolean;
  /** Default 'elm327-v1.5'. */
  profile?: Elm327Profile;
  /** Command prefixes (`ATWS`, `ATCRA` …) answered with `?`; replaces the profile's list. */
  unsupported?: readonly string[];
  /** Keeps echoing after ATE0 (which still answers OK), as some clones do. Default false. */
  stickyEcho?: boolean;
  timing?: Partial<Elm327Timing>;
  clock?: IsoTpClock;
}

export interface Elm327Settings {
  echo: boolean;
  linefeeds: boolean;
  spaces: boolean;
  headers: boolean;
  /** ATSP/ATTP setting: number 0 with auto = automatic; auto with a number = automatic, trying that one first. */
  protocol: { auto: boolean; number: number };
  /** The protocol the adapter is talking, once found or used; null before. */
  protocolFound: number | null;
  /** ATSH as given (hex digits); null: the default functional header. */
  header: string | null;
  /** ATCRA pattern (hex digits, X wildcards); null: every ECU's answer is shown. */
  receiveFilter: string | null;
}

export interface Elm327Counters {
  /** Command lines received (an empty line repeating the last request included). */
  commands: number;
  atCommands: number;
  obdRequests: number;
  /** Commands answered `?`. */
  unknownCommands: number;
  /** OBD requests cut short by a byte from the host (answered STOPPED). */
  interrupted: number;
}

export interface Elm327SimulatedEcu {
  readonly address: number;
  /** The response header as printed with ATH1 and ATS0: `7E8`, `18DAF110`, `486B10`. */
  readonly header: string;
  readonly model: ObdEcuModel;
}

/**
 * What cheap clones are known to lack, by profile: the v1.5-labelled ones are mostly complete copies of the real
 * v1.5 firmware without the device description (AT@1) and warm start (ATWS); the "v2.1" ones are older, cut-down
 * firmware under a newer label, without adaptive timing (ATAT), the CAN receive filter (ATCRA) and ATDPN either.
 */
const PROFILE_GAPS: Readonly<Record<Elm327Profile, readonly string[]>> = {
  'elm327-v1.5': [],
  'clone-v1.5': ['AT@1', 'ATWS'],
  'clone-v2.1': ['AT@1', 'ATWS', 'ATAT', 'ATCRA', 'ATDPN'],
};

const PROFILE_VERSION: Readonly<Record<Elm327Profile, string>> = {
  'elm327-v1.5': 'ELM327 v1.5',
  'clone-v1.5': 'ELM327 v1.5',
  'clone-v2.1': 'ELM327 v2.1',
};

const DEVICE_DESCRIPTION = 'OBDII to RS232 Interpreter';

/** ATDP texts by protocol number. */
const PROTOCOL_NAMES: readonly string[] = [
  'AUTO',
  'SAE J1850 PWM',
  'SAE J1850 VPW',
  'ISO 9141-2',
  'ISO 14230-4 (KWP 5BAUD)',
  'ISO 14230-4 (KWP FAST)',
  'ISO 15765-4 (CAN 11/500)',
  'ISO 15765-4 (CAN 29/500)',
  'ISO 15765-4 (CAN 11/250)',
  'ISO 15765-4 (CAN 29/250)',
  'SAE J1939 (CAN 29/250)',
  'USER1 (CAN 11/125)',
  'USER2 (CAN 11/50)',
];

type Family = 'can11' | 'can29' | 'legacy';

function familyOf(protocol: number): Family | 'j1850' | 'other-can' {
  if (protocol === 6 || protocol === 8) return 'can11';
  if (protocol === 7 || protocol === 9) return 'can29';
  if (protocol >= 3 && protocol <= 5) return 'legacy';
  if (protocol === 1 || protocol === 2) return 'j1850';
  return 'other-can';
}

/** Significant characters a command line may hold; a longer line answers `?`. */
const COMMAND_BUFFER = 64;
/** Requests carry 1-7 bytes (a CAN single frame). */
const MAX_REQUEST_BYTES = 7;
/** ISO 9141-2 response header: priority/type byte and target (the tester). */
const LEGACY_PRIORITY = 0x48;
const LEGACY_TARGET = 0x6b;
/** Legacy functional target addresses: ISO 9141-2 (68 6A F1) and KWP (C1 33 F1). */
const LEGACY_FUNCTIONAL_TARGETS: readonly number[] = [0x6a, 0x33];
/** Legacy DTC answers carry three codes per message, unused slots 00 00. */
const LEGACY_DTCS_PER_MESSAGE = 3;
/** Legacy Mode 09 answers carry four data bytes per message after the message counter. */
const LEGACY_INFO_BYTES_PER_MESSAGE = 4;

const CR = 0x0d;
const LF = 0x0a;
const PROMPT_TAIL = '\r>';
const HEX_DIGIT = '0123456789ABCDEF';
const HEX2: readonly string[] = Array.from({ length: 256 }, (_, b) => HEX_DIGIT[b >> 4]! + HEX_DIGIT[b & 15]!);
const HEX2_SPACED: readonly string[] = HEX2.map((h) => `${h} `);
/** Replacement characters for the 'garbled' fault: not hex, not a line end, not the prompt. */
const NOISE = ['Z', '#', '\u00ff'];
/** What `sendGarbage` writes by default: the kind of bytes an adapter emits while its UART powers up. */
const POWER_UP_NOISE = Uint8Array.of(0x00, 0xf8, 0x3f, 0xff, 0x80, 0xfe, 0x0c);

interface Route {
  functional: boolean;
  /** Physical requests: the ECU addressed; null with `functional` false: the header reaches no ECU. */
  address: number | null;
}

const FUNCTIONAL: Route = { functional: true, address: null };
const NOBODY: Route = { functional: false, address: null };

interface EcuSlot extends Elm327SimulatedEcu {
  readonly padding: number | null;
  readonly spacedHeader: string;
  /** Legacy: sum of the three header bytes, for the checksum. */
  readonly headerSum: number;
}

export class Elm327Simulator {
  readonly profile: Elm327Profile;
  /** The car's protocol. */
  readonly protocol: Elm327CarProtocol;

  private readonly vehicle: { readonly state: Readonly<VehicleState> };
  private readonly family: Family;
  private readonly slots: EcuSlot[];
  private readonly clock: IsoTpClock;
  private readonly timingValues: Readonly<Elm327Timing>;
  private readonly gaps: readonly string[];
  private readonly stickyEcho: boolean;
  private readonly version: string;
  private readonly listeners: Array<(bytes: Buffer) => void> = [];
  private readonly stats: Elm327Counters = { commands: 0, atCommands: 0, obdRequests: 0, unknownCommands: 0, interrupted: 0 };

  // Adapter settings (what ATZ restores).
  private echo = true;
  private linefeeds = false;
  private spaces = true;
  private headers = false;
  private protocolAuto = true;
  private protocolNumber = 0;
  /** What ATSP saved, restored by ATZ/ATWS/ATD. */
  private savedProtocol = { auto: true, number: 0 };
  private header: string | null = null;
  private route: Route = FUNCTIONAL;
  private receiveFilter: string | null = null;

  // Link state.
  private protocolFound: number | null = null;
  private foundBySearch = false;
  private busInitDone = false;
  private ignitionOn: boolean;

  // Input: the bytes not yet consumed, and the command line being assembled.
  private input = '';
  private inputAt = 0;
  private pumping = false;
  private lineEcho = '';
  private lineCommand = '';
  private lineInvalid = false;
  private lastRequest: string | null = null;

  // The answer in progress.
  private busy: 'idle' | 'at' | 'obd' = 'idle';
  private timer: unknown = null;
  private pendingBody = '';
  /** Undoes what a request in progress assumed (a search or bus init that did not complete). */
  private onInterrupted: (() => void) | null = null;

  // Fault injection.
  private silent = false;
  private extraDelayMs = 0;
  private readonly faults: Elm327Fault[] = [];
  private closed = false;

  constructor(options: Elm327SimulatorOptions) {
    this.vehicle = options.vehicle;
    this.protocol = options.protocol ?? 6;
    const family = familyOf(this.protocol);
    if (family !== 'can11' && family !== 'can29' && family !== 'legacy') {
      throw new RangeError(`Elm327Simulator: car protocol ${String(this.protocol)} is not simulated (3-9)`);
    }
    this.family = family;
    this.profile = options.profile ?? 'elm327-v1.5';
    this.version = PROFILE_VERSION[this.profile];
    this.gaps = (options.unsupported ?? PROFILE_GAPS[this.profile]).map((p) => p.replace(/\s+/g, '').toUpperCase()).filter((p) => p !== '');
    this.stickyEcho = options.stickyEcho ?? false;
    this.ignitionOn = options.ignition ?? true;
    this.clock = options.clock ?? systemClock;
    const timing = { ...DEFAULT_ELM327_TIMING, ...options.timing };
    for (const [key, value] of Object.entries(timing)) {
      if (!Number.isFinite(value) || value < 0) throw new RangeError(`Elm327Simulator: timing.${key} must be a non-negative number`);
    }
    this.timingValues = Object.freeze(timing);

    const ecuOptions = options.ecus ?? [{ dtcs: options.dtcs }];
    if (ecuOptions.length === 0) throw new RangeError('Elm327Simulator: at least one ECU');
    this.slots = ecuOptions.map((o, k) => this.makeSlot(o, k)).sort((a, b) => a.address - b.address);
    for (let k = 1; k < this.slots.length; k++) {
      if (this.slots[k]!.address === this.slots[k - 1]!.address) throw new RangeError(`Elm327Simulator: two ECUs at address ${this.slots[k]!.address}`);
    }
  }

  private makeSlot(o: Elm327EcuOptions, index: number): EcuSlot {
    const address = o.address ?? (this.family === 'can11' ? index : 0x10 + index);
    const max = this.family === 'can11' ? 7 : 0xff;
    if (!Number.isInteger(address) || address < 0 || address > max) {
      throw new RangeError(`Elm327Simulator: ECU address ${address} is not 0-${max} on protocol ${this.protocol}`);
    }
    const { address: _ownAddress, padding, vehicle, ...modelOptions } = o;
    const model = new ObdEcuModel({ ...modelOptions, vehicle: vehicle ?? this.vehicle });
    let bytes: number[];
    let header: string;
    if (this.family === 'can11') {
      header = (0x7e8 + address).toString(16).toUpperCase();
      bytes = [];
    } else {
      bytes = this.family === 'can29' ? [0x18, 0xda, 0xf1, address] : [LEGACY_PRIORITY, LEGACY_TARGET, address];
      header = bytes.map((b) => HEX2[b]).join('');
    }
    return {
      address,
      header,
      model,
      padding: padding === undefined ? 0xcc : padding,
      spacedHeader: this.family === 'can11' ? `${header} ` : bytes.map((b) => HEX2_SPACED[b]).join(''),
      headerSum: bytes.reduce((a, b) => a + b, 0),
    };
  }

  // -------------------------------------------------------------------------------------------------------------
  // Public API

  /** Bytes from the host. */
  write(chunk: Uint8Array | string): void {
    if (this.closed || this.silent) return;
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('latin1');
    if (text.length === 0) return;
    this.input = this.inputAt > 0 ? this.input.slice(this.inputAt) + text : this.input + text;
    this.inputAt = 0;
    this.pump();
  }

  /** Bytes to the host. Returns the unsubscribe function. */
  onOutput(listener: (bytes: Buffer) => void): () => void {
    this.listeners.push(listener);
    return () => {
      const at = this.listeners.indexOf(listener);
      if (at >= 0) this.listeners.splice(at, 1);
    };
  }

  /** Stops every timer; the simulator stays silent from then on. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cancelAnswer();
    this.input = '';
    this.inputAt = 0;
  }

  get timing(): Readonly<Elm327Timing> {
    return this.timingValues;
  }

  get settings(): Elm327Settings {
    return {
      echo: this.echo,
      linefeeds: this.linefeeds,
      spaces: this.spaces,
      headers: this.headers,
      protocol: { auto: this.protocolAuto, number: this.protocolNumber },
      protocolFound: this.protocolFound,
      header: this.header,
      receiveFilter: this.receiveFilter,
    };
  }

  get counters(): Elm327Counters {
    return { ...this.stats };
  }

  /** The ECUs behind the adapter, in address order (their models can be changed, e.g. DTCs set). */
  get ecus(): readonly Elm327SimulatedEcu[] {
    return this.slots.map(({ address, header, model }) => ({ address, header, model }));
  }

  get ignition(): boolean {
    return this.ignitionOn;
  }

  setIgnition(on: boolean): void {
    this.ignitionOn = on;
  }

  /** A hung adapter: drops the answer in progress and all input until switched back. */
  setSilent(on: boolean): void {
    this.silent = on;
    if (!on) return;
    this.cancelAnswer();
    this.input = '';
    this.inputAt = 0;
    this.resetLine();
  }

  /** Writes noise to the host now (line noise, a UART powering up). */
  sendGarbage(bytes: Uint8Array | string = POWER_UP_NOISE): void {
    if (this.closed) return;
    this.emitRaw(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : Buffer.from(bytes));
  }

  /** The next OBD request (one per call, in order) gets this fault instead of, or on top of, its answer. */
  failNext(kind: Elm327Fault): void {
    this.faults.push(kind);
  }

  /** Extra delay on every answer from now on; 0 to stop. */
  slowBy(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError('Elm327Simulator: slowBy needs a non-negative number of ms');
    this.extraDelayMs = ms;
  }

  // -------------------------------------------------------------------------------------------------------------
  // Input

  private pump(): void {
    // Listeners may write from inside an answer; the outer loop picks their bytes up in order.
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.inputAt < this.input.length && !this.closed && !this.silent) {
        if (this.busy === 'at') break;
        if (this.busy === 'obd') {
          if (!this.significantInputWaiting()) break;
          this.interrupt();
          continue;
        }
        const c = this.input.charCodeAt(this.inputAt++);
        if (c === CR) this.endOfLine();
        else this.collect(c);
      }
      if (this.inputAt >= this.input.length) {
        this.input = '';
        this.inputAt = 0;
      }
    } finally {
      this.pumping = false;
    }
  }

  /** A byte that would interrupt a request: anything the ELM does not ignore in a command line. */
  private significantInputWaiting(): boolean {
    for (let k = this.inputAt; k < this.input.length; k++) {
      const c = this.input.charCodeAt(k);
      if (c !== LF && c !== 0 && c !== 0x20 && c !== 0x09) return true;
    }
    return false;
  }

  private collect(c: number): void {
    if (c === LF || c === 0) return;
    // The echo repeats the line as typed (bounded, whatever the host sends).
    if (this.lineEcho.length < 2 * COMMAND_BUFFER) this.lineEcho += String.fromCharCode(c);
    if (c === 0x20 || c === 0x09) return;
    if (c < 0x20 || c > 0x7e || this.lineCommand.length >= COMMAND_BUFFER) {
      this.lineInvalid = true;
      return;
    }
    this.lineCommand += String.fromCharCode(c >= 0x61 && c <= 0x7a ? c - 0x20 : c);
  }

  private resetLine(): void {
    this.lineEcho = '';
    this.lineCommand = '';
    this.lineInvalid = false;
  }

  private endOfLine(): void {
    const command = this.lineCommand;
    const echoed = this.echo ? `${this.lineEcho}\r` : '';
    const invalid = this.lineInvalid;
    this.resetLine();
    this.stats.commands++;
    if (invalid) return this.unknown(echoed, command.startsWith('AT'));
    if (command === '') {
      // A bare CR repeats the last request.
      if (this.lastRequest === null) return this.unknown(echoed, false);
      return this.obdRequest(this.lastRequest, echoed);
    }
    const isAt = command.startsWith('AT');
    for (const gap of this.gaps) if (command.startsWith(gap)) return this.unknown(echoed, isAt);
    if (isAt) this.atCommand(command, echoed);
    else this.obdRequest(command, echoed);
  }

  private unknown(echoed: string, isAt: boolean): void {
    if (isAt) this.stats.atCommands++;
    this.stats.unknownCommands++;
    this.answer('at', echoed, '', '?\r', this.timingValues.atMs);
  }

  // -------------------------------------------------------------------------------------------------------------
  // Answers and timing

  /**
   * Sends `now` at once, then `body` and the prompt after `delayMs` (plus any slowBy). With no delay everything goes
   * out together, synchronously.
   */
  private answer(kind: 'at' | 'obd', echoed: string, now: string, body: string, delayMs: number, onInterrupted: (() => void) | null = null): void {
    const delay = delayMs + this.extraDelayMs;
    if (delay <= 0) {
      this.emit(echoed + now + body + PROMPT_TAIL);
      return;
    }
    if (echoed !== '' || now !== '') this.emit(echoed + now);
    this.busy = kind;
    this.pendingBody = body;
    this.onInterrupted = onInterrupted;
    this.timer = this.clock.setTimeout(this.answerDue, delay);
  }

  private readonly answerDue = (): void => {
    this.timer = null;
    const body = this.pendingBody;
    this.pendingBody = '';
    this.onInterrupted = null;
    this.busy = 'idle';
    this.emit(body + PROMPT_TAIL);
    this.pump();
  };

  private interrupt(): void {
    const undo = this.onInterrupted;
    this.cancelAnswer();
    undo?.();
    this.stats.interrupted++;
    this.emit(`STOPPED\r${PROMPT_TAIL}`);
  }

  private cancelAnswer(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.pendingBody = '';
    this.onInterrupted = null;
    this.busy = 'idle';
  }

  private emit(text: string): void {
    if (this.closed || this.silent) return;
    this.emitRaw(Buffer.from(this.linefeeds ? text.replace(/\r/g, '\r\n') : text, 'latin1'));
  }

  private emitRaw(bytes: Buffer): void {
    // A copy only when a listener could unsubscribe another one mid-loop.
    const listeners = this.listeners.length > 1 ? [...this.listeners] : this.listeners;
    for (let k = 0; k < listeners.length; k++) listeners[k]!(bytes);
  }

  // -------------------------------------------------------------------------------------------------------------
  // AT commands

  private atCommand(command: string, echoed: string): void {
    this.stats.atCommands++;
    const arg = command.slice(2);
    const atMs = this.timingValues.atMs;
    const ok = (): void => this.answer('at', echoed, '', 'OK\r', atMs);
    const reply = (line: string): void => this.answer('at', echoed, '', `${line}\r`, atMs);
    switch (arg) {
      case 'Z':
        this.restoreDefaults();
        return this.answer('at', echoed, '', `\r\r${this.version}\r`, this.timingValues.resetMs);
      case 'WS':
        this.restoreDefaults();
        return this.answer('at', echoed, '', `\r\r${this.version}\r`, this.timingValues.warmStartMs);
      case 'D':
        this.restoreDefaults();
        return ok();
      case 'E0':
        if (!this.stickyEcho) this.echo = false;
        return ok();
      case 'E1':
        this.echo = true;
        return ok();
      case 'L0':
      case 'L1':
        this.linefeeds = arg === 'L1';
        return ok();
      case 'S0':
      case 'S1':
        this.spaces = arg === 'S1';
        return ok();
      case 'H0':
      case 'H1':
        this.headers = arg === 'H1';
        return ok();
      case 'AT0':
      case 'AT1':
      case 'AT2':
      case 'M0':
      case 'M1':
      case 'CFC0':
      case 'CFC1':
      case 'CAF1':
      case 'AL':
      case 'NL':
        // Accepted; they change nothing the simulated car would show.
        return ok();
      case 'AR':
      case 'CRA':
        this.receiveFilter = null;
        return ok();
      case 'PC':
        // The link is closed: a legacy bus needs its initialisation again.
        this.busInitDone = false;
        return ok();
      case 'DP':
        return reply(`${this.describeProtocol()} `);
      case 'DPN':
        return reply(this.protocolNumberText());
      case 'RV':
        return reply(`${this.vehicle.state.batteryVoltageV.toFixed(1)}V`);
      case 'I':
        return reply(this.version);
      case '@1':
        return reply(DEVICE_DESCRIPTION);
    }
    let m: RegExpExecArray | null;
    if (/^ST[0-9A-F]{2}$/.test(arg)) return ok();
    if ((m = /^(SP|TP)(A?)([0-9A-C])$/.exec(arg))) {
      const number = parseInt(m[3]!, 16);
      this.protocolAuto = m[2] === 'A' || number === 0;
      this.protocolNumber = number;
      if (m[1] === 'SP') this.savedProtocol = { auto: this.protocolAuto, number };
      this.closeLink();
      return ok();
    }
    if ((m = /^SH([0-9A-F]{3}|[0-9A-F]{6}|[0-9A-F]{8})$/.exec(arg))) {
      this.header = m[1]!;
      this.route = this.routeFor(this.header);
      return ok();
    }
    if ((m = /^CRA([0-9A-FX]{3}|[0-9A-FX]{8})$/.exec(arg))) {
      this.receiveFilter = m[1]!;
      return ok();
    }
    return this.unknown(echoed, false);
  }

  private restoreDefaults(): void {
    this.echo = true;
    this.linefeeds = false;
    this.spaces = true;
    this.headers = false;
    this.protocolAuto = this.savedProtocol.auto;
    this.protocolNumber = this.savedProtocol.number;
    this.header = null;
    this.route = FUNCTIONAL;
    this.receiveFilter = null;
    this.lastRequest = null;
    this.closeLink();
  }

  private closeLink(): void {
    this.protocolFound = null;
    this.foundBySearch = false;
    this.busInitDone = false;
  }

  private describeProtocol(): string {
    if (this.protocolFound !== null) {
      return this.foundBySearch ? `AUTO, ${PROTOCOL_NAMES[this.protocolFound]}` : PROTOCOL_NAMES[this.protocolFound]!;
    }
    if (!this.protocolAuto) return PROTOCOL_NAMES[this.protocolNumber]!;
    return this.protocolNumber === 0 ? 'AUTO' : `AUTO, ${PROTOCOL_NAMES[this.protocolNumber]}`;
  }

  private protocolNumberText(): string {
    if (this.protocolFound !== null) return (this.foundBySearch ? 'A' : '') + HEX_DIGIT[this.protocolFound];
    return (this.protocolAuto ? 'A' : '') + HEX_DIGIT[this.protocolNumber];
  }

  /** Which ECUs an ATSH header reaches, on the car's protocol. */
  private routeFor(header: string): Route {
    const value = parseInt(header, 16);
    if (this.family === 'can11') {
      const id = parseInt(header.slice(-3), 16) & 0x7ff;
      if (id === 0x7df) return FUNCTIONAL;
      return id >= 0x7e0 && id <= 0x7e7 ? { functional: false, address: id - 0x7e0 } : NOBODY;
    }
    if (this.family === 'can29') {
      // Six digits are the low three bytes; the priority byte stays 18.
      if (header.length === 3) return NOBODY;
      const id = header.length === 8 ? value : 0x18 * 0x1000000 + value;
      if (id === 0x18db33f1) return FUNCTIONAL;
      return Math.floor(id / 0x10000) === 0x18da && (id & 0xff) === 0xf1 ? { functional: false, address: (id >> 8) & 0xff } : NOBODY;
    }
    if (header.length !== 6) return NOBODY;
    const target = (value >> 8) & 0xff;
    return LEGACY_FUNCTIONAL_TARGETS.includes(target) ? FUNCTIONAL : { functional: false, address: target };
  }

  // -------------------------------------------------------------------------------------------------------------
  // OBD requests

  private obdRequest(command: string, echoed: string): void {
    const n = command.length;
    let valid = n >= 2 && n <= 2 * MAX_REQUEST_BYTES + 1;
    for (let k = 0; valid && k < n; k++) valid = isHexDigit(command.charCodeAt(k));
    // An odd last digit is the response count (1-F).
    const count = n % 2 === 1 ? parseInt(command[n - 1]!, 16) : 0;
    if (!valid || (n % 2 === 1 && count === 0)) return this.unknown(echoed, false);
    this.stats.obdRequests++;
    this.lastRequest = command;
    const request = new Uint8Array(n >> 1);
    for (let k = 0; k < request.length; k++) request[k] = (hexValue(command.charCodeAt(2 * k)) << 4) | hexValue(command.charCodeAt(2 * k + 1));

    const t = this.timingValues;
    let delay = t.answerMs;
    let now = '';
    let body: string;
    let undo: (() => void) | null = null;
    if (this.protocolFound === null && this.protocolAuto) {
      now = 'SEARCHING...\r';
      delay += t.searchMs;
      if (this.ignitionOn) {
        this.protocolFound = this.protocol;
        this.foundBySearch = true;
        this.busInitDone = true;
        undo = () => this.closeLink();
        body = this.ecuAnswers(request, count);
      } else {
        body = 'UNABLE TO CONNECT\r';
      }
    } else {
      const protocol = this.protocolFound ?? this.protocolNumber;
      if (protocol !== this.protocol) {
        const family = familyOf(protocol);
        body = family === 'legacy' ? 'BUS INIT: ...ERROR\r' : family === 'j1850' ? 'NO DATA\r' : 'CAN ERROR\r';
      } else if (this.family === 'legacy' && !this.busInitDone) {
        delay += t.searchMs;
        if (this.ignitionOn) {
          this.protocolFound = protocol;
          this.busInitDone = true;
          undo = () => {
            this.busInitDone = false;
          };
          body = `BUS INIT: ...OK\r${this.ecuAnswers(request, count)}`;
        } else {
          body = 'BUS INIT: ...ERROR\r';
        }
      } else {
        this.protocolFound = protocol;
        body = this.ignitionOn ? this.ecuAnswers(request, count) : 'NO DATA\r';
      }
    }
    const fault = this.faults.shift();
    if (fault !== undefined) body = applyFault(fault, body);
    this.answer('obd', echoed, now, body, delay, undo);
  }

  /** The ECUs' answers to a request as the adapter prints them, or NO DATA. */
  private ecuAnswers(request: Uint8Array, count: number): string {
    // Pre-CAN ECUs take one PID per request; the adapter hears nothing back.
    if (this.family === 'legacy' && request[0] === 0x01 && request.length > 2) return 'NO DATA\r';
    const route = this.route;
    let out = '';
    let printed = 0;
    for (const slot of this.slots) {
      if (!route.functional && slot.address !== route.address) continue;
      // Every ECU addressed gets the request (and acts on it), whether or not its answer is printed.
      const response = slot.model.respond(request, route.functional);
      if (response === null || (count > 0 && printed >= count) || !this.passesFilter(slot)) continue;
      if (this.family === 'legacy') {
        for (const message of legacyMessages(response)) {
          if (count > 0 && printed >= count) break;
          out += this.legacyLine(slot, message);
          printed++;
        }
      } else {
        out += this.canLines(slot, response);
        printed++;
      }
    }
    return out === '' ? 'NO DATA\r' : out;
  }

  private passesFilter(slot: EcuSlot): boolean {
    const pattern = this.receiveFilter;
    if (pattern === null || this.family === 'legacy') return true;
    if (pattern.length !== slot.header.length) return false;
    for (let k = 0; k < pattern.length; k++) if (pattern[k] !== 'X' && pattern[k] !== slot.header[k]) return false;
    return true;
  }

  /** One ECU's message on CAN: ISO-TP frames with ATH1, the ELM's own listing without. */
  private canLines(slot: EcuSlot, data: Uint8Array): string {
    const hex = this.spaces ? HEX2_SPACED : HEX2;
    const n = data.length;
    if (!this.headers) {
      if (n <= 7) return `${bytesText(hex, data, 0, n)}\r`;
      // Byte count (3 digits), then frame lines: 6 bytes in frame 0, 7 after, the index wrapping after F.
      let out = `${HEX_DIGIT[n >> 8]}${HEX2[n & 0xff]}\r`;
      const colon = this.spaces ? ': ' : ':';
      for (let at = 0, index = 0; at < n; index++) {
        const capacity = index === 0 ? 6 : 7;
        const end = Math.min(n, at + capacity);
        out += `${HEX_DIGIT[index & 15]}${colon}${bytesText(hex, data, at, end)}${padText(hex, slot.padding, capacity - (end - at))}\r`;
        at = end;
      }
      return out;
    }
    const header = this.spaces ? slot.spacedHeader : slot.header;
    // Single frames print their length byte and data only, as recorded.
    if (n <= 7) return `${header}${hex[n]}${bytesText(hex, data, 0, n)}\r`;
    let out = `${header}${hex[0x10 | (n >> 8)]}${hex[n & 0xff]}${bytesText(hex, data, 0, 6)}\r`;
    for (let at = 6, seq = 1; at < n; seq = (seq + 1) & 15) {
      const end = Math.min(n, at + 7);
      out += `${header}${hex[0x20 | seq]}${bytesText(hex, data, at, end)}${padText(hex, slot.padding, 7 - (end - at))}\r`;
      at = end;
    }
    return out;
  }

  /** One legacy message: `48 6B 10 <data> <checksum>` with ATH1, the data alone without. */
  private legacyLine(slot: EcuSlot, data: Uint8Array): string {
    const hex = this.spaces ? HEX2_SPACED : HEX2;
    const text = bytesText(hex, data, 0, data.length);
    if (!this.headers) return `${text}\r`;
    let sum = slot.headerSum;
    for (const b of data) sum += b;
    return `${this.spaces ? slot.spacedHeader : slot.header}${text}${hex[sum & 0xff]}\r`;
  }
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46);
}

/** Value of an upper-case hex digit's character code. */
function hexValue(c: number): number {
  return c <= 0x39 ? c - 0x30 : c - 0x37;
}

function bytesText(hex: readonly string[], data: Uint8Array, from: number, to: number): string {
  let out = '';
  for (let k = from; k < to; k++) out += hex[data[k]!];
  return out;
}

function padText(hex: readonly string[], padding: number | null, count: number): string {
  return padding === null || count <= 0 ? '' : hex[padding]!.repeat(count);
}

/**
 * A CAN-style answer as pre-CAN ECUs send it: DTCs without the count byte, three per message padded with 00 00;
 * Mode 09 items split into 4-byte messages behind a message counter (the VIN preceded by three 00 bytes to fill 20).
 */
function legacyMessages(response: Uint8Array): Uint8Array[] {
  const sid = response[0]!;
  if ((sid === 0x43 || sid === 0x47 || sid === 0x4a) && response.length >= 2) {
    const codes = response.subarray(2);
    const out: Uint8Array[] = [];
    const perMessage = 2 * LEGACY_DTCS_PER_MESSAGE;
    for (let at = 0; at === 0 || at < codes.length; at += perMessage) {
      const message = new Uint8Array(1 + perMessage);
      message[0] = sid;
      message.set(codes.subarray(at, at + perMessage), 1);
      out.push(message);
    }
    return out;
  }
  if (sid === 0x49 && response.length >= 3) {
    const infoType = response[1]!;
    if (infoType === 0x00) return [Uint8Array.from([0x49, 0x00, 0x01, ...response.subarray(2)])];
    let items = Array.from(response.subarray(3));
    if (infoType === 0x02) items = [0, 0, 0, ...items];
    const out: Uint8Array[] = [];
    for (let at = 0, counter = 1; at < items.length; at += LEGACY_INFO_BYTES_PER_MESSAGE, counter++) {
      const chunk = items.slice(at, at + LEGACY_INFO_BYTES_PER_MESSAGE);
      while (chunk.length < LEGACY_INFO_BYTES_PER_MESSAGE) chunk.push(0);
      out.push(Uint8Array.from([0x49, infoType, counter & 0xff, ...chunk]));
    }
    return out;
  }
  return [response];
}

/** The answer body (lines ending in `\r`) as the fault makes it. */
function applyFault(kind: Elm327Fault, body: string): string {
  switch (kind) {
    case 'no-data':
      return 'NO DATA\r';
    case 'can-error':
      return 'CAN ERROR\r';
    case 'bus-init-error':
      return 'BUS INIT: ...ERROR\r';
    case 'stopped':
      return 'STOPPED\r';
    case 'unable-to-connect':
      return 'UNABLE TO CONNECT\r';
    case 'buffer-full': {
      // The adapter's output buffer overflowed after the first line.
      const first = body.indexOf('\r');
      return `${first > 0 ? body.slice(0, first + 1) : ''}BUFFER FULL\r`;
    }
    case 'half-line': {
      // Cut in the middle line, between the two digits of its last byte; nothing after it but the prompt.
      const lines = body.split('\r').slice(0, -1);
      const k = lines.length >> 1;
      const cut = (lines[k] ?? '').trimEnd();
      return `${[...lines.slice(0, k), cut.slice(0, Math.max(0, cut.length - 1))].join('\r')}\r`;
    }
    case 'garbled': {
      const digits: number[] = [];
      for (let k = 0; k < body.length; k++) if (isHexDigit(body.charCodeAt(k))) digits.push(k);
      const chars = body.split('');
      for (let j = 0; j < NOISE.length && digits.length > 0; j++) chars[digits[Math.floor(((j + 1) * digits.length) / (NOISE.length + 1))]!] = NOISE[j]!;
      return chars.join('');
    }
    case 'dropped-line': {
      const lines = body.split('\r').slice(0, -1);
      lines.splice(lines.length > 1 ? 1 : 0, 1);
      return lines.map((l) => `${l}\r`).join('');
    }
  }
}
