/**
 * OBD-II through an ELM327-compatible adapter on a serial port: the same questions as ObdCanClient (the ObdClient
 * interface), the same J1979 module for building requests and decoding answers.
 *
 * Initialisation is what real adapters need: a reset (ATZ, its banner giving the version), echo and linefeeds off,
 * spaces off (fewer bytes on a slow line), headers on (to tell ECUs apart), adaptive timing, the protocol (automatic
 * or configured), one 01 00 to make the adapter find the car, then ATDPN for the protocol it found. Optional commands
 * a clone lacks (`?`) are done without. Two capabilities differ between adapters and are tried once rather than
 * assumed: the response-count digit (`010C1`, ELM v1.3+: the adapter answers as soon as that many ECUs have, instead
 * of waiting out its timeout) and multi-PID requests (`010C0D05`, CAN only, not every implementation has them).
 *
 * `connect()` makes one attempt and reports why it failed (the CLI); `start()` keeps the adapter connected for the
 * daemon: when it is unplugged, or stops answering, the port is closed and reopened with backoff, and re-initialised.
 * Requests made meanwhile wait a bounded time for it, then fail with code 'adapter'; nothing else is affected.
 */
import { ElmLinkError, ElmSerialLink, type ElmLinkCounters } from './elm327-link.js';
import {
  ElmResponseError,
  expectOk,
  parseElmResponse,
  parseElmVersion,
  parseProtocolDescription,
  parseProtocolNumber,
  parseVoltage,
  type ElmMessage,
  type ElmProtocol,
  type ProtocolFamily,
} from './elm327-response.js';
import { checkPids, ObdRequestError, type EcuAnswer, type EcuPidReadings, type ObdEcuInfo, type ObdRequestOptions } from './can-client.js';
import type { ObdClient } from './client.js';
import {
  MAX_PIDS_PER_REQUEST,
  MODE01_PIDS,
  OBD_SERVICE,
  ObdNegativeResponse,
  SUPPORTED_PID_BLOCKS,
  VEHICLE_INFO,
  buildClearDtcsRequest,
  buildRequest,
  nextSupportedPidBlock,
  parseDtcResponse,
  parseMode01Response,
  parseNegativeResponse,
  parseVinResponse,
  supportedPidsFromBitmap,
  type DtcService,
} from './j1979.js';

export interface Elm327ClientOptions {
  /** Serial port: `/dev/ttyUSB0`, `/dev/rfcomm0`, `/dev/serial/by-id/...`. */
  port: string;
  /** Fixed baud rate; unset: probed (38400, 9600, 115200, …). */
  baudRate?: number;
  /** 'auto' (ATSP0, default) or an ELM protocol number 1-12 (6 = ISO 15765-4 CAN 11-bit 500 kbit/s). */
  protocol?: 'auto' | number;
  timeouts?: {
    /** AT commands (ms). Default 2000. */
    atMs?: number;
    /** ATZ, whose banner comes after the adapter's self-test (ms). Default 5000. */
    resetMs?: number;
    /** OBD requests once the protocol is known (ms). Default 5000. */
    requestMs?: number;
    /** The first request, during which the adapter searches the car's protocol (ms). Default 30000. */
    searchMs?: number;
    /** Each baud rate tried (ms). Default 1000. */
    probeMs?: number;
  };
  /** Reopening after a loss: first wait, doubling up to the cap (ms). Defaults 500 and 30000. */
  reconnect?: { initialMs?: number; maxMs?: number };
  /** Commands in a row without a prompt before the adapter counts as gone. Default 2. */
  maxSilentCommands?: number;
  /** With `start()`, how long requests wait for the adapter to come (back) before failing with 'adapter' (ms). Default 10000. */
  readyWaitMs?: number;
  /** Baud rates to probe, in order. */
  baudRates?: readonly number[];
}

export type Elm327State = 'idle' | 'connecting' | 'ready' | 'waiting' | 'closed';

export type Elm327ErrorCode =
  /** The port is missing, or may not be opened. */
  | 'no-port'
  | 'port-denied'
  /** Nothing on the port answers like an ELM327. */
  | 'no-adapter'
  /** The adapter answers, the car does not (ignition off, not plugged in, unsupported protocol). */
  | 'no-vehicle'
  /** The adapter refused a command it must have, or went away during initialisation. */
  | 'init-failed'
  | 'aborted'
  | 'closed';

export class Elm327Error extends Error {
  override readonly name = 'Elm327Error';
  constructor(
    readonly code: Elm327ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What initialisation learnt about the adapter and the car. */
export interface Elm327Info {
  port: string;
  baudRate: number;
  /** `ELM327`, or null when the banner had only a version. */
  device: string | null;
  /** `1.5`, `2.1`. */
  version: string;
  protocol: ElmProtocol;
  /** ATH1 accepted: answers carry the ECU's header. */
  headers: boolean;
  /** The adapter honours the response-count digit. */
  responseCount: boolean;
  /** Mode 01 requests carry up to 6 PIDs; otherwise one. */
  multiPid: boolean;
  /** ATRV, when the adapter has it. */
  voltage: number | null;
}

export interface Elm327Counters {
  /** OBD requests sent (AT commands not counted). */
  requests: number;
  /** One per request: what the poller's budget counts as our frames. */
  framesSent: number;
  /** ECU messages received. */
  framesReceived: number;
  /** Sessions started (the first connection and every reconnection). */
  connects: number;
  /** Times the adapter went away (unplugged, or silent). */
  losses: number;
  link: ElmLinkCounters;
}

interface EcuRecord {
  ecu: number;
  supported: Set<number>;
}

type StateListener = (state: Elm327State, detail: { error?: Error; info?: Elm327Info }) => void;

/** Messages of one answer, per ECU, in order of ECU address. */
type EcuMessages = Map<number, Uint8Array[]>;

export class Elm327Client implements ObdClient {
  readonly port: string;
  private readonly link: ElmSerialLink;
  private readonly protocolSetting: 'auto' | number;
  private readonly atMs: number;
  private readonly resetMs: number;
  private readonly requestMs: number;
  private readonly searchMs: number;
  private readonly reconnectInitialMs: number;
  private readonly reconnectMaxMs: number;
  private readonly maxSilent: number;
  private readonly readyWaitMs: number;

  private currentState: Elm327State = 'idle';
  private adapter: Elm327Info | null = null;
  private family: ProtocolFamily | undefined = undefined;
  /** What initialisation found the adapter can do (see Elm327Info). */
  private headers = true;
  private responseCount = false;
  private multiPid = false;
  private readonly records = new Map<number, EcuRecord>();
  private silentCommands = 0;
  private lastError: Error | null = null;
  private running = false;
  private closed = false;
  private queueTail: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Set<StateListener>();
  private readonly readyWaiters = new Set<() => void>();
  /** Resolves the daemon loop's wait when the adapter is lost. */
  private onLoss: (() => void) | null = null;
  private loopStop: AbortController | null = null;
  private backoffTimer: ReturnType<typeof setTimeout> | null = null;
  private wakeLoop: (() => void) | null = null;
  private readonly stats = { requests: 0, framesSent: 0, framesReceived: 0, connects: 0, losses: 0 };

  constructor(options: Elm327ClientOptions) {
    this.port = options.port;
    const t = options.timeouts ?? {};
    this.atMs = positive('timeouts.atMs', t.atMs ?? 2000);
    this.resetMs = positive('timeouts.resetMs', t.resetMs ?? 5000);
    this.requestMs = positive('timeouts.requestMs', t.requestMs ?? 5000);
    this.searchMs = positive('timeouts.searchMs', t.searchMs ?? 30000);
    this.reconnectInitialMs = positive('reconnect.initialMs', options.reconnect?.initialMs ?? 500);
    this.reconnectMaxMs = positive('reconnect.maxMs', options.reconnect?.maxMs ?? 30000);
    this.maxSilent = positive('maxSilentCommands', options.maxSilentCommands ?? 2);
    this.readyWaitMs = positive('readyWaitMs', options.readyWaitMs ?? 10000);
    const protocol = options.protocol ?? 'auto';
    if (protocol !== 'auto' && !(Number.isInteger(protocol) && protocol >= 1 && protocol <= 12)) {
      throw new RangeError(`Elm327Client: protocol must be 'auto' or 1-12, got ${String(protocol)}`);
    }
    this.protocolSetting = protocol;
    this.link = new ElmSerialLink({
      path: options.port,
      ...(options.baudRate !== undefined ? { baudRate: options.baudRate } : {}),
      ...(options.baudRates !== undefined ? { baudRates: options.baudRates } : {}),
      probeTimeoutMs: positive('timeouts.probeMs', t.probeMs ?? 1000),
    });
    this.link.onDisconnect((err) => this.lose(err));
  }

  get state(): Elm327State {
    return this.currentState;
  }

  /** What the last initialisation found; null before the first one succeeded. */
  get info(): Elm327Info | null {
    return this.adapter;
  }

  /** Why the adapter is not ready, when it is not. */
  get error(): Error | null {
    return this.lastError;
  }

  get counters(): Elm327Counters {
    return { ...this.stats, link: this.link.counters };
  }

  get ecus(): ObdEcuInfo[] {
    return [...this.records.values()]
      .sort((a, b) => a.ecu - b.ecu)
      .map((r) => ({ ...this.ecuIds(r.ecu), ecu: r.ecu, supportedPids: [...r.supported].sort((a, b) => a - b), singlePidOnly: !this.multiPid }));
  }

  isSinglePidOnly(): boolean {
    return !this.multiPid;
  }

  /** State changes, with the error that caused a loss or a failed attempt. Returns an unsubscribe. */
  onStateChange(listener: StateListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** One attempt: open the port, initialise the adapter, find the car's ECUs. Rejects with an Elm327Error. */
  async connect(signal?: AbortSignal): Promise<Elm327Info> {
    if (this.closed) throw new Elm327Error('closed', 'ELM327 client closed');
    if (this.currentState === 'ready' && this.adapter) return this.adapter;
    return this.attempt(signal);
  }

  /** Keeps the adapter connected until `close()`: connects, and after any loss or failure reconnects with backoff. */
  start(): void {
    if (this.running || this.closed) return;
    this.running = true;
    this.loopStop = new AbortController();
    void this.keepConnected(this.loopStop.signal);
  }

  /** Closes the port and stops reconnecting; requests in flight and waiting reject with 'closed'. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.running = false;
    this.loopStop?.abort();
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.wakeLoop?.();
    this.onLoss?.();
    this.setState('closed', {});
    for (const wake of this.readyWaiters) wake();
    void this.link.close();
  }

  // ---- ObdClient ----

  /** 01 00 (and 01 20, 01 40, … as the bitmaps say): the ECUs and their PIDs. */
  discover(options: { signal?: AbortSignal } = {}): Promise<ObdEcuInfo[]> {
    return this.serial(options.signal, async () => {
      await this.whenReady(options.signal);
      await this.findEcus(options.signal);
      return this.ecus;
    });
  }

  async readPids(pids: readonly number[], options: ObdRequestOptions = {}): Promise<EcuPidReadings[]> {
    // async: a bad list rejects like any other failure, before the request queue.
    const list = checkPids(pids);
    return this.serial(options.signal, async () => {
      await this.whenReady(options.signal);
      const out = new Map<number, EcuPidReadings>();
      let answered = false;
      let size = this.multiPid ? MAX_PIDS_PER_REQUEST : 1;
      let failure: ObdRequestError | null = null;
      for (let k = 0; k < list.length;) {
        const chunk = list.slice(k, k + size);
        let result: 'answered' | 'silent' | 'fallback';
        try {
          result = await this.readChunk(chunk, options, out);
        } catch (err) {
          // One garbled or refused answer costs its own PIDs, not the others'; a lost adapter ends the read.
          if (!(err instanceof ObdRequestError) || err.code === 'adapter' || err.code === 'closed' || err.code === 'aborted') throw err;
          failure = err;
          this.noteChunkFailure(chunk, options, out, err);
          k += chunk.length;
          continue;
        }
        if (result === 'fallback') {
          // An ECU refused several PIDs in one request (NRC 0x12): from now on, one at a time.
          this.setMultiPid(false);
          size = 1;
          continue;
        }
        answered = result === 'answered' || answered;
        k += chunk.length;
      }
      if (!answered) {
        if (failure) throw failure;
        const who = options.ecu === undefined ? 'no ECU answered' : `ECU ${options.ecu} did not answer`;
        throw new ObdRequestError('timeout', `${who} 01 ${hex(list, ' ')}`, options.ecu === undefined ? {} : { ecu: options.ecu });
      }
      return [...out.values()].sort((a, b) => a.ecu - b.ecu);
    });
  }

  readDtcs(service: DtcService = OBD_SERVICE.storedDtcs, options: ObdRequestOptions = {}): Promise<EcuAnswer<string[]>[]> {
    if (service !== OBD_SERVICE.storedDtcs && service !== OBD_SERVICE.pendingDtcs && service !== OBD_SERVICE.permanentDtcs) {
      return Promise.reject(new ObdRequestError('invalid-request', `${hex([service], '')} is not a DTC service (03, 07, 0A)`));
    }
    return this.serviceRequest(buildRequest(service), options, (m) => {
      const r = parseDtcResponse(service, m, { countByte: this.family !== 'legacy' });
      return r instanceof ObdNegativeResponse ? r : r.codes;
    });
  }

  /** Mode 04. Only ever on purpose: it erases what a workshop or an inspection needs. */
  clearDtcs(options: ObdRequestOptions = {}): Promise<EcuAnswer<true>[]> {
    return this.serviceRequest(buildClearDtcsRequest(), options, (m) => {
      const negative = parseNegativeResponse(m);
      if (negative) return negative;
      if (m[0] !== 0x44) throw new ObdRequestError('malformed', `not a Mode 04 answer: ${hex(m, ' ')}`);
      return true as const;
    });
  }

  readVin(options: ObdRequestOptions = {}): Promise<EcuAnswer<string>[]> {
    return this.serviceRequest(buildRequest(OBD_SERVICE.vehicleInfo, [VEHICLE_INFO.vin]), options, parseVinResponse);
  }

  // ---- connection ----

  private async keepConnected(signal: AbortSignal): Promise<void> {
    let wait = this.reconnectInitialMs;
    while (!signal.aborted) {
      try {
        await this.attempt(signal);
        wait = this.reconnectInitialMs;
        await new Promise<void>((resolve) => {
          this.onLoss = resolve;
          if (this.currentState !== 'ready' || signal.aborted) resolve();
        });
        this.onLoss = null;
      } catch {
        // attempt() has recorded the error and told the listeners.
      }
      if (signal.aborted) break;
      this.setState('waiting', this.lastError ? { error: this.lastError } : {});
      await new Promise<void>((resolve) => {
        this.wakeLoop = resolve;
        this.backoffTimer = setTimeout(resolve, wait);
      });
      this.backoffTimer = null;
      this.wakeLoop = null;
      wait = Math.min(wait * 2, this.reconnectMaxMs);
    }
  }

  private async attempt(signal: AbortSignal | undefined): Promise<Elm327Info> {
    this.stats.connects++;
    this.setState('connecting', {});
    try {
      const info = await this.initialise(signal);
      this.adapter = info;
      this.lastError = null;
      this.silentCommands = 0;
      this.setState('ready', { info });
      for (const wake of this.readyWaiters) wake();
      return info;
    } catch (err) {
      const error = this.closed ? new Elm327Error('closed', 'ELM327 client closed') : toElm327Error(err, this.port);
      this.lastError = error;
      await this.link.close();
      if (!this.closed) this.setState('idle', { error });
      throw error;
    }
  }

  private async initialise(signal: AbortSignal | undefined): Promise<Elm327Info> {
    const baudRate = await this.link.open(signal);
    // ATZ's banner carries the version; a clone that garbles it is asked ATI.
    const banner = await this.command('ATZ', this.resetMs, signal);
    let version;
    try {
      version = parseElmVersion(banner, 'ATZ');
    } catch {
      version = parseElmVersion(await this.command('ATI', this.atMs, signal), 'ATI');
    }
    await this.setting('ATE0', signal, true);
    await this.setting('ATL0', signal, false);
    await this.setting('ATS0', signal, false);
    const headers = await this.setting('ATH1', signal, false);
    await this.setting('ATAT1', signal, false);
    const sp = this.protocolSetting === 'auto' ? 'ATSP0' : `ATSP${this.protocolSetting.toString(16).toUpperCase()}`;
    await this.setting(sp, signal, true);
    this.headers = headers;
    this.family = undefined;

    // The first request makes the adapter find the car (SEARCHING...): the one slow command.
    const searchRaw = await this.command('0100', this.searchMs, signal);
    try {
      parseElmResponse(searchRaw, { command: '0100', headers });
    } catch (err) {
      if (err instanceof ElmResponseError && err.code !== 'garbage' && err.code !== 'data-error') {
        throw new Elm327Error(
          'no-vehicle',
          `ELM327 v${version.version} on ${this.port} answers, but no ECU does (${err.text.trim() || err.code}): is the ignition on, and the adapter plugged into the car's OBD socket?`,
          { cause: err },
        );
      }
      // Unreadable before we know the protocol (29-bit or legacy headers): read again below, once we do.
    }
    const protocol = await this.learnProtocol(signal);
    this.family = protocol.family ?? undefined;
    this.responseCount = false;
    this.multiPid = false;
    await this.findEcus(signal);
    if (this.records.size === 0) {
      throw new Elm327Error('no-vehicle', `ELM327 v${version.version} on ${this.port}: no ECU answered 01 00 over ${protocol.description}`);
    }
    if (this.family !== 'legacy') {
      this.responseCount = version.major > 1 || (version.major === 1 && version.minor >= 3) ? await this.tryResponseCount(signal) : false;
      this.multiPid = await this.tryMultiPid(signal);
    }
    let voltage: number | null = null;
    try {
      voltage = parseVoltage(await this.command('ATRV', this.atMs, signal), 'ATRV');
    } catch (err) {
      if (!(err instanceof ElmResponseError)) throw err;
    }
    return {
      port: this.port,
      baudRate,
      device: version.device,
      version: version.version,
      protocol,
      headers,
      responseCount: this.responseCount,
      multiPid: this.multiPid,
      voltage,
    };
  }

  private setMultiPid(on: boolean): void {
    this.multiPid = on;
    if (this.adapter) this.adapter = { ...this.adapter, multiPid: on };
  }

  /** ATDPN, or ATDP on adapters without it. */
  private async learnProtocol(signal: AbortSignal | undefined): Promise<ElmProtocol> {
    try {
      return parseProtocolNumber(await this.command('ATDPN', this.atMs, signal), 'ATDPN');
    } catch (err) {
      if (!(err instanceof ElmResponseError)) throw err;
    }
    try {
      return parseProtocolDescription(await this.command('ATDP', this.atMs, signal), 'ATDP');
    } catch (err) {
      if (!(err instanceof ElmResponseError)) throw err;
      // Neither answer is readable: the headers in the answers will tell 11-bit CAN apart; the rest stays unknown.
      return { number: 0, auto: this.protocolSetting === 'auto', description: 'unknown', family: null };
    }
  }

  /** An AT command that answers OK. Required ones throw when refused; optional ones return false. */
  private async setting(command: string, signal: AbortSignal | undefined, required: boolean): Promise<boolean> {
    const raw = await this.command(command, this.atMs, signal);
    try {
      expectOk(raw, command);
      return true;
    } catch (err) {
      if (!required && err instanceof ElmResponseError) return false;
      throw new Elm327Error('init-failed', `the adapter refused ${command} (${err instanceof ElmResponseError ? err.text.trim() || err.code : String(err)})`, {
        cause: err,
      });
    }
  }

  /** `01001`: the adapter that honours the digit answers with 41 00 like 0100; one that does not says `?`. */
  private async tryResponseCount(signal: AbortSignal | undefined): Promise<boolean> {
    this.responseCount = true;
    try {
      const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, [0x00]), 1, signal, false);
      return [...answers.values()].some((messages) => messages.some((m) => m[0] === 0x41 && m[1] === 0x00));
    } catch (err) {
      if (err instanceof ObdRequestError && err.code !== 'adapter' && err.code !== 'closed' && err.code !== 'aborted') return false;
      throw err;
    } finally {
      this.responseCount = false;
    }
  }

  /** Two PIDs in one request: kept if an ECU returns both. */
  private async tryMultiPid(signal: AbortSignal | undefined): Promise<boolean> {
    for (const record of this.records.values()) {
      const pids = [...record.supported].filter((pid) => !SUPPORTED_PID_BLOCKS.includes(pid) && MODE01_PIDS.has(pid)).slice(0, 2);
      if (pids.length < 2) continue;
      try {
        const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, pids), this.countFor(pids), signal);
        for (const message of answers.get(record.ecu) ?? []) {
          const parsed = parseMode01Response(message);
          if (!(parsed instanceof ObdNegativeResponse) && pids.every((pid) => parsed.readings.some((r) => r.pid === pid))) return true;
        }
        return false;
      } catch (err) {
        if (err instanceof ObdRequestError && (err.code === 'adapter' || err.code === 'closed' || err.code === 'aborted')) throw err;
        return false;
      }
    }
    return false;
  }

  private async findEcus(signal: AbortSignal | undefined): Promise<void> {
    const found = new Map<number, EcuRecord>();
    const nextBlock = new Map<number, number>();
    const absorb = (block: number, answers: EcuMessages, asked: ReadonlySet<number> | null): void => {
      for (const [ecu, messages] of answers) {
        if (asked !== null && !asked.has(ecu)) continue;
        for (const message of messages) {
          let parsed;
          try {
            parsed = parseMode01Response(message);
          } catch {
            continue;
          }
          if (parsed instanceof ObdNegativeResponse) continue;
          const data = parsed.readings.find((r) => r.pid === block)?.data;
          if (!data) continue;
          let record = found.get(ecu);
          if (!record) {
            if (block !== 0) continue;
            record = { ecu, supported: new Set() };
            found.set(ecu, record);
          }
          for (const pid of supportedPidsFromBitmap(block, data)) record.supported.add(pid);
          const next = nextSupportedPidBlock(block, data);
          if (next !== null) nextBlock.set(ecu, next);
          else nextBlock.delete(ecu);
        }
      }
    };
    absorb(0x00, await this.exchange(buildRequest(OBD_SERVICE.currentData, [0x00]), 0, signal), null);
    for (const block of SUPPORTED_PID_BLOCKS.slice(1)) {
      const asked = new Set([...nextBlock].filter(([, b]) => b === block).map(([ecu]) => ecu));
      if (asked.size === 0) break;
      for (const ecu of asked) nextBlock.delete(ecu);
      absorb(block, await this.exchange(buildRequest(OBD_SERVICE.currentData, [block]), asked.size, signal), asked);
    }
    this.records.clear();
    for (const [ecu, record] of [...found].sort((a, b) => a[0] - b[0])) this.records.set(ecu, record);
  }

  // ---- requests ----

  /** One chunk of Mode 01 PIDs, functionally addressed; answers of ECUs other than `options.ecu` are left out. */
  private async readChunk(chunk: number[], options: ObdRequestOptions, out: Map<number, EcuPidReadings>): Promise<'answered' | 'silent' | 'fallback'> {
    const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, chunk), this.countFor(chunk), options.signal);
    const concerned = [...this.records.keys()].filter(
      (ecu) => (options.ecu === undefined || ecu === options.ecu) && chunk.some((pid) => this.supports(ecu, pid)),
    );
    let answered = false;
    for (const [ecu, messages] of answers) {
      if (options.ecu !== undefined && ecu !== options.ecu) continue;
      const entry = entryFor(out, ecu);
      const expected = chunk.filter((pid) => this.supports(ecu, pid) !== false);
      const got = new Set<number>();
      for (const message of messages) {
        let parsed;
        try {
          parsed = parseMode01Response(message);
        } catch (err) {
          entry.error = new ObdRequestError('malformed', `ECU ${ecu}: ${(err as Error).message}`, { ecu, cause: err });
          continue;
        }
        if (parsed instanceof ObdNegativeResponse) {
          if (parsed.nrc === 0x12 && chunk.length > 1) return 'fallback';
          entry.error = new ObdRequestError('negative-response', `ECU ${ecu}: ${parsed.toString()}`, { ecu, negative: parsed });
          continue;
        }
        for (const reading of parsed.readings) {
          if (got.has(reading.pid) || !chunk.includes(reading.pid)) continue;
          got.add(reading.pid);
          entry.readings.push(reading);
        }
      }
      for (const pid of expected) if (!got.has(pid) && !entry.missing.includes(pid)) entry.missing.push(pid);
      answered = true;
    }
    for (const ecu of concerned) {
      if (answers.has(ecu)) continue;
      const entry = entryFor(out, ecu);
      entry.error = new ObdRequestError('timeout', `ECU ${ecu} did not answer`, { ecu });
      for (const pid of chunk) if (this.supports(ecu, pid) && !entry.missing.includes(pid)) entry.missing.push(pid);
    }
    return answered ? 'answered' : 'silent';
  }

  /** The PIDs of a chunk whose answer was lost are missing, with the reason, for every ECU that has them. */
  private noteChunkFailure(chunk: number[], options: ObdRequestOptions, out: Map<number, EcuPidReadings>, error: ObdRequestError): void {
    for (const ecu of this.records.keys()) {
      if (options.ecu !== undefined && ecu !== options.ecu) continue;
      const pids = chunk.filter((pid) => this.supports(ecu, pid));
      if (pids.length === 0) continue;
      const entry = entryFor(out, ecu);
      entry.error = error;
      for (const pid of pids) if (!entry.missing.includes(pid)) entry.missing.push(pid);
    }
  }

  private serviceRequest<T>(request: Uint8Array, options: ObdRequestOptions, parse: (message: Uint8Array) => T | ObdNegativeResponse): Promise<EcuAnswer<T>[]> {
    return this.serial(options.signal, async () => {
      await this.whenReady(options.signal);
      const answers = await this.exchange(request, 0, options.signal);
      const out: EcuAnswer<T>[] = [];
      for (const [ecu, messages] of answers) {
        if (options.ecu !== undefined && ecu !== options.ecu) continue;
        try {
          const value = parse(this.join(request, messages));
          if (value instanceof ObdNegativeResponse) {
            out.push({ ecu, ok: false, error: new ObdRequestError('negative-response', `ECU ${ecu}: ${value.toString()}`, { ecu, negative: value }) });
          } else out.push({ ecu, ok: true, value });
        } catch (err) {
          const error = err instanceof ObdRequestError ? err : new ObdRequestError('malformed', `ECU ${ecu}: ${(err as Error).message}`, { ecu, cause: err });
          out.push({ ecu, ok: false, error });
        }
      }
      if (out.length === 0) {
        const who = options.ecu === undefined ? 'no ECU answered' : `ECU ${options.ecu} did not answer`;
        throw new ObdRequestError('timeout', `${who} ${hex(request, ' ')}`, options.ecu === undefined ? {} : { ecu: options.ecu });
      }
      return out;
    });
  }

  /**
   * One ECU's messages as one service answer. On CAN each answer is one (ISO-TP reassembled) message. The legacy
   * protocols split long answers into several messages: DTCs three to a message, the VIN in five numbered pieces.
   */
  private join(request: Uint8Array, messages: Uint8Array[]): Uint8Array {
    const positive = request[0]! + 0x40;
    const negative = messages.find((m) => m[0] === 0x7f && m[1] === request[0]);
    const ours = messages.filter((m) => m[0] === positive && (request[0] !== OBD_SERVICE.vehicleInfo || m[1] === request[1]));
    if (ours.length === 0) {
      if (negative) return negative;
      throw new ObdRequestError('malformed', `no answer to ${hex(request, ' ')} among ${messages.map((m) => hex(m, ' ')).join(' | ')}`);
    }
    if (ours.length === 1) return ours[0]!;
    if (request[0] === OBD_SERVICE.vehicleInfo) {
      // `49 02 nn d d d d`: pieces in order of their message number.
      const sorted = [...ours].sort((a, b) => (a[2] ?? 0) - (b[2] ?? 0));
      return Uint8Array.from([positive, request[1]!, ...sorted.flatMap((m) => [...m.subarray(3)])]);
    }
    return Uint8Array.from([positive, ...ours.flatMap((m) => [...m.subarray(1)])]);
  }

  /**
   * Sends one OBD request and returns the messages of each ECU. `expect` > 0 adds the response-count digit (when the
   * adapter has it): the adapter then answers as soon as that many ECUs have. NO DATA is no ECU answering (an empty
   * map); adapter errors become ObdRequestErrors.
   */
  private async exchange(request: Uint8Array, expect: number, signal: AbortSignal | undefined, retryPlain = true): Promise<EcuMessages> {
    const digit = this.responseCount && expect > 0 && expect <= 15 && this.family !== 'legacy' ? expect.toString(16).toUpperCase() : '';
    const command = hex(request, '') + digit;
    this.stats.requests++;
    this.stats.framesSent++;
    const raw = await this.command(command, this.requestMs, signal).catch((err: unknown) => {
      throw toRequestError(err, command);
    });
    let messages: ElmMessage[];
    try {
      messages = parseElmResponse(raw, { command, headers: this.headers, ...(this.family ? { protocol: this.family } : {}) }).messages;
    } catch (err) {
      if (err instanceof ElmResponseError) {
        if (err.code === 'no-data') return new Map();
        // Some implementations know the digit only for requests they can answer, and say `?` to the rest: ask plainly.
        if (err.code === 'unknown-command' && digit !== '' && retryPlain) return this.exchange(request, 0, signal);
        if (err.code === 'lv-reset') this.lose(new Error('the adapter reset itself (LV RESET): supply voltage dipped'));
        throw new ObdRequestError(elmErrorCode(err), `${command}: ${err.message}`, { cause: err });
      }
      throw err;
    }
    const out: EcuMessages = new Map();
    for (const message of messages) {
      if (message.data.length === 0) continue;
      this.stats.framesReceived++;
      const ecu = this.ecuOf(message.ecu);
      const list = out.get(ecu);
      if (list) list.push(message.data);
      else out.set(ecu, [message.data]);
    }
    return new Map([...out].sort((a, b) => a[0] - b[0]));
  }

  /** The response-count digit for a chunk: the ECUs that report at least one of its PIDs. */
  private countFor(pids: readonly number[]): number {
    let n = 0;
    for (const ecu of this.records.keys()) if (pids.some((pid) => this.supports(ecu, pid))) n++;
    return n;
  }

  private supports(ecu: number, pid: number): boolean | null {
    const record = this.records.get(ecu);
    if (!record) return null;
    return pid === 0 || record.supported.has(pid);
  }

  /** ECU numbers as ObdCanClient has them: 0-7 for 7E8-7EF, the source byte of 29-bit and legacy headers. */
  private ecuOf(header: string): number {
    if (header === '') return this.family === 'can11' || this.family === undefined ? 0 : 0x10;
    const id = parseInt(header, 16);
    if (this.family === 'legacy') return id & 0xff;
    if (header.length === 3) return id >= 0x7e8 && id <= 0x7ef ? id - 0x7e8 : id;
    return (id & 0x1fffff00) === 0x18daf100 ? id & 0xff : id;
  }

  private ecuIds(ecu: number): { requestId: number; responseId: number; extended: boolean } {
    if (this.family === 'can29') return { requestId: (0x18da00f1 | (ecu << 8)) >>> 0, responseId: (0x18daf100 | ecu) >>> 0, extended: true };
    if (this.family === 'legacy') return { requestId: 0x686af1, responseId: 0x486b00 | ecu, extended: false };
    return ecu <= 7 ? { requestId: 0x7e0 + ecu, responseId: 0x7e8 + ecu, extended: false } : { requestId: ecu - 8, responseId: ecu, extended: false };
  }

  /** A command on the link; a run of commands without a prompt means the adapter is gone. */
  private async command(command: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<string> {
    try {
      const raw = await this.link.command(command, timeoutMs, signal);
      this.silentCommands = 0;
      return raw;
    } catch (err) {
      if (err instanceof ElmLinkError && err.code === 'timeout' && ++this.silentCommands >= this.maxSilent) {
        this.lose(new Error(`the adapter stopped answering (${this.silentCommands} commands without a prompt)`));
      }
      throw err;
    }
  }

  /** The adapter is gone (unplugged, silent, reset): close the port; the daemon loop reconnects. */
  private lose(cause: Error): void {
    if (this.closed) return;
    const wasReady = this.currentState === 'ready';
    this.silentCommands = 0;
    void this.link.close();
    if (!wasReady) return;
    this.stats.losses++;
    this.lastError = cause;
    this.setState('idle', { error: cause });
    this.onLoss?.();
  }

  /** Waits for the adapter to be ready: not at all when it is, up to `readyWaitMs` while the daemon loop reconnects. */
  private async whenReady(signal: AbortSignal | undefined): Promise<void> {
    if (this.closed) throw new ObdRequestError('closed', 'ELM327 client closed');
    if (this.currentState === 'ready') return;
    if (!this.running)
      throw new ObdRequestError('adapter', `ELM327 adapter on ${this.port} not connected${this.lastError ? `: ${this.lastError.message}` : ''}`);
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.readyWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, this.readyWaitMs);
      signal?.addEventListener('abort', done, { once: true });
      this.readyWaiters.add(done);
    });
    if (this.closed) throw new ObdRequestError('closed', 'ELM327 client closed');
    if (signal?.aborted) throw new ObdRequestError('aborted', 'request aborted');
    // Read through the getter: the compiler's narrowing from before the wait no longer holds.
    if (this.state !== 'ready') {
      throw new ObdRequestError('adapter', `ELM327 adapter on ${this.port} not connected${this.lastError ? `: ${this.lastError.message}` : ''}`);
    }
  }

  private serial<T>(signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
    const next = this.queueTail.then(() => {
      if (this.closed) throw new ObdRequestError('closed', 'ELM327 client closed');
      if (signal?.aborted) throw new ObdRequestError('aborted', 'request aborted');
      return run();
    });
    this.queueTail = next.catch(() => undefined);
    return next;
  }

  private setState(state: Elm327State, detail: { error?: Error; info?: Elm327Info }): void {
    if (this.currentState === state && state !== 'idle') return;
    this.currentState = state;
    for (const listener of this.listeners) {
      try {
        listener(state, detail);
      } catch {
        // A listener's failure is its own.
      }
    }
  }
}

function entryFor(out: Map<number, EcuPidReadings>, ecu: number): EcuPidReadings {
  let entry = out.get(ecu);
  if (!entry) {
    entry = { ecu, readings: [], missing: [] };
    out.set(ecu, entry);
  }
  return entry;
}

function hex(bytes: ArrayLike<number>, separator: string): string {
  return Array.from(bytes, (b) => b.toString(16).toUpperCase().padStart(2, '0')).join(separator);
}

function positive(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new RangeError(`Elm327Client: ${name} must be a positive number`);
  return value;
}

/** Adapter error lines as request errors: the bus's fault, the line's, or ours. */
function elmErrorCode(err: ElmResponseError): ObdRequestError['code'] {
  switch (err.code) {
    case 'unknown-command':
      return 'invalid-request';
    case 'can-error':
    case 'bus-init-error':
    case 'unable-to-connect':
    case 'bus-busy':
    case 'fb-error':
      return 'bus';
    case 'lv-reset':
      return 'adapter';
    default:
      // STOPPED, BUFFER FULL, DATA ERROR, a garbled or half line: the answer did not make it to us intact.
      return 'transport';
  }
}

function toRequestError(err: unknown, command: string): ObdRequestError {
  if (err instanceof ObdRequestError) return err;
  if (err instanceof ElmLinkError) {
    if (err.code === 'closed') return new ObdRequestError('closed', `${command}: ${err.message}`, { cause: err });
    if (err.code === 'aborted') return new ObdRequestError('aborted', 'request aborted', { cause: err });
    return new ObdRequestError('adapter', `${command}: ${err.message}`, { cause: err });
  }
  return new ObdRequestError('adapter', `${command}: ${String(err)}`, { cause: err });
}

function toElm327Error(err: unknown, port: string): Elm327Error {
  if (err instanceof Elm327Error) return err;
  if (err instanceof ElmLinkError) {
    switch (err.code) {
      case 'no-port':
        return new Elm327Error('no-port', err.message, { cause: err });
      case 'port-denied':
        return new Elm327Error('port-denied', err.message, { cause: err });
      case 'no-adapter':
        return new Elm327Error('no-adapter', err.message, { cause: err });
      case 'aborted':
        return new Elm327Error('aborted', 'connection aborted', { cause: err });
      case 'timeout':
        return new Elm327Error('no-adapter', `${port}: the adapter stopped answering during initialisation (${err.message})`, { cause: err });
      default:
        return new Elm327Error('init-failed', `${port}: ${err.message}`, { cause: err });
    }
  }
  if (err instanceof ElmResponseError) {
    return new Elm327Error('no-adapter', `${port}: not an ELM327 answer (${err.message})`, { cause: err });
  }
  if (err instanceof ObdRequestError) {
    return new Elm327Error(err.code === 'adapter' ? 'no-adapter' : 'init-failed', `${port}: ${err.message}`, { cause: err });
  }
  return new Elm327Error('init-failed', `${port}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
