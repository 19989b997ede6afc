/**
 * A simulated emissions-related ECU answering SAE J1979 on CAN (ISO 15765-4), for tests and the demo.
 *
 * Its values come from the simulated car's drive cycle, so an OBD reading agrees with what the same car puts on its
 * DBC-encoded bus. Everything is encoded with src/obd/j1979.ts (the inverse of the agent's decoding); the ECU only
 * knows which vehicle state each PID carries.
 *
 * Behaviour follows J1979 on CAN: answers to functional and physical requests on the ECU's response identifier, only
 * the requested PIDs it has (in request order), silence to functional requests it cannot answer, and for physical
 * requests a negative response: 0x11 serviceNotSupported, 0x31 requestOutOfRange (no requested PID or info type
 * supported), 0x13 incorrectMessageLength. A "legacy" ECU answers NRC 0x12 to every multi-PID request, functional or
 * not, as pre-2008 ECUs do.
 *
 * The answer logic is `ObdEcuModel`, which knows no bus; `SimulatedObdEcu` puts it on CAN and the ELM327 simulator
 * (src/sim/elm327.ts) behind an adapter.
 */
import type { CanBus, CanEndpoint } from '../can/bus.js';
import { exactFilter } from '../can/bus.js';
import type { CanFrame } from '../can/frame.js';
import { IsoTpChannel, systemClock, type IsoTpClock } from '../can/isotp.js';
import { obdEcuIds, obdFunctionalId, type ObdCanAddressing } from '../obd/can-client.js';
import {
  dtcToBytes,
  encodePid,
  encodeSupportedPids,
  isPidEncodable,
  MAX_PIDS_PER_REQUEST,
  OBD_SERVICE,
  SUPPORTED_PID_BLOCKS,
  VEHICLE_INFO,
} from '../obd/j1979.js';
import type { VehicleState } from './drive-cycle.js';

/** Engine displacement of the demo car (litres), for the air mass flow. */
const DISPLACEMENT_L = 1.6;
/** Air density at the intake (g/L). */
const INTAKE_AIR_DENSITY = 1.2;
/** Scale height of the barometric formula (m). */
const PRESSURE_SCALE_HEIGHT_M = 8434;

/** What the ECU knows of the car at the moment of a request. */
export interface SimulatedEcuView {
  state: Readonly<VehicleState>;
  /** Seconds since the engine started (as this ECU saw it), 0 when it is not running. */
  runTimeS: number;
}

/** The vehicle state each PID reports, in the PID's unit; the encoding is j1979's. */
export const SIMULATED_PID_SOURCES: Readonly<Record<number, (view: SimulatedEcuView) => number>> = {
  0x04: ({ state }) => state.engineLoadPct,
  0x05: ({ state }) => state.coolantTempC,
  0x0c: ({ state }) => state.engineRpm,
  0x0d: ({ state }) => state.speedKph,
  0x0f: ({ state }) => state.intakeAirTempC,
  // Speed-density: two revolutions per intake stroke of the whole displacement, filled in proportion to the load.
  0x10: ({ state }) => (state.engineRunning ? (state.engineRpm / 120) * DISPLACEMENT_L * INTAKE_AIR_DENSITY * (state.engineLoadPct / 100) : 0),
  0x11: ({ state }) => state.throttlePct,
  0x1f: ({ runTimeS }) => runTimeS,
  0x2f: ({ state }) => state.fuelLevelPct,
  0x33: ({ state }) => 101.325 * Math.exp(-state.altitudeM / PRESSURE_SCALE_HEIGHT_M),
  0x42: ({ state }) => state.batteryVoltageV,
  0x46: ({ state }) => state.ambientTempC,
  0x5c: ({ state }) => state.oilTempC,
  0x5e: ({ state }) => state.fuelRateLph,
  0xa6: ({ state }) => state.odometerKm,
};

/** An engine control module: every PID above. */
export const ENGINE_ECU_PIDS: readonly number[] = Object.keys(SIMULATED_PID_SOURCES).map(Number);

export const DEMO_VIN = 'WDX1SMDEMC0000001';

/** What an ECU knows and has, independent of the bus it answers on. */
export interface ObdEcuModelOptions {
  /** The car: a DriveCycle or a SimulatedVehicle (read at each request, never stepped by the ECU). */
  vehicle: { readonly state: Readonly<VehicleState> };
  /** Mode 01 PIDs it has, from SIMULATED_PID_SOURCES. Default ENGINE_ECU_PIDS. */
  pids?: readonly number[];
  /** Advertised in its bitmaps but never answered, as some ECUs do. */
  unansweredPids?: readonly number[];
  /** Answers NRC 0x12 to any Mode 01 request with more than one PID. */
  legacy?: boolean;
  dtcs?: { stored?: readonly string[]; pending?: readonly string[]; permanent?: readonly string[] };
  /** null: no VIN (Mode 09 info type 02 not supported). Default DEMO_VIN. */
  vin?: string | null;
  /** Calibration IDs, up to 16 ASCII characters each; empty: info type 04 not supported. */
  calibrationIds?: readonly string[];
}

export interface SimulatedObdEcuOptions extends ObdEcuModelOptions {
  /** Default '11-bit'. */
  addressing?: ObdCanAddressing;
  /** Address: 0-7 with 11-bit identifiers (0 answers on 0x7E8), a byte with 29-bit ones. Default 0, or 0x10 for 29-bit. */
  ecu?: number;
  /** Sends `count` response-pending NRCs (0x78), `intervalMs` apart, before each answer to these services (default all). */
  responsePending?: { count: number; intervalMs: number; services?: readonly number[] };
  /** Fill byte for 8-byte frames; null for short frames. Default 0xCC. */
  padding?: number | null;
  clock?: IsoTpClock;
}

export interface SimulatedObdEcuCounters {
  functionalRequests: number;
  physicalRequests: number;
  /** Requests it stayed silent to. */
  unanswered: number;
  negativeResponses: number;
  /** Answers that could not be sent (the tester sent no flow control, the bus refused). */
  sendErrors: number;
}

const NRC = { serviceNotSupported: 0x11, subFunctionNotSupported: 0x12, incorrectMessageLength: 0x13, requestOutOfRange: 0x31, responsePending: 0x78 } as const;

/**
 * The J1979 answer logic of one ECU, with no bus: a request payload in, the response payload out. Shared by the
 * CAN ECU below and the ELM327 simulator, so both answer alike.
 */
export class ObdEcuModel {
  /** Mode 01 PIDs it reports as supported: its PIDs and the bitmap PIDs (20, 40, …) that lead to them. */
  readonly supportedPids: ReadonlySet<number>;

  private readonly vehicle: { readonly state: Readonly<VehicleState> };
  private readonly legacy: boolean;
  private readonly unanswered: ReadonlySet<number>;
  private readonly infoTypes: number[];
  private readonly vin: string | null;
  private readonly calibrationIds: string[];
  private stored: string[];
  private pending: string[];
  private readonly permanent: string[];
  private engineStartS: number | null = null;

  constructor(options: ObdEcuModelOptions) {
    this.vehicle = options.vehicle;
    this.legacy = options.legacy ?? false;

    const pids = [...new Set(options.pids ?? ENGINE_ECU_PIDS)];
    for (const pid of pids) {
      if (SIMULATED_PID_SOURCES[pid] === undefined || !isPidEncodable(pid)) {
        throw new RangeError(`ObdEcuModel: PID 0x${pid.toString(16)} has no simulated source`);
      }
    }
    this.unanswered = new Set(options.unansweredPids ?? []);
    const supported = new Set<number>([...pids, ...this.unanswered]);
    // A bitmap PID is supported when some PID beyond it is: that is how the tester knows to ask for the next block.
    for (const block of SUPPORTED_PID_BLOCKS.slice(1)) if ([...supported].some((pid) => pid > block)) supported.add(block);
    this.supportedPids = supported;

    const dtcs = options.dtcs ?? {};
    this.stored = [...(dtcs.stored ?? [])];
    this.pending = [...(dtcs.pending ?? [])];
    this.permanent = [...(dtcs.permanent ?? [])];
    for (const code of [...this.stored, ...this.pending, ...this.permanent]) dtcToBytes(code);

    this.vin = options.vin === undefined ? DEMO_VIN : options.vin;
    if (this.vin !== null && !/^[A-Z0-9]{17}$/.test(this.vin)) throw new RangeError(`ObdEcuModel: VIN ${this.vin} is not 17 letters and digits`);
    this.calibrationIds = [...(options.calibrationIds ?? ['DEMO-ECU-CAL-241'])];
    for (const id of this.calibrationIds) {
      if (!/^[\x20-\x7e]{1,16}$/.test(id)) throw new RangeError(`ObdEcuModel: calibration ID ${JSON.stringify(id)} is not 1-16 ASCII characters`);
    }
    this.infoTypes = [...(this.vin !== null ? [VEHICLE_INFO.vin] : []), ...(this.calibrationIds.length > 0 ? [VEHICLE_INFO.calibrationIds] : [])];
  }

  /** Current DTCs by kind (Mode 04 clears stored and pending ones; permanent ones stay, as J1979 has it). */
  get dtcs(): { stored: string[]; pending: string[]; permanent: string[] } {
    return { stored: [...this.stored], pending: [...this.pending], permanent: [...this.permanent] };
  }

  /** Sets the stored (confirmed) DTCs, as a fault the car just developed. */
  setStoredDtcs(codes: readonly string[]): void {
    for (const code of codes) dtcToBytes(code);
    this.stored = [...codes];
  }

  /**
   * The answer to a request (service byte first), or null for silence, with its effect on the ECU: a Mode 04 answer
   * clears the stored and pending DTCs. Values are read from the car at this moment.
   */
  respond(request: Uint8Array, functional: boolean): Uint8Array | null {
    const response = this.preview(request, functional);
    if (response !== null && response[0] === OBD_SERVICE.clearDtcs + 0x40) {
      this.stored = [];
      this.pending = [];
    }
    return response;
  }

  /** What `respond` would answer, leaving the DTCs alone (to decide on response-pending before answering). */
  preview(request: Uint8Array, functional: boolean): Uint8Array | null {
    const sid = request[0]!;
    // J1979: functional requests the ECU cannot serve get no answer at all; physical ones a negative response.
    const refuse = (nrc: number): Uint8Array | null => (functional ? null : Uint8Array.of(0x7f, sid, nrc));
    switch (sid) {
      case OBD_SERVICE.currentData:
        return this.currentData(request, refuse);
      case OBD_SERVICE.storedDtcs:
      case OBD_SERVICE.pendingDtcs:
      case OBD_SERVICE.permanentDtcs: {
        if (request.length !== 1) return refuse(NRC.incorrectMessageLength);
        const codes = sid === OBD_SERVICE.storedDtcs ? this.stored : sid === OBD_SERVICE.pendingDtcs ? this.pending : this.permanent;
        return Uint8Array.from([sid + 0x40, codes.length, ...codes.flatMap(dtcToBytes)]);
      }
      case OBD_SERVICE.clearDtcs:
        return request.length === 1 ? Uint8Array.of(0x44) : refuse(NRC.incorrectMessageLength);
      case OBD_SERVICE.vehicleInfo:
        return this.vehicleInfo(request, refuse);
      default:
        return refuse(NRC.serviceNotSupported);
    }
  }

  private currentData(request: Uint8Array, refuse: (nrc: number) => Uint8Array | null): Uint8Array | null {
    const pids = request.subarray(1);
    if (pids.length === 0 || pids.length > MAX_PIDS_PER_REQUEST) return refuse(NRC.incorrectMessageLength);
    if (this.legacy && pids.length > 1) return Uint8Array.of(0x7f, OBD_SERVICE.currentData, NRC.subFunctionNotSupported);
    const view = this.view();
    const out: number[] = [0x41];
    for (const pid of pids) {
      if (this.unanswered.has(pid)) continue;
      if (pid === 0x00 || (SUPPORTED_PID_BLOCKS.includes(pid) && this.supportedPids.has(pid))) {
        out.push(pid, ...encodeSupportedPids(pid, this.supportedPids));
      } else if (this.supportedPids.has(pid)) {
        out.push(pid, ...encodePid(pid, SIMULATED_PID_SOURCES[pid]!(view)));
      }
    }
    return out.length > 1 ? Uint8Array.from(out) : refuse(NRC.requestOutOfRange);
  }

  private vehicleInfo(request: Uint8Array, refuse: (nrc: number) => Uint8Array | null): Uint8Array | null {
    if (request.length !== 2) return refuse(NRC.incorrectMessageLength);
    const infoType = request[1]!;
    if (infoType === 0x00) return Uint8Array.from([0x49, 0x00, ...encodeSupportedPids(0x00, this.infoTypes)]);
    if (infoType === VEHICLE_INFO.vin && this.vin !== null) {
      // On CAN the VIN is one data item: the count byte 01, then 17 ASCII characters (a multi-frame answer).
      return Uint8Array.from([0x49, VEHICLE_INFO.vin, 0x01, ...ascii(this.vin, 17)]);
    }
    if (infoType === VEHICLE_INFO.calibrationIds && this.calibrationIds.length > 0) {
      return Uint8Array.from([0x49, VEHICLE_INFO.calibrationIds, this.calibrationIds.length, ...this.calibrationIds.flatMap((id) => ascii(id, 16))]);
    }
    return refuse(NRC.requestOutOfRange);
  }

  private view(): SimulatedEcuView {
    const state = this.vehicle.state;
    // The ECU sees the car only when asked, so an engine start is noticed at the first request that finds it running.
    if (!state.engineRunning) this.engineStartS = null;
    else if (this.engineStartS === null) this.engineStartS = state.timeS;
    return { state, runTimeS: this.engineStartS === null ? 0 : state.timeS - this.engineStartS };
  }
}

/** An ObdEcuModel on a CAN bus: ISO-TP on its request/response identifiers, response-pending NRCs when configured. */
export class SimulatedObdEcu {
  readonly ecu: number;
  readonly addressing: ObdCanAddressing;
  readonly requestId: number;
  readonly responseId: number;
  readonly functionalId: number;
  /** Mode 01 PIDs it reports as supported: its PIDs and the bitmap PIDs (20, 40, …) that lead to them. */
  readonly supportedPids: ReadonlySet<number>;

  private readonly model: ObdEcuModel;
  private readonly endpoint: CanEndpoint;
  private readonly channel: IsoTpChannel;
  private readonly clock: IsoTpClock;
  private readonly padding: number | null;
  private readonly pendingPlan: { count: number; intervalMs: number; services: readonly number[] | null } | null;
  /** Requests are served one after the other, as an ECU's diagnostic task does. */
  private queue: Promise<void> = Promise.resolve();
  private readonly timers = new Set<unknown>();
  private closed = false;
  private readonly stats: SimulatedObdEcuCounters = { functionalRequests: 0, physicalRequests: 0, unanswered: 0, negativeResponses: 0, sendErrors: 0 };

  constructor(bus: CanBus, options: SimulatedObdEcuOptions) {
    this.addressing = options.addressing ?? '11-bit';
    this.ecu = options.ecu ?? (this.addressing === '29-bit' ? 0x10 : 0);
    ({ requestId: this.requestId, responseId: this.responseId } = obdEcuIds(this.addressing, this.ecu));
    this.functionalId = obdFunctionalId(this.addressing);
    this.clock = options.clock ?? systemClock;
    this.padding = options.padding === undefined ? 0xcc : options.padding;
    this.model = new ObdEcuModel(options);
    this.supportedPids = this.model.supportedPids;
    const plan = options.responsePending;
    this.pendingPlan = plan && plan.count > 0 ? { count: plan.count, intervalMs: plan.intervalMs, services: plan.services ?? null } : null;

    const extended = this.addressing === '29-bit';
    this.endpoint = bus.open({ filters: [exactFilter(this.functionalId, extended), exactFilter(this.requestId, extended)] });
    this.channel = new IsoTpChannel(this.endpoint, { txId: this.responseId, rxId: this.requestId, extended, padding: this.padding, clock: this.clock });
    this.channel.onMessage((request) => this.enqueue(request, false));
    this.endpoint.onFrame(this.onFrame);
  }

  get counters(): SimulatedObdEcuCounters {
    return { ...this.stats };
  }

  /** Current DTCs by kind (Mode 04 clears stored and pending ones; permanent ones stay, as J1979 has it). */
  get dtcs(): { stored: string[]; pending: string[]; permanent: string[] } {
    return this.model.dtcs;
  }

  /** Sets the stored (confirmed) DTCs, as a fault the car just developed. */
  setStoredDtcs(codes: readonly string[]): void {
    this.model.setStoredDtcs(codes);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const timer of this.timers) this.clock.clearTimeout(timer);
    this.timers.clear();
    this.channel.close();
    this.endpoint.close();
  }

  private readonly onFrame = (frame: CanFrame): void => {
    if (frame.id === this.requestId) {
      this.channel.onFrame(frame);
      return;
    }
    // Functional requests are single frames (ISO 15765-4); anything else on the functional identifier is ignored.
    const d = frame.data;
    if (frame.remote || frame.error || d.length < 2 || d[0]! >> 4 !== 0) return;
    const length = d[0]! & 0x0f;
    if (length === 0 || length > d.length - 1) return;
    this.enqueue(d.slice(1, 1 + length), true);
  };

  private enqueue(request: Uint8Array, functional: boolean): void {
    if (functional) this.stats.functionalRequests++;
    else this.stats.physicalRequests++;
    this.queue = this.queue
      .then(() => this.serve(request, functional))
      .catch(() => {
        this.stats.sendErrors++;
      });
  }

  private async serve(request: Uint8Array, functional: boolean): Promise<void> {
    if (this.closed) return;
    const sid = request[0]!;
    const plan = this.pendingPlan;
    // Response pending only makes sense for a request the ECU is going to answer.
    if (plan && (plan.services === null || plan.services.includes(sid)) && this.model.preview(request, functional) !== null) {
      for (let k = 0; k < plan.count; k++) {
        await this.send(Uint8Array.of(0x7f, sid, NRC.responsePending));
        await this.sleep(plan.intervalMs);
        if (this.closed) return;
      }
    }
    // The DTCs are cleared as the answer goes out, after any response-pending delay.
    const response = this.model.respond(request, functional);
    if (response === null) {
      this.stats.unanswered++;
      return;
    }
    if (response[0] === 0x7f) this.stats.negativeResponses++;
    await this.send(response);
  }

  private async send(message: Uint8Array): Promise<void> {
    if (this.closed) return;
    await this.channel.send(message);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.add(timer);
    });
  }
}

/** ASCII bytes of `text`, NUL-padded to `length`. */
function ascii(text: string, length: number): number[] {
  const out = new Array<number>(length).fill(0);
  for (let k = 0; k < text.length && k < length; k++) out[k] = text.charCodeAt(k);
  return out;
}
