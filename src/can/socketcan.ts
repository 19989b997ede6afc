/**
 * SocketCAN through the `socketcan` native addon: a `CanBus` on a kernel interface, whose endpoints are raw CAN
 * sockets with kernel receive filters, and the live `FrameSource` the agent reads a bus with.
 *
 * An endpoint outlives its socket. The interface may be missing at start, go down, or vanish and come back (a USB
 * adapter unplugged, `ip link set can0 down` for a bitrate change): the endpoint then reports the state change once,
 * retries with exponential backoff, and reopens a socket with the same filters when the interface is up again.
 * Nothing here throws out of a kernel callback, and nothing logs per frame.
 *
 * What the addon gives and does not give: it reads with recv() into a canfd_frame and hands each frame to JavaScript
 * as a new object with a new Buffer (that allocation is the addon's; our receive path adds none). It does not say
 * whether a frame was CAN FD, so a frame is reported as FD when its payload is longer than 8 bytes; an FD frame of 8
 * bytes or fewer reads as classic. It has no SO_RCVBUF or SO_RXQ_OVFL: a burst larger than the socket's receive
 * buffer (net.core.rmem_default) is dropped by the kernel, uncounted; raise rmem_default on gateways with busy buses.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { CanBusError, checkOutgoingFrame, type CanBus, type CanEndpoint, type CanEndpointOptions, type CanFilter } from './bus.js';
import { createFrame, type FrameSink, type FrameSource } from './frame.js';
import { BusHealth, type ControllerStateChange } from './bus-health.js';

/** The addon's raw channel, as far as we use it. */
interface RawChannel {
  addListener(event: 'onMessage', callback: (message: RawMessage) => void): void;
  addListener(event: 'onStopped', callback: () => void): void;
  start(): void;
  stop(): void;
  send(message: RawMessage): number;
  sendFD(message: RawMessage): number;
  setRxFilters(filters: { id: number; mask: number; invert?: boolean }[]): void;
  setErrorFilters(mask: number): void;
}

interface RawMessage {
  id: number;
  ext?: boolean;
  rtr?: boolean;
  err?: boolean;
  data: Uint8Array;
  ts_sec?: number;
  ts_usec?: number;
}

interface SocketCanAddon {
  createRawChannelWithOptions(ifname: string, options: { timestamps?: boolean; non_block_send?: boolean }): RawChannel;
}

let addon: SocketCanAddon | undefined;
/** Loaded on first use, so that hosts without CAN never load the native module. */
function loadAddon(): SocketCanAddon {
  addon ??= createRequire(import.meta.url)('socketcan') as SocketCanAddon;
  return addon;
}

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

/** The kernel's encoding of one filter: the format bit (EFF) is part of both id and mask, so 11- and 29-bit never mix. */
function kernelFilter(filter: CanFilter): { id: number; mask: number } {
  return {
    id: ((filter.extended ? CAN_EFF_FLAG : 0) | filter.id) >>> 0,
    mask: (CAN_EFF_FLAG | CAN_RTR_FLAG | filter.mask) >>> 0,
  };
}

export type EndpointState = 'starting' | InterfaceState | 'open' | 'closed';

export interface EndpointStateChange {
  interface: string;
  state: EndpointState;
  previous: EndpointState;
  /** Why the socket was lost or could not be opened, when known. */
  reason?: string;
}

export interface SocketCanOptions {
  /** Kernel timestamps (SIOCGSTAMP) on received frames instead of the time JavaScript sees them. Default true. */
  timestamps?: boolean;
  /** Backoff between reopen attempts: starts at `initialMs`, doubles, stays at `maxMs`. Default 100 ms to 5 s. */
  retry?: { initialMs?: number; maxMs?: number };
  /** Every change of an endpoint's state (opened, interface down or missing, closed): once per change. */
  onStateChange?: (change: EndpointStateChange) => void;
}

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

  private channel: RawChannel | null = null;
  private sink: FrameSink = () => {};
  private readonly filters: { id: number; mask: number }[] | null;
  private readonly errorFrames: boolean;
  private readonly timestamps: boolean;
  private readonly initialDelay: number;
  private readonly maxDelay: number;
  private delay: number;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private openedAt = 0;
  private readonly onStateChange: ((change: EndpointStateChange) => void) | undefined;
  private readonly stateWaiters: (() => void)[] = [];
  /** Reused for every send: the addon copies what it needs during the call. */
  private readonly outgoing: RawMessage = { id: 0, ext: false, rtr: false, data: new Uint8Array(0) };
  private readonly frame = createFrame();

  constructor(
    readonly ifname: string,
    options: CanEndpointOptions & SocketCanOptions,
  ) {
    const filters = options.filters ?? [];
    if (filters.length > MAX_KERNEL_FILTERS) {
      throw new CanBusError('io', `${ifname}: ${filters.length} receive filters; the kernel takes at most ${MAX_KERNEL_FILTERS}`);
    }
    this.filters = filters.length > 0 ? filters.map(kernelFilter) : null;
    this.errorFrames = options.errorFrames ?? false;
    this.timestamps = options.timestamps ?? true;
    this.initialDelay = options.retry?.initialMs ?? 100;
    this.maxDelay = options.retry?.maxMs ?? 5000;
    this.delay = this.initialDelay;
    this.onStateChange = options.onStateChange;
    this.frame.bus = ifname;
    this.attempt();
  }

  onFrame(sink: FrameSink): void {
    this.sink = sink;
  }

  /** Resolves when the endpoint has a socket (or is closed). */
  whenOpen(): Promise<void> {
    if (this.state === 'open' || this.state === 'closed') return Promise.resolve();
    return new Promise((resolve) => this.stateWaiters.push(resolve));
  }

  send(id: number, extended: boolean, data: Uint8Array, fd = false): void {
    checkOutgoingFrame(this.ifname, id, extended, data, fd);
    const channel = this.channel;
    if (channel === null) {
      const code = this.state === 'closed' ? 'closed' : this.state === 'missing' ? 'no-device' : 'down';
      throw new CanBusError(code, `${this.ifname}: cannot send, interface is ${this.state === 'starting' ? 'not open yet' : this.state}`);
    }
    const m = this.outgoing;
    m.id = id;
    m.ext = extended;
    m.data = data;
    let written: number;
    try {
      written = fd ? channel.sendFD(m) : channel.send(m);
    } catch (err) {
      throw new CanBusError('io', `${this.ifname}: send failed: ${(err as Error).message}`, { cause: err });
    }
    if (written < 0) {
      // The addon hides errno; the interface flags tell a down interface from a full transmit queue (ENOBUFS).
      const now = interfaceState(this.ifname);
      if (now !== 'up') throw new CanBusError(now === 'missing' ? 'no-device' : 'down', `${this.ifname}: cannot send, interface is ${now}`);
      throw new CanBusError('tx-full', `${this.ifname}: transmit queue full`);
    }
  }

  close(): void {
    if (this.state === 'closed') return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.dropChannel();
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
    let channel: RawChannel;
    try {
      channel = loadAddon().createRawChannelWithOptions(this.ifname, { timestamps: this.timestamps, non_block_send: true });
      if (this.filters) channel.setRxFilters(this.filters);
      channel.setErrorFilters(this.errorFrames ? CAN_ERR_MASK : 0);
      channel.addListener('onMessage', this.receive);
      channel.addListener('onStopped', () => this.lost(channel));
      channel.start();
    } catch (err) {
      // The interface went away between the sysfs check and the socket, or is not a CAN device.
      this.setState(interfaceState(this.ifname) === 'missing' ? 'missing' : 'down', (err as Error).message);
      this.scheduleRetry();
      return;
    }
    this.channel = channel;
    this.opens++;
    this.openedAt = performance.now();
    this.setState('open');
  }

  /** The addon's reader saw POLLERR/POLLHUP (ENETDOWN, ENODEV): the socket is dead; find out why and reopen. */
  private lost(channel: RawChannel): void {
    if (channel !== this.channel) return;
    this.channel = null;
    if (this.state === 'closed') return;
    const now = interfaceState(this.ifname);
    this.setState(now === 'up' ? 'down' : now, now === 'up' ? 'socket error' : undefined);
    // A socket that dies right after opening must not turn into a reopen loop.
    if (performance.now() - this.openedAt > 10_000) this.delay = this.initialDelay;
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const delay = this.delay;
    this.delay = Math.min(this.maxDelay, this.delay * 2);
    this.retryTimer = setTimeout(() => this.attempt(), delay);
  }

  private dropChannel(): void {
    const channel = this.channel;
    this.channel = null;
    if (!channel) return;
    try {
      channel.stop();
    } catch {
      // Already stopped by the addon after a socket error.
    }
  }

  private setState(state: EndpointState, reason?: string): void {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    if (state === 'open') this.delay = this.initialDelay;
    if (state === 'open' || state === 'closed') this.stateWaiters.splice(0).forEach((resolve) => resolve());
    this.onStateChange?.({ interface: this.ifname, state, previous, ...(reason ? { reason } : {}) });
  }

  /** The receive path: fills one reused frame, no allocation of ours. */
  private readonly receive = (m: RawMessage): void => {
    const f = this.frame;
    const data = m.data;
    f.ts = m.ts_sec !== undefined ? m.ts_sec + m.ts_usec! / 1e6 : Date.now() / 1000;
    f.id = m.id;
    f.extended = m.ext === true;
    f.remote = m.rtr === true;
    f.error = m.err === true;
    f.data = data;
    f.dlc = data.length;
    f.fd = data.length > 8;
    try {
      this.sink(f);
    } catch {
      // A throwing sink must not reach the addon (it would take the process down with a fatal exception); sinks
      // report their own errors.
    }
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

  run(sink: FrameSink, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    const endpoint = new SocketCanEndpoint(this.options.interface, { ...this.options, errorFrames: true });
    this.endpoint = endpoint;
    const health = this.health;
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
