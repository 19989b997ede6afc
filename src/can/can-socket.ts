/**
 * One raw CAN socket through the project's own addon (native/can-rx/can_rx.c): the receive path of a SocketCAN
 * endpoint, and its send path (the same socket, so an endpoint never hears its own frames).
 *
 * Receiving: the addon reads up to SLOTS queued frames per system call (recvmmsg) into one ArrayBuffer of fixed
 * slots allocated here at open; each frame fills the ONE reused `CanFrame` the caller gave, its `data` a view into
 * the slot (one view per slot and length, made the first time that pair occurs and reused after), and goes to the
 * sink. No object is created per frame or per read. Kernel receive times come with each frame (SO_TIMESTAMPNS), the
 * FD flag from the size the kernel delivered (CANFD_MTU or CAN_MTU), the kernel's drop counter (SO_RXQ_OVFL) rides
 * along and is read from a shared Uint32Array.
 *
 * Wake-ups: the addon calls us once when the socket becomes readable, then stops watching it. We drain it until it
 * is empty; when we got frames we look again after `coalesceMs` with a timer instead of re-arming the watch, so a
 * busy bus costs one wake-up per interval (8,000 frames/s at 5 ms: about 200 a second, 40 frames each) rather than
 * one per frame; when a look finds nothing, the watch is re-armed and an idle bus costs nothing at all. The price is
 * up to `coalesceMs` of delivery latency after the first frame of a busy period (its timestamp is the kernel's). A
 * backlog larger than one wake-up takes (MAX_READS_PER_WAKE full reads) is read on at the event loop's next turn.
 *
 * Failure: `open` throws a `CanSocketError` (code: the errno name, ENODEV, ENETDOWN, EAFNOSUPPORT...; message naming
 * the interface and the step). After that nothing throws out of the addon's callback: a socket error (the interface
 * went down or vanished) is reported once to `onLost` with the errno name after the frames the kernel still had
 * queued were delivered, and the socket is closed. A throwing sink is the sink's problem: its exception is dropped
 * here (sinks report their own errors), so one bad frame cannot stop the bus.
 */
import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';
import type { CanFrame, FrameSink } from './frame.js';

/** What the addon exports (see the header of native/can-rx/can_rx.c). */
interface CanRxAddon {
  readonly slotBytes: number;
  open(
    ifname: string,
    options: { rcvbuf?: number; errorMask?: number; timestamps?: boolean; filters?: Uint32Array | null },
    slots: ArrayBuffer,
    stats: Uint32Array,
    onReadable: (status: number) => void,
  ): CanRxHandle;
  read(handle: CanRxHandle): number;
  arm(handle: CanRxHandle): void;
  write(handle: CanRxHandle, canId: number, data: Uint8Array, fd: boolean, fdFlags: number): number;
  close(handle: CanRxHandle): void;
}
declare const handleBrand: unique symbol;
type CanRxHandle = { readonly [handleBrand]: true };

/** Where the build puts the addon, relative to this file (dist/src/can/ in the repository and in the package). */
const ADDON_PATH = '../../../native/can-rx/build/Release/can_rx.node';

let addon: CanRxAddon | undefined;
/** Loaded on first use, so that hosts and commands without CAN never load it. */
function loadAddon(): CanRxAddon {
  if (addon) return addon;
  let loaded: CanRxAddon;
  try {
    loaded = createRequire(import.meta.url)(ADDON_PATH) as CanRxAddon;
  } catch (err) {
    throw new CanSocketError(
      'ENOADDON',
      `the SocketCAN addon is not built (native/can-rx: ${(err as Error).message.split('\n')[0]}); npm install builds it, or run: npm run install`,
    );
  }
  if (loaded.slotBytes !== SLOT_BYTES)
    throw new CanSocketError('ENOADDON', `the SocketCAN addon in native/can-rx is stale (slots of ${loaded.slotBytes} bytes); rebuild it: npm run install`);
  addon = loaded;
  return addon;
}

/** Slot layout, as the addon writes it. */
const SLOT_BYTES = 88;
const SLOT_U32 = SLOT_BYTES / 4;
const SLOT_F64 = SLOT_BYTES / 8;
/** Byte offsets within a slot: struct canfd_frame first, then the kernel time (f64) and the received size (u32). */
const LEN_OFFSET = 4;
const FLAGS_OFFSET = 5;
const DATA_OFFSET = 8;
const TS_F64 = 9; // byte 72
const SIZE_U32 = 20; // byte 80
/** One more than the longest payload: the views are indexed slot * VIEWS_PER_SLOT + length. */
const VIEWS_PER_SLOT = 65;

const CANFD_MTU = 72;
const CAN_EFF_FLAG = 0x80000000;
const CAN_RTR_FLAG = 0x40000000;
const CAN_ERR_FLAG = 0x20000000;
const CAN_SFF_MASK = 0x7ff;
const CAN_EFF_MASK = 0x1fffffff;
/** The FD flags a frame keeps (candump's `##` nibble without FDF, which every FD frame carries on new kernels). */
const FD_FLAGS_KEPT = 0x03;

/** Frames per read: 128 slots is 11 KiB, and a 20,000-frame burst takes 157 reads. */
export const DEFAULT_SLOTS = 128;
/** Reads per wake-up before the event loop gets a turn (the timer comes back for the rest). */
const MAX_READS_PER_WAKE = 32;

export class CanSocketError extends Error {
  override name = 'CanSocketError';
  constructor(
    /** The errno name (ENODEV, ENETDOWN, EAFNOSUPPORT...), or ENOADDON when the addon is not built. */
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface CanSocketOptions {
  /** Kernel receive filters as id/mask pairs (struct can_filter); null receives every frame. */
  filters: Uint32Array | null;
  /** Error classes to receive as error frames (CAN_RAW_ERR_FILTER); 0 for none. */
  errorMask: number;
  /** Kernel receive times (true) or the time of the read (false). */
  timestamps: boolean;
  /** SO_RCVBUF asked for, bytes; the kernel may grant less (net.core.rmem_max) unless the agent has CAP_NET_ADMIN. */
  receiveBufferBytes: number;
  /** Pause after a read that found frames before looking again; 0 re-arms the watch at once. */
  coalesceMs: number;
  /** Frames per read. Default DEFAULT_SLOTS. */
  slots?: number;
}

export interface CanSocketEvents {
  /** Each frame, in the reused `frame`. */
  sink: FrameSink;
  /** Frames the kernel dropped since the last call (the receive buffer was full), when that number grew. */
  onDrops(dropped: number): void;
  /** The socket failed (code: the errno name); it is closed, the frames queued before the failure were delivered. */
  onLost(code: string): void;
}

export class CanSocket {
  /** The receive buffer the kernel granted, bytes (it counts its own overhead: about 1 KiB per queued frame). */
  readonly receiveBufferBytes: number;
  /** Frames the kernel dropped on this socket because its receive buffer was full. */
  kernelDrops = 0;
  /** Times the socket was looked at (the readable callback or the coalescing timer): the process's wake-ups for it. */
  wakeUps = 0;

  private readonly addon: CanRxAddon;
  private readonly handle: CanRxHandle;
  private readonly slots: number;
  private readonly u8: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly f64: Float64Array;
  private readonly views: (Uint8Array | undefined)[];
  /** Written by the addon at any read: over an ArrayBuffer of its own, so its memory never moves (a small typed array may live in the JS heap). */
  private readonly stats = new Uint32Array(new ArrayBuffer(8));
  private readonly timestamps: boolean;
  private readonly coalesceMs: number;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private immediate: ReturnType<typeof setImmediate> | null = null;
  private closed = false;

  /** Opens and starts receiving; throws `CanSocketError`. */
  constructor(
    readonly ifname: string,
    options: CanSocketOptions,
    private readonly frame: CanFrame,
    private readonly events: CanSocketEvents,
  ) {
    this.addon = loadAddon();
    this.slots = options.slots ?? DEFAULT_SLOTS;
    const buffer = new ArrayBuffer(this.slots * SLOT_BYTES);
    this.u8 = new Uint8Array(buffer);
    this.u32 = new Uint32Array(buffer);
    this.f64 = new Float64Array(buffer);
    this.views = new Array<Uint8Array | undefined>(this.slots * VIEWS_PER_SLOT).fill(undefined);
    this.timestamps = options.timestamps;
    this.coalesceMs = options.coalesceMs;
    try {
      this.handle = this.addon.open(
        ifname,
        { rcvbuf: options.receiveBufferBytes, errorMask: options.errorMask, timestamps: options.timestamps, filters: options.filters },
        buffer,
        this.stats,
        this.onReadable,
      );
    } catch (err) {
      // The addon names the errnos the agent tells apart; node knows the names of all of them.
      const e = err as Error & { code?: string; errno?: number };
      throw new CanSocketError(typeof e.errno === 'number' ? errnoName(-e.errno) : (e.code ?? 'EIO'), e.message);
    }
    this.receiveBufferBytes = this.stats[1]!;
    this.addon.arm(this.handle);
  }

  /** Sends one frame (`canId` with its EFF flag); returns null, or the errno name (ENOBUFS: transmit queue full). */
  send(canId: number, data: Uint8Array, fd: boolean): string | null {
    if (this.closed) return 'EBADF';
    const written = this.addon.write(this.handle, canId >>> 0, data, fd, 0);
    return written < 0 ? errnoName(written) : null;
  }

  /** Stops receiving and closes the socket; again is harmless, and so is calling it from the sink. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
    this.addon.close(this.handle);
  }

  /** The addon's one call after arm(): the socket is readable, or failed (status < 0). */
  private readonly onReadable = (status: number): void => {
    this.look(status < 0);
  };

  private readonly onTimer = (): void => {
    this.immediate = null;
    this.look(false);
  };

  /** Drains what is queued, then decides how to hear of the socket next. */
  private look(failed: boolean): void {
    if (this.closed) return;
    this.wakeUps++;
    let got = 0;
    let error = 0;
    /** The last read filled every slot: more is queued than one wake-up takes. */
    let full = false;
    for (let reads = 0; reads < MAX_READS_PER_WAKE; reads++) {
      const n = this.addon.read(this.handle);
      if (n < 0) {
        error = n;
        full = false;
        break;
      }
      if (n > 0) this.deliver(n);
      if (this.closed) return; // the sink closed us
      got += n;
      full = n === this.slots;
      if (!full) break;
    }
    this.countDrops();
    if (error !== 0 || (failed && got === 0)) {
      // The kernel reports a socket error before the frames still queued (sock_error() comes first): deliver them.
      for (let reads = 0; reads < MAX_READS_PER_WAKE && error !== 0; reads++) {
        const n = this.addon.read(this.handle);
        if (n <= 0) break;
        this.deliver(n);
        if (this.closed) return;
      }
      this.countDrops();
      this.close();
      this.events.onLost(error !== 0 ? errnoName(error) : 'EIO');
      return;
    }
    if (full) {
      // A backlog (a burst, or the process was busy elsewhere): go on after the event loop's turn, not after a pause.
      this.immediate = setImmediate(this.onTimer);
    } else if (got > 0 && this.coalesceMs > 0) {
      // Busy: look again after the pause, with the same timer object (no allocation per wake-up).
      if (this.timer) this.timer.refresh();
      else this.timer = setTimeout(this.onTimer, this.coalesceMs);
    } else {
      this.addon.arm(this.handle);
    }
  }

  /** Fills the reused frame from slots 0..n-1 and hands each to the sink. */
  private deliver(n: number): void {
    const f = this.frame;
    const { u8, u32, f64, views } = this;
    const sink = this.events.sink;
    const readTime = Date.now() / 1000;
    for (let i = 0; i < n; i++) {
      const canId = u32[i * SLOT_U32]!;
      const base = i * SLOT_BYTES;
      const len = Math.min(u8[base + LEN_OFFSET]!, 64);
      const fd = u32[i * SLOT_U32 + SIZE_U32] === CANFD_MTU;
      const error = (canId & CAN_ERR_FLAG) !== 0;
      const extended = (canId & CAN_EFF_FLAG) !== 0;
      f.error = error;
      f.extended = extended;
      f.remote = (canId & CAN_RTR_FLAG) !== 0;
      f.id = error ? canId & CAN_EFF_MASK : extended ? canId & CAN_EFF_MASK : canId & CAN_SFF_MASK;
      f.fd = fd;
      f.fdFlags = fd ? u8[base + FLAGS_OFFSET]! & FD_FLAGS_KEPT : 0;
      f.dlc = len;
      const at = i * VIEWS_PER_SLOT + len;
      let data = views[at];
      if (data === undefined) {
        data = new Uint8Array(u8.buffer, base + DATA_OFFSET, len);
        views[at] = data;
      }
      f.data = data;
      const ts = this.timestamps ? f64[i * SLOT_F64 + TS_F64]! : 0;
      f.ts = ts > 0 ? ts : readTime;
      try {
        sink(f);
      } catch {
        // Sinks report their own errors; one that throws must not stop the bus or reach the addon.
      }
      if (this.closed) return;
    }
  }

  private countDrops(): void {
    const seen = this.stats[0]!;
    const grown = (seen - this.kernelDrops) >>> 0;
    if (grown === 0) return;
    this.kernelDrops = seen;
    this.events.onDrops(grown);
  }
}

/** -ENETDOWN -> 'ENETDOWN'. */
function errnoName(negativeErrno: number): string {
  try {
    return getSystemErrorName(negativeErrno);
  } catch {
    return `ERRNO${-negativeErrno}`;
  }
}
