/**
 * SocketCAN: a `CanBus` on a kernel interface, whose endpoints are raw CAN sockets with kernel receive filters, and
 * the live `FrameSource` the agent reads a bus with. The socket is the project's own addon (src/can/can-socket.ts,
 * native/can-rx): batched reads into one preallocated buffer, kernel timestamps and the kernel's drop counter from
 * control messages, one wake-up per few milliseconds on a busy bus, no object per frame.
 *
 * An endpoint outlives its socket. The interface may be missing at start, go down, or vanish and come back (a USB
 * adapter unplugged, `ip link set can0 down` for a bitrate change): the endpoint then reports the state change once,
 * retries with exponential backoff, and reopens a socket with the same filters when the interface is up again.
 * Nothing here throws out of a kernel callback, and nothing logs per frame. Frames the kernel dropped because the
 * socket's receive buffer was full are counted (`kernelDrops`; the source adds them to the bus's health).
 */
import { readFileSync } from 'node:fs';
import { CanBusError, checkOutgoingFrame, type CanBus, type CanEndpoint, type CanEndpointOptions, type CanFilter } from './bus.js';
import { CanSocket } from './can-socket.js';
import { createFrame, SOURCE_READ_INTERVAL_MS, type CanFrame, type FrameSink, type FrameSource } from './frame.js';
import { BusHealth, type ControllerStateChange } from './bus-health.js';

const CAN_EFF_FLAG = 0x80000000;
const CAN_RTR_FLAG = 0x40000000;
/** Every error class (linux/can/error.h CAN_ERR_MASK). */
const CAN_ERR_MASK = 0x1fffffff;
const IFF_UP = 0x1;
/** The kernel accepts at most this many filters per socket (CAN_RAW_FILTER_MAX). */
export const MAX_KERNEL_FILTERS = 512;

export type InterfaceState = 'missing' | 'down' | 'up';

/** Reads the interface's administrative state from sysfs (cheap; only called when (re)opening). */
export function interfaceState(ifname: string): InterfaceState {
  // A name with a slash would read another sysfs file; the kernel's IFNAMSIZ is 16 including the terminator.
  if (!/^[^/\s]{1,15}$/.test(ifname) || ifname === '.' || ifname === '..') return 'missing';
  try {
    const flags = Number.parseInt(readFileSync(`/sys/class/net/${ifname}/flags`, 'utf8').trim(), 16);
    return flags & IFF_UP ? 'up' : 'down';
  } catch {
    return 'missing';
  }
}

/**
 * The kernel's encoding of the filters (struct can_filter pairs): the format bit (EFF) is part of both id and mask, so
 * 11- and 29-bit never mix.
 */
function kernelFilters(filters: readonly CanFilter[]): Uint32Array {
  const pairs = new Uint32Array(filters.length * 2);
  filters.forEach((filter, i) => {
    pairs[i * 2] = ((filter.extended ? CAN_EFF_FLAG : 0) | filter.id) >>> 0;
    pairs[i * 2 + 1] = (CAN_EFF_FLAG | CAN_RTR_FLAG | filter.mask) >>> 0;
  });
  return pairs;
}

export type EndpointState = 'starting' | InterfaceState | 'open' | 'closed';

export interface EndpointStateChange {
  interface: string;
  state: EndpointState;
  previous: EndpointState;
  /** Why the socket was lost or could not be opened, when known. */
  reason?: string;
  /** On `open`: the receive buffer the kernel granted the new socket, bytes. */
  receiveBufferBytes?: number;
}

export interface SocketCanOptions {
  /** Kernel receive times (SO_TIMESTAMPNS) on received frames instead of the time JavaScript reads them. Default true. */
  timestamps?: boolean;
  /** Backoff between reopen attempts: starts at `initialMs`, doubles, stays at `maxMs`. Default 100 ms to 5 s. */
  retry?: { initialMs?: number; maxMs?: number };
  /** Every change of an endpoint's state (opened, interface down or missing, closed): once per change. */
  onStateChange?: (change: EndpointStateChange) => void;
  /**
   * The socket receive buffer to ask for (SO_RCVBUF), bytes. The kernel charges about 1 KiB per queued frame, and
   * grants at most net.core.rmem_max unless the agent has CAP_NET_ADMIN. Default 1 MiB (about 1,000 frames: 120 ms of
   * a saturated 1 Mbit/s bus).
   */
  receiveBufferBytes?: number;
  /**
   * After a read that found frames, wait this long before looking again, so that a busy bus wakes the process once
   * per interval rather than once per frame (an idle bus never wakes it). Adds up to this much delivery latency; the
   * frames keep their kernel timestamps. Default 0 for endpoints (request/response traffic), SOURCE_READ_INTERVAL_MS for a source.
   */
  coalesceMs?: number;
  /** Frames the kernel dropped because the receive buffer was full: called with the number each time it grows. */
  onKernelDrops?: (dropped: number) => void;
}

export const DEFAULT_RECEIVE_BUFFER_BYTES = 1 << 20;

export class SocketCanBus implements CanBus {
  constructor(
    readonly name: string,
    private readonly options: SocketCanOptions = {},
  ) {}

  /** Opens an endpoint. It does not throw for a missing or down interface: it waits for it (see `state`). */
  open(options: CanEndpointOptions = {}): SocketCanEndpoint {
    return new SocketCanEndpoint(this.name, { ...this.options, ...options });
  }
}

export class SocketCanEndpoint implements CanEndpoint {
  state: EndpointState = 'starting';
  /** Sockets opened over the endpoint's life; more than one means it recovered from a lost interface. */
  opens = 0;
  /** Frames the kernel dropped (receive buffer full), over every socket the endpoint had. */
  kernelDrops = 0;
  /** The receive buffer the kernel granted the current socket, bytes (0 while none is open). */
  receiveBufferBytes = 0;
  /** Wake-ups of the sockets closed so far (see `wakeUps`). */
  private pastWakeUps = 0;

  private socket: CanSocket | null = null;
  private sink: FrameSink = () => {};
  private readonly filters: Uint32Array | null;
  private readonly errorFrames: boolean;
  private readonly timestamps: boolean;
  private readonly requestedBuffer: number;
  private readonly coalesceMs: number;
  private readonly initialDelay: number;
  private readonly maxDelay: number;
  private delay: number;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private openedAt = 0;
  private readonly onStateChange: ((change: EndpointStateChange) => void) | undefined;
  private readonly onKernelDrops: ((dropped: number) => void) | undefined;
  private readonly stateWaiters: (() => void)[] = [];
  private readonly frame = createFrame();

  constructor(
    readonly ifname: string,
    options: CanEndpointOptions & SocketCanOptions,
  ) {
    const filters = options.filters ?? [];
    if (filters.length > MAX_KERNEL_FILTERS) {
      throw new CanBusError('io', `${ifname}: ${filters.length} receive filters; the kernel takes at most ${MAX_KERNEL_FILTERS}`);
    }
    this.filters = filters.length > 0 ? kernelFilters(filters) : null;
    this.errorFrames = options.errorFrames ?? false;
    this.timestamps = options.timestamps ?? true;
    this.requestedBuffer = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;
    this.coalesceMs = options.coalesceMs ?? 0;
    this.initialDelay = options.retry?.initialMs ?? 100;
    this.maxDelay = options.retry?.maxMs ?? 5000;
    this.delay = this.initialDelay;
    this.onStateChange = options.onStateChange;
    this.onKernelDrops = options.onKernelDrops;
    this.frame.bus = ifname;
    this.attempt();
  }

  onFrame(sink: FrameSink): void {
    this.sink = sink;
  }

  /** Times the process woke up to read this endpoint's sockets: a few per coalescing interval on a busy bus, not one per frame. */
  get wakeUps(): number {
    return this.pastWakeUps + (this.socket?.wakeUps ?? 0);
  }

  /** Resolves when the endpoint has a socket (or is closed). */
  whenOpen(): Promise<void> {
    if (this.state === 'open' || this.state === 'closed') return Promise.resolve();
    return new Promise((resolve) => this.stateWaiters.push(resolve));
  }

  send(id: number, extended: boolean, data: Uint8Array, fd = false): void {
    checkOutgoingFrame(this.ifname, id, extended, data, fd);
    const socket = this.socket;
    if (socket === null) {
      const code = this.state === 'closed' ? 'closed' : this.state === 'missing' ? 'no-device' : 'down';
      throw new CanBusError(code, `${this.ifname}: cannot send, interface is ${this.state === 'starting' ? 'not open yet' : this.state}`);
    }
    const failure = socket.send(extended ? (CAN_EFF_FLAG | id) >>> 0 : id, data, fd);
    if (failure === null) return;
    if (failure === 'ENOBUFS' || failure === 'EAGAIN') throw new CanBusError('tx-full', `${this.ifname}: transmit queue full`);
    if (failure === 'ENETDOWN') throw new CanBusError('down', `${this.ifname}: cannot send, interface is down`);
    if (failure === 'ENODEV' || failure === 'ENXIO') throw new CanBusError('no-device', `${this.ifname}: cannot send, interface is missing`);
    throw new CanBusError('io', `${this.ifname}: send failed (${failure})`);
  }

  close(): void {
    if (this.state === 'closed') return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.dropSocket();
    this.setState('closed');
  }

  private attempt(): void {
    this.retryTimer = null;
    if (this.state === 'closed') return;
    const now = interfaceState(this.ifname);
    if (now !== 'up') {
      this.setState(now);
      this.scheduleRetry();
      return;
    }
    let socket: CanSocket;
    try {
      socket = new CanSocket(
        this.ifname,
        {
          filters: this.filters,
          errorMask: this.errorFrames ? CAN_ERR_MASK : 0,
          timestamps: this.timestamps,
          receiveBufferBytes: this.requestedBuffer,
          coalesceMs: this.coalesceMs,
        },
        this.frame,
        {
          sink: this.receive,
          onDrops: this.countDrops,
          onLost: (code) => this.lost(socket, code),
        },
      );
    } catch (err) {
      // The interface went away between the sysfs check and the socket, or is not a CAN device.
      this.setState(interfaceState(this.ifname) === 'missing' ? 'missing' : 'down', (err as Error).message);
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    this.receiveBufferBytes = socket.receiveBufferBytes;
    this.opens++;
    this.openedAt = performance.now();
    this.setState('open');
  }

  /** The socket failed (ENETDOWN, ENODEV) and is closed: find out why and reopen. */
  private lost(socket: CanSocket, code: string): void {
    if (socket !== this.socket) return;
    this.socket = null;
    this.receiveBufferBytes = 0;
    this.pastWakeUps += socket.wakeUps;
    if (this.state === 'closed') return;
    const now = interfaceState(this.ifname);
    this.setState(now === 'up' ? 'down' : now, now === 'up' ? `socket error ${code}` : undefined);
    // A socket that dies right after opening must not turn into a reopen loop.
    if (performance.now() - this.openedAt > 10_000) this.delay = this.initialDelay;
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const delay = this.delay;
    this.delay = Math.min(this.maxDelay, this.delay * 2);
    this.retryTimer = setTimeout(() => this.attempt(), delay);
  }

  private dropSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this.receiveBufferBytes = 0;
    if (!socket) return;
    this.pastWakeUps += socket.wakeUps;
    socket.close();
  }

  private setState(state: EndpointState, reason?: string): void {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    if (state === 'open') this.delay = this.initialDelay;
    if (state === 'open' || state === 'closed') this.stateWaiters.splice(0).forEach((resolve) => resolve());
    this.onStateChange?.({
      interface: this.ifname,
      state,
      previous,
      ...(reason ? { reason } : {}),
      ...(state === 'open' ? { receiveBufferBytes: this.receiveBufferBytes } : {}),
    });
  }

  private readonly countDrops = (dropped: number): void => {
    this.kernelDrops += dropped;
    this.onKernelDrops?.(dropped);
  };

  /** The receive path: the socket filled the endpoint's one frame; the current sink gets it. */
  private readonly receive = (frame: CanFrame): void => {
    this.sink(frame);
  };
}

export interface SocketCanSourceOptions extends SocketCanOptions {
  /** Kernel interface, e.g. `can0`. */
  interface: string;
  /** Name frames carry in `frame.bus`; default the interface name. */
  busName?: string;
  /** Kernel receive filters: only these frames wake the agent. Empty or omitted: every frame. */
  filters?: readonly CanFilter[];
  /** Controller state changes decoded from error frames (bus-off, error-passive, restarted). */
  onControllerState?: (change: ControllerStateChange) => void;
}

/**
 * A live bus. Data frames go to the sink; error frames go to `health` and, as the issue of bus health is the
 * controller's and not the decoder's, never to the sink.
 */
export class SocketCanSource implements FrameSource {
  readonly name: string;
  readonly health: BusHealth;
  /** Data frames delivered. */
  frames = 0;
  private endpoint: SocketCanEndpoint | null = null;

  constructor(private readonly options: SocketCanSourceOptions) {
    this.name = `socketcan:${options.interface}`;
    this.health = new BusHealth(options.busName ?? options.interface, options.onControllerState);
  }

  get state(): EndpointState {
    return this.endpoint?.state ?? 'starting';
  }

  /** Sockets opened so far (reopens after the interface came back count). */
  get opens(): number {
    return this.endpoint?.opens ?? 0;
  }

  /** The receive buffer the kernel granted the open socket, bytes (0 while none is open). */
  get receiveBufferBytes(): number {
    return this.endpoint?.receiveBufferBytes ?? 0;
  }

  /** Times the process woke up to read the bus (see SocketCanEndpoint.wakeUps). */
  get wakeUps(): number {
    return this.endpoint?.wakeUps ?? 0;
  }

  run(sink: FrameSink, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    const health = this.health;
    const onKernelDrops = this.options.onKernelDrops;
    const endpoint = new SocketCanEndpoint(this.options.interface, {
      ...this.options,
      errorFrames: true,
      coalesceMs: this.options.coalesceMs ?? SOURCE_READ_INTERVAL_MS,
      onKernelDrops: (dropped) => {
        health.kernelDrops += dropped;
        onKernelDrops?.(dropped);
      },
    });
    this.endpoint = endpoint;
    const busName = this.options.busName;
    endpoint.onFrame((frame) => {
      if (busName !== undefined) frame.bus = busName;
      if (frame.error) {
        health.record(frame);
        return;
      }
      this.frames++;
      sink(frame);
    });
    return new Promise((resolve) => {
      signal?.addEventListener(
        'abort',
        () => {
          endpoint.close();
          resolve();
        },
        { once: true },
      );
    });
  }

  /** Resolves once the source has a socket open (for tests and the CLI's first status). */
  whenOpen(): Promise<void> {
    return this.endpoint?.whenOpen() ?? Promise.resolve();
  }
}
