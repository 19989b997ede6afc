/**
 * A CAN bus as the parts that talk on it (ISO-TP, OBD-II, the simulated ECUs, the frame writer) see it: a place to open
 * endpoints. An endpoint is what a raw SocketCAN socket is: it sends frames, and it receives the frames other endpoints
 * put on the bus that pass its filters (never its own, as the kernel's CAN_RAW_RECV_OWN_MSGS default has it).
 *
 * Two implementations: `SocketCanBus` (src/can/socketcan.ts) on a kernel interface, and `MemoryCanBus` (here) for
 * host tests of protocol logic. Anything written against `CanBus` runs unchanged on both.
 */
import { CAN_EFF_MASK, CAN_SFF_MASK, type CanFrame, type FrameSink } from './frame.js';

/**
 * A receive filter, with the kernel's semantics: a frame passes when `(frameId & mask) === (id & mask)` and its format
 * matches `extended`. An endpoint with no filters receives every data frame.
 */
export interface CanFilter {
  id: number;
  mask: number;
  /** true: 29-bit frames only; false: 11-bit frames only. */
  extended: boolean;
}

/** Exact-match filter for one identifier. */
export function exactFilter(id: number, extended = id > CAN_SFF_MASK): CanFilter {
  return { id, mask: extended ? CAN_EFF_MASK : CAN_SFF_MASK, extended };
}

export function filterMatches(filter: CanFilter, id: number, extended: boolean): boolean {
  return filter.extended === extended && ((id ^ filter.id) & filter.mask) === 0;
}

export interface CanEndpoint {
  /**
   * Puts one frame on the bus. `data` may be a reused buffer: implementations copy what they need before returning.
   * Throws `CanBusError` when the frame cannot be sent (interface down, transmit queue full, endpoint closed).
   * The signature matches `IsoTpLink`, so an endpoint can carry an ISO-TP channel directly.
   */
  send(id: number, extended: boolean, data: Uint8Array, fd?: boolean): void;
  /**
   * Registers the receiver of this endpoint's frames (one per endpoint; a second call replaces the first). The frame
   * object may be reused after the call returns.
   */
  onFrame(sink: FrameSink): void;
  close(): void;
}

export interface CanEndpointOptions {
  /** Kernel receive filters; omitted or empty receives everything. */
  filters?: readonly CanFilter[];
  /** Also deliver error frames (bus-off, error-passive, ...). Default false. */
  errorFrames?: boolean;
}

export interface CanBus {
  /** Interface name, e.g. `can0`. */
  readonly name: string;
  /** Opens a new endpoint (a socket). Throws `CanBusError` when the interface does not exist. */
  open(options?: CanEndpointOptions): CanEndpoint;
}

export type CanBusErrorCode = 'no-device' | 'down' | 'closed' | 'tx-full' | 'invalid-frame' | 'io';

export class CanBusError extends Error {
  override name = 'CanBusError';
  constructor(
    readonly code: CanBusErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Checks an outgoing frame the way the kernel would, so both bus implementations reject the same frames. */
export function checkOutgoingFrame(bus: string, id: number, extended: boolean, data: Uint8Array, fd: boolean): void {
  const max = extended ? CAN_EFF_MASK : CAN_SFF_MASK;
  if (!Number.isInteger(id) || id < 0 || id > max) {
    throw new CanBusError('invalid-frame', `${bus}: identifier 0x${id.toString(16)} does not fit a ${extended ? '29' : '11'}-bit frame`);
  }
  const limit = fd ? 64 : 8;
  if (data.length > limit) throw new CanBusError('invalid-frame', `${bus}: ${data.length}-byte payload exceeds ${limit} bytes`);
}

/**
 * An in-process bus: every endpoint sees the frames of the others on a later turn of the event loop, as it would from
 * a socket. For host tests of protocol logic only; anything that touches the kernel is tested on SocketCAN in the VM.
 */
export class MemoryCanBus implements CanBus {
  private readonly endpoints = new Set<MemoryEndpoint>();
  /** Every frame put on the bus, in order (copies), for assertions. */
  readonly log: CanFrame[] = [];
  /** When false, `send` throws `down`, as a SocketCAN interface that is down does. */
  up = true;

  constructor(readonly name = 'mem0') {}

  open(options: CanEndpointOptions = {}): CanEndpoint {
    const endpoint = new MemoryEndpoint(this, options);
    this.endpoints.add(endpoint);
    return endpoint;
  }

  /** @internal */
  detach(endpoint: MemoryEndpoint): void {
    this.endpoints.delete(endpoint);
  }

  /** @internal */
  transmit(from: MemoryEndpoint | null, id: number, extended: boolean, data: Uint8Array, fd: boolean): void {
    checkOutgoingFrame(this.name, id, extended, data, fd);
    if (!this.up) throw new CanBusError('down', `${this.name}: network is down`);
    const frame: CanFrame = {
      ts: Date.now() / 1000,
      bus: this.name,
      id,
      extended,
      fd,
      fdFlags: 0,
      remote: false,
      error: false,
      dlc: data.length,
      data: data.slice(),
    };
    this.log.push(frame);
    const receivers = [...this.endpoints].filter((e) => e !== from && e.accepts(id, extended));
    if (receivers.length > 0) setImmediate(() => receivers.forEach((e) => e.deliver(frame)));
  }

  /** Puts a frame on the bus from outside any endpoint (a test playing a foreign ECU). */
  inject(id: number, extended: boolean, data: Uint8Array | readonly number[], fd = false): void {
    this.transmit(null, id, extended, Uint8Array.from(data), fd);
  }
}

class MemoryEndpoint implements CanEndpoint {
  private sink: FrameSink | null = null;
  private closed = false;
  private readonly filters: readonly CanFilter[];

  constructor(
    private readonly bus: MemoryCanBus,
    options: CanEndpointOptions,
  ) {
    this.filters = options.filters ?? [];
  }

  accepts(id: number, extended: boolean): boolean {
    return this.filters.length === 0 || this.filters.some((f) => filterMatches(f, id, extended));
  }

  deliver(frame: CanFrame): void {
    if (!this.closed && this.sink) this.sink(frame);
  }

  send(id: number, extended: boolean, data: Uint8Array, fd = false): void {
    if (this.closed) throw new CanBusError('closed', `${this.bus.name}: endpoint is closed`);
    this.bus.transmit(this, id, extended, data, fd);
  }

  onFrame(sink: FrameSink): void {
    this.sink = sink;
  }

  close(): void {
    this.closed = true;
    this.bus.detach(this);
  }
}
