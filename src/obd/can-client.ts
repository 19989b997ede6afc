/**
 * OBD-II client on CAN (ISO 15765-4, services of SAE J1979), over any `CanBus`.
 *
 * Addressing: 11-bit: functional requests on 0x7DF, ECU n answers on 0x7E8+n and is addressed physically on 0x7E0+n.
 * 29-bit: functional 0x18DB33F1, ECU xx answers on 0x18DAF1xx and is addressed physically on 0x18DAxxF1. An ECU is
 * named by its address everywhere in this API: n (0-7) with 11-bit identifiers, xx with 29-bit ones.
 *
 * One endpoint, filtered to the response identifiers, carries everything; frames are handed by identifier to one
 * ISO-TP channel per ECU, whose flow control therefore goes to that ECU's physical request identifier. Only one request
 * is on the bus at a time (the others queue): the answers to a functional request carry nothing that ties them to it.
 *
 * Bytes are decoded by src/obd/j1979.ts only. Nothing a bus delivers makes a frame handler throw: garbage, answers to
 * requests we did not make and floods are counted (`counters`) and dropped, and the request concerned ends with an
 * `ObdRequestError` for that ECU.
 */
import { type CanBus, type CanEndpoint, type CanFilter } from '../can/bus.js';
import type { CanFrame } from '../can/frame.js';
import { IsoTpChannel, type IsoTpClock, type IsoTpError, systemClock } from '../can/isotp.js';
import {
  buildClearDtcsRequest,
  buildRequest,
  MAX_PIDS_PER_REQUEST,
  nextSupportedPidBlock,
  OBD_SERVICE,
  ObdDecodeError,
  ObdNegativeResponse,
  parseCalibrationIdsResponse,
  parseDtcResponse,
  parseMode01Response,
  parseNegativeResponse,
  parseVinResponse,
  SUPPORTED_PID_BLOCKS,
  supportedPidsFromBitmap,
  toHex,
  VEHICLE_INFO,
  type DtcService,
  type PidReading,
} from './j1979.js';

export type ObdCanAddressing = '11-bit' | '29-bit';

/** ISO 15765-4 P2CAN max: an ECU's first answer comes within this (ms). */
export const OBD_P2_MS = 50;
/** ISO 15765-4 P2*CAN: after a response-pending NRC (0x78) the answer comes within this (ms). */
export const OBD_P2_STAR_MS = 5000;
/** ISO 15765-4 allows at most 8 emissions-related ECUs. */
export const OBD_MAX_ECUS = 8;

const FUNCTIONAL_ID_11 = 0x7df;
const PHYSICAL_BASE_11 = 0x7e0;
const RESPONSE_BASE_11 = 0x7e8;
/** The external test equipment's own address in 29-bit identifiers (normal fixed addressing: 18DA<target><source>). */
const TESTER_ADDRESS_29 = 0xf1;
/** 0x33: the functional target address of all emissions-related ECUs. */
const FUNCTIONAL_ID_29 = 0x18db3300 + TESTER_ADDRESS_29;
const PHYSICAL_BASE_29 = 0x18da0000 + TESTER_ADDRESS_29;
const RESPONSE_BASE_29 = 0x18da0000 + TESTER_ADDRESS_29 * 0x100;

/** Identifier of functional (broadcast) requests. */
export function obdFunctionalId(addressing: ObdCanAddressing): number {
  return addressing === '11-bit' ? FUNCTIONAL_ID_11 : FUNCTIONAL_ID_29;
}

/** Physical request and response identifiers of one ECU. */
export function obdEcuIds(addressing: ObdCanAddressing, ecu: number): { requestId: number; responseId: number } {
  const max = addressing === '11-bit' ? 7 : 0xff;
  if (!Number.isInteger(ecu) || ecu < 0 || ecu > max) {
    throw new ObdRequestError('invalid-request', `ECU address ${String(ecu)} is not 0-${max} for ${addressing} identifiers`);
  }
  return addressing === '11-bit'
    ? { requestId: PHYSICAL_BASE_11 + ecu, responseId: RESPONSE_BASE_11 + ecu }
    : { requestId: PHYSICAL_BASE_29 + ecu * 0x100, responseId: RESPONSE_BASE_29 + ecu };
}

/** The ECU address a response identifier belongs to, or null when it is not an OBD response identifier. */
export function obdResponseEcu(addressing: ObdCanAddressing, id: number, extended: boolean): number | null {
  if (addressing === '11-bit') return !extended && id >= RESPONSE_BASE_11 && id <= RESPONSE_BASE_11 + 7 ? id - RESPONSE_BASE_11 : null;
  return extended && (id & ~0xff) === RESPONSE_BASE_29 ? id & 0xff : null;
}

/** Kernel filters that pass the response identifiers only, so other traffic never wakes the agent. */
export function obdResponseFilters(addressing: ObdCanAddressing): CanFilter[] {
  return addressing === '11-bit' ? [{ id: RESPONSE_BASE_11, mask: 0x7f8, extended: false }] : [{ id: RESPONSE_BASE_29, mask: 0x1fffff00, extended: true }];
}

export type ObdRequestErrorCode =
  /** Nobody (or not the ECU concerned) answered within P2, or within P2* after a response-pending NRC. */
  | 'timeout'
  /** The ECU refused: `negative` holds its NRC. */
  | 'negative-response'
  /** The ECU answered with bytes J1979 cannot decode; `cause` is the ObdDecodeError. */
  | 'malformed'
  /** The ISO-TP transfer of the answer failed (missing consecutive frame, wrong sequence, too long). */
  | 'transport'
  /** More response-pending NRCs (0x78) than `maxResponsePending`. */
  | 'too-many-pending'
  /** The bus refused our frame (interface down, queue full); `cause` is the CanBusError. */
  | 'bus'
  /** The request cannot be made as asked (a functional request longer than one frame, a bad PID or address). */
  | 'invalid-request'
  /** The link to the car is down: an ELM327 adapter unplugged, not answering, or still being initialised. */
  | 'adapter'
  | 'aborted'
  | 'closed';

export class ObdRequestError extends Error {
  override name = 'ObdRequestError';
  /** ECU the error concerns; undefined when it concerns the whole request. */
  readonly ecu: number | undefined;
  /** The ECU's negative response, for code 'negative-response'. */
  readonly negative: ObdNegativeResponse | undefined;
  constructor(
    readonly code: ObdRequestErrorCode,
    message: string,
    details: { ecu?: number; negative?: ObdNegativeResponse; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.ecu = details.ecu;
    this.negative = details.negative;
  }
}

export interface ObdCanClientOptions {
  /** '11-bit' (default), '29-bit', or 'auto': discovery tries 11-bit, then 29-bit, and keeps the one that answers. */
  addressing?: ObdCanAddressing | 'auto';
  /** Wait for first answers (ms). Default 50, ISO 15765-4's P2CAN max. */
  p2Ms?: number;
  /** Wait after each response-pending NRC (ms). Default 5000 (P2*CAN). */
  p2StarMs?: number;
  /** Response-pending NRCs accepted from one ECU for one request before it counts as failed. Default 10. */
  maxResponsePending?: number;
  /** Fill byte: ISO 15765-4 wants every frame 8 bytes long. Default 0xCC; null sends short frames. */
  padding?: number | null;
  /** ISO-TP timeouts (ms). Defaults are ISO 15765-4's: N_Bs 75, N_Cr 150. */
  timeouts?: { nBs?: number; nCr?: number };
  /** Most ECUs whose answers are taken; more responders are ignored as a flood. Default 8. */
  maxEcus?: number;
  clock?: IsoTpClock;
}

export interface ObdRequestOptions {
  /** Ask this ECU alone (physical addressing); default: all of them (functional addressing). */
  ecu?: number;
  signal?: AbortSignal;
}

/** An ECU found by `discover`. */
export interface ObdEcuInfo {
  ecu: number;
  requestId: number;
  responseId: number;
  extended: boolean;
  /** Mode 01 PIDs its bitmaps report (sorted), including the 20, 40, … that chain the bitmaps. */
  supportedPids: readonly number[];
  /** Answered a multi-PID request with NRC 0x12, so it is asked one PID per request. */
  singlePidOnly: boolean;
}

/** One ECU's answer to a request for PIDs. */
export interface EcuPidReadings {
  ecu: number;
  /** In the order the ECU sent them. */
  readings: PidReading[];
  /** Requested PIDs the ECU did not return, leaving out those its supported-PID bitmap says it does not have. */
  missing: number[];
  /** Why PIDs are missing, when the ECU refused, did not answer or garbled its answer (the last such failure). */
  error?: ObdRequestError;
}

/** One ECU's answer to a DTC, clear or vehicle-information request. */
export type EcuAnswer<T> = { ecu: number; ok: true; value: T } | { ecu: number; ok: false; error: ObdRequestError };

export interface ObdCanClientCounters {
  /** Requests put on the bus. */
  requests: number;
  framesSent: number;
  /** Frames that passed the endpoint's filters. */
  framesReceived: number;
  /** Frames no request could be waiting for (none in flight, another ECU addressed, the ECU already answered). */
  unsolicitedFrames: number;
  /** Whole messages that answer no request of ours (late answers, answers to other PIDs or services). */
  unexpectedMessages: number;
  malformedResponses: number;
  /** ISO-TP receive errors: lost or out-of-sequence consecutive frames, oversized messages. */
  transportErrors: number;
  /** Exceptions caught in the frame handler: always a bug, never the bus's fault. */
  handlerErrors: number;
}

/** Per-ECU answers of one exchange: the ECU's message, or why there is none. */
type Answers = Map<number, Uint8Array | ObdRequestError>;

interface Exchange {
  service: number;
  /** Does this positive message answer our request (and not an earlier one arriving late)? */
  matches: (message: Uint8Array) => boolean;
  /** ECU addressed physically; null for a functional request. */
  physical: number | null;
  /** ECUs whose answers end the wait early once all are in; null: wait for the whole P2 window. */
  expected: ReadonlySet<number> | null;
  answers: Answers;
  /** ECUs that sent response-pending: how many, and until when we wait for them. */
  pending: Map<number, { count: number; until: number }>;
  windowEnd: number;
  /** No request lasts beyond this, whatever ECUs keep sending. */
  hardEnd: number;
  timer: unknown;
  resolve: (answers: Answers) => void;
  reject: (err: ObdRequestError) => void;
  onAbort: (() => void) | null;
  signal: AbortSignal | undefined;
}

interface EcuLink {
  ecu: number;
  channel: IsoTpChannel;
  /** A first frame came in and the rest of the message is on its way. */
  receiving: boolean;
}

interface EcuRecord {
  ecu: number;
  supported: Set<number>;
}

const NRC_RESPONSE_PENDING = 0x78;
/** The 'timeout' errors of ECUs that sent nothing at all (as opposed to ones that asked for patience, then went quiet). */
const silences = new WeakSet<ObdRequestError>();
const NRC_SUBFUNCTION_NOT_SUPPORTED = 0x12;

export class ObdCanClient {
  private readonly bus: CanBus;
  private readonly addressing: ObdCanAddressing | 'auto';
  private readonly p2: number;
  private readonly p2Star: number;
  private readonly maxPending: number;
  private readonly padding: number | null;
  private readonly nBs: number;
  private readonly nCr: number;
  private readonly maxEcus: number;
  private readonly clock: IsoTpClock;

  private endpoint: CanEndpoint | null = null;
  private mode: ObdCanAddressing | null = null;
  private readonly links = new Map<number, EcuLink>();
  private readonly records = new Map<number, EcuRecord>();
  /** Survives re-discovery: an ECU that refused multi-PID requests once will again. */
  private readonly singlePid = new Set<number>();
  private current: Exchange | null = null;
  private queueTail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private readonly stats: ObdCanClientCounters = {
    requests: 0,
    framesSent: 0,
    framesReceived: 0,
    unsolicitedFrames: 0,
    unexpectedMessages: 0,
    malformedResponses: 0,
    transportErrors: 0,
    handlerErrors: 0,
  };

  /** Opens the client's endpoint on `bus` (throws the bus's CanBusError when it cannot). */
  constructor(bus: CanBus, options: ObdCanClientOptions = {}) {
    this.bus = bus;
    this.addressing = options.addressing ?? '11-bit';
    this.p2 = positive('p2Ms', options.p2Ms ?? OBD_P2_MS);
    this.p2Star = positive('p2StarMs', options.p2StarMs ?? OBD_P2_STAR_MS);
    this.maxPending = positive('maxResponsePending', options.maxResponsePending ?? 10);
    this.padding = options.padding === undefined ? 0xcc : options.padding;
    this.nBs = positive('timeouts.nBs', options.timeouts?.nBs ?? 75);
    this.nCr = positive('timeouts.nCr', options.timeouts?.nCr ?? 150);
    this.maxEcus = positive('maxEcus', options.maxEcus ?? OBD_MAX_ECUS);
    this.clock = options.clock ?? systemClock;
    if (this.addressing === 'auto') {
      this.openEndpoint([...obdResponseFilters('11-bit'), ...obdResponseFilters('29-bit')]);
    } else {
      this.useAddressing(this.addressing);
    }
  }

  /** The addressing in use; null in 'auto' mode until discovery has found the ECUs. */
  get addressingInUse(): ObdCanAddressing | null {
    return this.mode;
  }

  /** The ECUs the last discovery found, by address. */
  get ecus(): ObdEcuInfo[] {
    return [...this.records.values()]
      .sort((a, b) => a.ecu - b.ecu)
      .map((r) => ({
        ecu: r.ecu,
        ...obdEcuIds(this.mode!, r.ecu),
        extended: this.mode === '29-bit',
        supportedPids: [...r.supported].sort((a, b) => a - b),
        singlePidOnly: this.singlePid.has(r.ecu),
      }));
  }

  /** Whether a discovered ECU reports the PID as supported; null for an ECU discovery did not find. */
  supportsPid(ecu: number, pid: number): boolean | null {
    const record = this.records.get(ecu);
    if (record === undefined) return null;
    return pid === 0 || record.supported.has(pid);
  }

  /** The ECU is asked one PID per request (it refused a multi-PID request with NRC 0x12). */
  isSinglePidOnly(ecu: number): boolean {
    return this.singlePid.has(ecu);
  }

  /** A copy of the counters. */
  get counters(): ObdCanClientCounters {
    return { ...this.stats };
  }

  /**
   * Finds the ECUs: a functional 01 00, every answer within P2, then 01 20, 01 40, … for the ECUs whose bitmaps say
   * the next block exists. Rejects with 'timeout' when no ECU answers.
   */
  discover(options: { signal?: AbortSignal } = {}): Promise<ObdEcuInfo[]> {
    return this.serial(options.signal, () => this.runDiscovery(options.signal));
  }

  /**
   * Mode 01: current values, at most 6 PIDs per request. ECUs that refuse multi-PID requests (NRC 0x12) are asked
   * one PID at a time, from then on. Resolves with one entry per ECU that answered (or that discovery says should
   * have); rejects with 'timeout' when no ECU answered at all.
   */
  async readPids(pids: readonly number[], options: ObdRequestOptions = {}): Promise<EcuPidReadings[]> {
    // async: a bad list rejects like any other failure, before the request queue.
    const list = checkPids(pids);
    return this.serial(options.signal, async () => {
      await this.ensureAddressing(options.signal);
      if (options.ecu !== undefined) obdEcuIds(this.mode!, options.ecu);
      const out = new Map<number, EcuPidReadings>();
      let answered = false;
      for (let k = 0; k < list.length; k += MAX_PIDS_PER_REQUEST) {
        const chunk = list.slice(k, k + MAX_PIDS_PER_REQUEST);
        const got =
          options.ecu !== undefined
            ? await this.readChunkPhysical(options.ecu, chunk, out, options.signal)
            : await this.readChunkFunctional(chunk, out, options.signal);
        answered = got || answered;
      }
      if (!answered) throw this.noAnswer(`01 ${toHex(list)}`, options.ecu);
      return [...out.values()].sort((a, b) => a.ecu - b.ecu);
    });
  }

  /** Mode 03 (stored, default), 07 (pending) or 0A (permanent) DTCs, e.g. `P0133`. */
  readDtcs(service: DtcService = OBD_SERVICE.storedDtcs, options: ObdRequestOptions = {}): Promise<EcuAnswer<string[]>[]> {
    if (service !== OBD_SERVICE.storedDtcs && service !== OBD_SERVICE.pendingDtcs && service !== OBD_SERVICE.permanentDtcs) {
      return Promise.reject(new ObdRequestError('invalid-request', `${toHex([service])} is not a DTC service (03, 07, 0A)`));
    }
    return this.serviceRequest(buildRequest(service), options, true, (m) => {
      const r = parseDtcResponse(service, m, { countByte: true });
      return r instanceof ObdNegativeResponse ? r : r.codes;
    });
  }

  /**
   * Mode 04: clears DTCs, freeze frames and readiness monitors in the ECUs (all, or `ecu`). Only ever called on
   * purpose, by a person's command: nothing in the agent calls it on its own, since it erases evidence a workshop
   * or an inspection needs.
   */
  clearDtcs(options: ObdRequestOptions = {}): Promise<EcuAnswer<true>[]> {
    return this.serviceRequest(buildClearDtcsRequest(), options, true, (m) => {
      const negative = parseNegativeResponse(m);
      if (negative) return negative;
      if (m.length !== 1) throw new ObdDecodeError(`a Mode 04 answer is 1 byte, got ${m.length}`, m);
      return true as const;
    });
  }

  /** Mode 09 info type 02: the VIN (usually from one ECU only). */
  readVin(options: ObdRequestOptions = {}): Promise<EcuAnswer<string>[]> {
    return this.serviceRequest(buildRequest(OBD_SERVICE.vehicleInfo, [VEHICLE_INFO.vin]), options, false, parseVinResponse);
  }

  /** Mode 09 info type 04: calibration IDs, per ECU. */
  readCalibrationIds(options: ObdRequestOptions = {}): Promise<EcuAnswer<string[]>[]> {
    return this.serviceRequest(buildRequest(OBD_SERVICE.vehicleInfo, [VEHICLE_INFO.calibrationIds]), options, false, parseCalibrationIdsResponse);
  }

  /**
   * Any other request (e.g. Mode 02, Mode 06): the raw answer of each ECU, positive or `7F` negative, undecoded.
   * A functional request must fit a single frame (7 bytes), as ISO 15765-4 requires.
   */
  request(message: Uint8Array, options: ObdRequestOptions = {}): Promise<EcuAnswer<Uint8Array>[]> {
    if (message.length === 0) return Promise.reject(new ObdRequestError('invalid-request', 'empty request'));
    return this.serviceRequest(message.slice(), options, false, (m) => m);
  }

  /** Stops everything: the request in flight and the queued ones reject with 'closed'; the endpoint is closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.current) this.endExchange(this.current, new ObdRequestError('closed', 'OBD client closed'));
    for (const link of this.links.values()) link.channel.close();
    this.links.clear();
    this.endpoint?.close();
    this.endpoint = null;
  }

  // ---- queue and addressing ----

  /** Runs operations one after the other: one request on the bus at a time. */
  private serial<T>(signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
    const next = this.queueTail.then(() => {
      if (this.closed) throw new ObdRequestError('closed', 'OBD client closed');
      if (signal?.aborted) throw new ObdRequestError('aborted', 'request aborted');
      return run();
    });
    this.queueTail = next.catch(() => undefined);
    return next;
  }

  private openEndpoint(filters: CanFilter[]): void {
    this.endpoint?.close();
    this.endpoint = this.bus.open({ filters });
    this.endpoint.onFrame(this.onFrame);
  }

  private useAddressing(mode: ObdCanAddressing): void {
    if (this.mode === mode && this.endpoint) return;
    for (const link of this.links.values()) link.channel.close();
    this.links.clear();
    this.mode = mode;
    this.openEndpoint(obdResponseFilters(mode));
  }

  private async ensureAddressing(signal: AbortSignal | undefined): Promise<void> {
    if (this.mode === null) await this.runDiscovery(signal);
  }

  private link(ecu: number): EcuLink {
    const link = this.links.get(ecu);
    if (link) return link;
    const { requestId, responseId } = obdEcuIds(this.mode!, ecu);
    const channel = new IsoTpChannel(
      { send: (id, extended, data) => this.sendFrame(id, extended, data) },
      {
        txId: requestId,
        rxId: responseId,
        extended: this.mode === '29-bit',
        padding: this.padding,
        timeouts: { nBs: this.nBs, nCr: this.nCr },
        clock: this.clock,
      },
    );
    const created: EcuLink = { ecu, channel, receiving: false };
    channel.onMessage((message) => this.onEcuMessage(created, message));
    channel.onError((err) => this.onEcuError(created, err));
    this.links.set(ecu, created);
    return created;
  }

  private sendFrame(id: number, extended: boolean, data: Uint8Array): void {
    if (!this.endpoint) throw new ObdRequestError('closed', 'OBD client closed');
    this.endpoint.send(id, extended, data);
    this.stats.framesSent++;
  }

  // ---- receiving ----

  private readonly onFrame = (frame: CanFrame): void => {
    try {
      this.route(frame);
    } catch {
      this.stats.handlerErrors++;
    }
  };

  private route(frame: CanFrame): void {
    this.stats.framesReceived++;
    const mode = this.mode;
    const ecu = mode === null || frame.error || frame.remote ? null : obdResponseEcu(mode, frame.id, frame.extended);
    const ex = this.current;
    if (ecu === null || ex === null || (ex.physical !== null && ex.physical !== ecu) || ex.answers.has(ecu)) {
      this.stats.unsolicitedFrames++;
      return;
    }
    if (!this.links.has(ecu) && this.links.size >= this.maxEcus) {
      this.stats.unsolicitedFrames++;
      return;
    }
    const link = this.link(ecu);
    // A first frame: the window stays open until the rest has come (or N_Cr ends it).
    if (frame.data.length > 0 && frame.data[0]! >> 4 === 1) link.receiving = true;
    link.channel.onFrame(frame);
  }

  private onEcuMessage(link: EcuLink, message: Uint8Array): void {
    link.receiving = false;
    const ex = this.current;
    const ecu = link.ecu;
    if (ex === null || (ex.physical !== null && ex.physical !== ecu) || ex.answers.has(ecu) || message.length === 0) {
      this.stats.unexpectedMessages++;
      return;
    }
    if (message[0] === 0x7f && message.length === 3 && message[1] === ex.service) {
      if (message[2] === NRC_RESPONSE_PENDING) {
        const pending = ex.pending.get(ecu) ?? { count: 0, until: 0 };
        pending.count++;
        pending.until = this.clock.now() + this.p2Star;
        ex.pending.set(ecu, pending);
        if (pending.count > this.maxPending) {
          ex.answers.set(ecu, new ObdRequestError('too-many-pending', `ECU ${ecu} sent more than ${this.maxPending} response-pending NRCs`, { ecu }));
          ex.pending.delete(ecu);
        }
        this.settle(ex);
        return;
      }
    } else if (!ex.matches(message)) {
      this.stats.unexpectedMessages++;
      return;
    }
    ex.answers.set(ecu, message);
    ex.pending.delete(ecu);
    this.settle(ex);
  }

  private onEcuError(link: EcuLink, err: IsoTpError): void {
    link.receiving = false;
    this.stats.transportErrors++;
    const ex = this.current;
    const ecu = link.ecu;
    // 'interrupted': a new message replaced the broken one and is being received.
    if (ex === null || err.code === 'interrupted' || (ex.physical !== null && ex.physical !== ecu) || ex.answers.has(ecu)) return;
    ex.answers.set(ecu, new ObdRequestError('transport', `ECU ${ecu}: ${err.message}`, { ecu, cause: err }));
    ex.pending.delete(ecu);
    this.settle(ex);
  }

  // ---- one request and its answers ----

  /**
   * Sends one request and collects the answers: those of every ECU within the P2 window (functional), or of the one
   * ECU (physical). The window stays open while an ECU is sending a multi-frame answer or has asked for patience
   * (NRC 0x78, P2* each time). Expected ECUs that did not answer get a 'timeout' entry. Rejects only when the request
   * could not be sent, or on abort or close.
   */
  private exchange(
    request: Uint8Array,
    target: { ecu: number } | { expected: ReadonlySet<number> | null },
    matches: (message: Uint8Array) => boolean,
    signal: AbortSignal | undefined,
  ): Promise<Answers> {
    if (this.closed) return Promise.reject(new ObdRequestError('closed', 'OBD client closed'));
    if (signal?.aborted) return Promise.reject(new ObdRequestError('aborted', 'request aborted'));
    const physical = 'ecu' in target ? target.ecu : null;
    if (physical === null && request.length > 7) {
      return Promise.reject(
        new ObdRequestError('invalid-request', `a functional request must fit one frame (ISO 15765-4): ${request.length} bytes, 7 at most`),
      );
    }
    const link = physical === null ? null : this.link(physical);
    return new Promise<Answers>((resolve, reject) => {
      const now = this.clock.now();
      const ex: Exchange = {
        service: request[0]!,
        matches,
        physical,
        expected: physical !== null ? new Set([physical]) : 'expected' in target ? target.expected : null,
        answers: new Map(),
        pending: new Map(),
        windowEnd: now + this.p2,
        hardEnd: now + this.p2 + this.p2Star * (this.maxPending + 1),
        timer: null,
        resolve,
        reject,
        onAbort: null,
        signal,
      };
      if (signal) {
        ex.onAbort = () => this.endExchange(ex, new ObdRequestError('aborted', 'request aborted'));
        signal.addEventListener('abort', ex.onAbort, { once: true });
      }
      this.current = ex;
      this.stats.requests++;
      try {
        if (link) {
          link.channel.send(request).catch((err: unknown) => this.endExchange(ex, busError(err)));
        } else {
          this.sendFunctional(request);
        }
      } catch (err) {
        this.endExchange(ex, busError(err));
        return;
      }
      this.settle(ex);
    });
  }

  private sendFunctional(request: Uint8Array): void {
    const frame = new Uint8Array(this.padding === null ? request.length + 1 : 8);
    if (this.padding !== null) frame.fill(this.padding);
    frame[0] = request.length;
    frame.set(request, 1);
    this.sendFrame(obdFunctionalId(this.mode!), this.mode === '29-bit', frame);
  }

  /** Ends the exchange when nothing more is to come, or arms the timer for the next moment that can change that. */
  private settle(ex: Exchange): void {
    if (this.current !== ex) return;
    const now = this.clock.now();
    let next = ex.hardEnd;
    for (const [ecu, pending] of ex.pending) {
      if (now >= pending.until) {
        ex.answers.set(ecu, new ObdRequestError('timeout', `ECU ${ecu} sent response-pending but no answer within ${this.p2Star} ms`, { ecu }));
        ex.pending.delete(ecu);
      } else next = Math.min(next, pending.until);
    }
    const receiving = [...this.links.values()].some((l) => l.receiving && !ex.answers.has(l.ecu) && (ex.physical === null || ex.physical === l.ecu));
    const waiting = receiving || ex.pending.size > 0;
    const windowOver = now >= ex.windowEnd;
    const allIn = ex.expected !== null && [...ex.expected].every((ecu) => ex.answers.has(ecu));
    if (now >= ex.hardEnd || (!waiting && (windowOver || allIn))) {
      this.endExchange(ex, null);
      return;
    }
    // A multi-frame answer in progress ends by itself (message or N_Cr error), which settles again.
    if (!windowOver) next = Math.min(next, ex.windowEnd);
    if (ex.timer !== null) this.clock.clearTimeout(ex.timer);
    // Timers may fire a little early: the check above runs again and re-arms.
    ex.timer = this.clock.setTimeout(
      () => {
        ex.timer = null;
        this.settle(ex);
      },
      Math.max(1, Math.ceil(next - now)),
    );
  }

  private endExchange(ex: Exchange, failure: ObdRequestError | null): void {
    if (this.current !== ex) return;
    this.current = null;
    if (ex.timer !== null) this.clock.clearTimeout(ex.timer);
    ex.timer = null;
    if (ex.onAbort) ex.signal?.removeEventListener('abort', ex.onAbort);
    if (failure) {
      ex.reject(failure);
      return;
    }
    for (const ecu of ex.expected ?? []) {
      if (ex.answers.has(ecu)) continue;
      const silence = new ObdRequestError('timeout', `ECU ${ecu} did not answer`, { ecu });
      silences.add(silence);
      ex.answers.set(ecu, silence);
    }
    ex.resolve(ex.answers);
  }

  private noAnswer(what: string, ecu: number | undefined): ObdRequestError {
    const who = ecu === undefined ? 'no ECU answered' : `ECU ${ecu} did not answer`;
    return new ObdRequestError('timeout', `${who} ${what} (${this.mode}, P2 ${this.p2} ms)`, ecu === undefined ? {} : { ecu });
  }

  // ---- discovery ----

  private async runDiscovery(signal: AbortSignal | undefined): Promise<ObdEcuInfo[]> {
    const modes: ObdCanAddressing[] = this.addressing === 'auto' ? ['11-bit', '29-bit'] : [this.addressing];
    for (const mode of modes) {
      this.useAddressing(mode);
      const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, [0x00]), { expected: null }, mode01Matcher([0x00]), signal);
      const found = new Map<number, EcuRecord>();
      /** The next bitmap block each ECU says it has. */
      const nextBlock = new Map<number, number>();
      for (const [ecu, answer] of answers) {
        const data = this.bitmapData(answer, 0x00);
        if (data === null) continue;
        found.set(ecu, { ecu, supported: new Set(supportedPidsFromBitmap(0x00, data)) });
        const next = nextSupportedPidBlock(0x00, data);
        if (next !== null) nextBlock.set(ecu, next);
      }
      if (found.size === 0) continue;
      for (const block of SUPPORTED_PID_BLOCKS.slice(1)) {
        const asked = new Set([...nextBlock].filter(([, b]) => b === block).map(([ecu]) => ecu));
        if (asked.size === 0) break;
        const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, [block]), { expected: asked }, mode01Matcher([block]), signal);
        for (const ecu of asked) {
          nextBlock.delete(ecu);
          const answer = answers.get(ecu);
          const data = answer === undefined ? null : this.bitmapData(answer, block);
          if (data === null) continue;
          for (const pid of supportedPidsFromBitmap(block, data)) found.get(ecu)!.supported.add(pid);
          const next = nextSupportedPidBlock(block, data);
          if (next !== null) nextBlock.set(ecu, next);
        }
      }
      this.records.clear();
      for (const [ecu, record] of [...found].sort((a, b) => a[0] - b[0])) this.records.set(ecu, record);
      return this.ecus;
    }
    this.records.clear();
    if (this.addressing === 'auto') this.mode = null;
    throw new ObdRequestError('timeout', `no ECU answered 01 00 (${modes.join(', then ')} identifiers) within ${this.p2} ms`);
  }

  /** The 4 bitmap bytes of an answer to `01 <block>`, or null when the answer is anything else. */
  private bitmapData(answer: Uint8Array | ObdRequestError, block: number): Uint8Array | null {
    if (answer instanceof ObdRequestError) return null;
    try {
      const parsed = parseMode01Response(answer);
      if (parsed instanceof ObdNegativeResponse) return null;
      return parsed.readings.find((r) => r.pid === block)?.data ?? null;
    } catch {
      this.stats.malformedResponses++;
      return null;
    }
  }

  // ---- Mode 01 ----

  /** Functional request for one chunk; single-PID ECUs get their own physical requests after it. Returns whether anyone answered. */
  private async readChunkFunctional(chunk: number[], out: Map<number, EcuPidReadings>, signal: AbortSignal | undefined): Promise<boolean> {
    // After discovery we know who must answer (ECUs supporting none of the PIDs stay silent), so the wait can end early.
    let concerned: number[] | null = [...this.records.keys()].filter((ecu) => chunk.some((pid) => this.supportsPid(ecu, pid)));
    // Not discovered, or nobody advertises these PIDs (the bitmaps may be stale): ask anyway and wait out P2.
    if (concerned.length === 0) concerned = null;
    const singles = new Set(chunk.length > 1 ? (concerned ?? []).filter((ecu) => this.singlePid.has(ecu)) : []);
    let answered = false;
    if (concerned === null || concerned.length > singles.size) {
      // Single-PID ECUs stay expected: they answer the multi-PID request with NRC 0x12, and that answer must not
      // arrive during the physical requests that follow.
      const answers = await this.exchange(
        buildRequest(OBD_SERVICE.currentData, chunk),
        { expected: concerned === null ? null : new Set(concerned) },
        mode01Matcher(chunk),
        signal,
      );
      for (const [ecu, answer] of answers) {
        if (singles.has(ecu) && (answer instanceof ObdRequestError || isNrc(answer, NRC_SUBFUNCTION_NOT_SUPPORTED))) continue;
        const outcome = this.absorb(out, ecu, chunk, answer);
        if (outcome === 'fallback') singles.add(ecu);
        answered = outcome !== 'silent' || answered;
      }
    }
    for (const ecu of singles) answered = (await this.readSingles(ecu, chunk, out, signal)) || answered;
    return answered;
  }

  private async readChunkPhysical(ecu: number, chunk: number[], out: Map<number, EcuPidReadings>, signal: AbortSignal | undefined): Promise<boolean> {
    if (chunk.length > 1 && this.singlePid.has(ecu)) return this.readSingles(ecu, chunk, out, signal);
    const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, chunk), { ecu }, mode01Matcher(chunk), signal);
    const outcome = this.absorb(out, ecu, chunk, answers.get(ecu)!);
    if (outcome === 'fallback') return this.readSingles(ecu, chunk, out, signal);
    return outcome !== 'silent';
  }

  /** One physical request per PID the ECU may have. */
  private async readSingles(ecu: number, chunk: number[], out: Map<number, EcuPidReadings>, signal: AbortSignal | undefined): Promise<boolean> {
    let answered = false;
    for (const pid of chunk) {
      if (this.supportsPid(ecu, pid) === false) continue;
      const answers = await this.exchange(buildRequest(OBD_SERVICE.currentData, [pid]), { ecu }, mode01Matcher([pid]), signal);
      answered = this.absorb(out, ecu, [pid], answers.get(ecu)!) !== 'silent' || answered;
    }
    return answered;
  }

  /**
   * Adds one ECU's answer to a chunk to its entry. 'fallback': it refused a multi-PID request with NRC 0x12 (now
   * remembered); 'silent': it did not answer.
   */
  private absorb(out: Map<number, EcuPidReadings>, ecu: number, chunk: number[], answer: Uint8Array | ObdRequestError): 'answered' | 'fallback' | 'silent' {
    let entry = out.get(ecu);
    if (entry === undefined) {
      entry = { ecu, readings: [], missing: [] };
      out.set(ecu, entry);
    }
    const expected = chunk.filter((pid) => this.supportsPid(ecu, pid) !== false);
    const fail = (error: ObdRequestError): void => {
      entry.error = error;
      for (const pid of expected) if (!entry.missing.includes(pid)) entry.missing.push(pid);
    };
    if (answer instanceof ObdRequestError) {
      fail(answer);
      return silences.has(answer) ? 'silent' : 'answered';
    }
    let parsed;
    try {
      parsed = parseMode01Response(answer);
    } catch (err) {
      this.stats.malformedResponses++;
      fail(new ObdRequestError('malformed', `ECU ${ecu}: ${(err as Error).message}`, { ecu, cause: err }));
      return 'answered';
    }
    if (parsed instanceof ObdNegativeResponse) {
      if (parsed.nrc === NRC_SUBFUNCTION_NOT_SUPPORTED && chunk.length > 1) {
        this.singlePid.add(ecu);
        return 'fallback';
      }
      fail(new ObdRequestError('negative-response', `ECU ${ecu}: ${parsed.toString()}`, { ecu, negative: parsed }));
      return 'answered';
    }
    const got = new Set<number>();
    for (const reading of parsed.readings) {
      if (got.has(reading.pid)) continue;
      got.add(reading.pid);
      entry.readings.push(reading);
    }
    for (const pid of expected) if (!got.has(pid) && !entry.missing.includes(pid)) entry.missing.push(pid);
    return 'answered';
  }

  // ---- other services ----

  private serviceRequest<T>(
    request: Uint8Array,
    options: ObdRequestOptions,
    everyEcuAnswers: boolean,
    parse: (message: Uint8Array) => T | ObdNegativeResponse,
  ): Promise<EcuAnswer<T>[]> {
    const service = request[0]!;
    const subject = service === OBD_SERVICE.vehicleInfo ? request[1] : undefined;
    const matches = (m: Uint8Array): boolean => m[0] === service + 0x40 && (subject === undefined || m[1] === subject);
    return this.serial(options.signal, async () => {
      await this.ensureAddressing(options.signal);
      // J1979: every OBD ECU answers the DTC services; only ECUs holding the information answer Mode 09.
      const expected = everyEcuAnswers && this.records.size > 0 ? new Set(this.records.keys()) : null;
      if (options.ecu !== undefined) obdEcuIds(this.mode!, options.ecu);
      const target = options.ecu !== undefined ? { ecu: options.ecu } : { expected };
      const answers = await this.exchange(request, target, matches, options.signal);
      const out: EcuAnswer<T>[] = [];
      for (const [ecu, answer] of answers) {
        if (answer instanceof ObdRequestError) {
          out.push({ ecu, ok: false, error: answer });
          continue;
        }
        try {
          const value = parse(answer);
          if (value instanceof ObdNegativeResponse) {
            out.push({ ecu, ok: false, error: new ObdRequestError('negative-response', `ECU ${ecu}: ${value.toString()}`, { ecu, negative: value }) });
          } else out.push({ ecu, ok: true, value });
        } catch (err) {
          this.stats.malformedResponses++;
          out.push({ ecu, ok: false, error: new ObdRequestError('malformed', `ECU ${ecu}: ${(err as Error).message}`, { ecu, cause: err }) });
        }
      }
      if (out.every((a) => !a.ok && silences.has(a.error))) throw this.noAnswer(toHex(request), options.ecu);
      return out.sort((a, b) => a.ecu - b.ecu);
    });
  }
}

/** A Mode 01 answer is ours when it carries only PIDs we asked for: anything else is a late answer to another request. */
function mode01Matcher(pids: readonly number[]): (message: Uint8Array) => boolean {
  return (message) => {
    if (message[0] !== 0x41 || message.length < 2) return false;
    try {
      const parsed = parseMode01Response(message);
      return !(parsed instanceof ObdNegativeResponse) && parsed.readings.every((r) => pids.includes(r.pid));
    } catch {
      // Garbled: ours if it starts with a PID we asked for, and then reported as malformed.
      return pids.includes(message[1]!);
    }
  };
}

function isNrc(message: Uint8Array, nrc: number): boolean {
  return message.length === 3 && message[0] === 0x7f && message[2] === nrc;
}

/** The PIDs of a request, each once; throws ObdRequestError('invalid-request') for none or one that is not a byte. */
export function checkPids(pids: readonly number[]): number[] {
  if (!Array.isArray(pids) || pids.length === 0) throw new ObdRequestError('invalid-request', 'no PIDs to read');
  for (const pid of pids) {
    if (!Number.isInteger(pid) || pid < 0 || pid > 0xff) throw new ObdRequestError('invalid-request', `PID ${String(pid)} is not a byte`);
  }
  return [...new Set<number>(pids)];
}

function busError(err: unknown): ObdRequestError {
  if (err instanceof ObdRequestError) return err;
  const cause = (err as { cause?: unknown })?.cause ?? err;
  return new ObdRequestError('bus', `sending the request failed: ${String((cause as Error)?.message ?? cause)}`, { cause: err });
}

function positive(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new RangeError(`ObdCanClient: ${name} must be a positive number`);
  return value;
}
