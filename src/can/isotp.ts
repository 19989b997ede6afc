/**
 * ISO 15765-2 (ISO-TP) transport in userspace: segmentation, flow control and reassembly for one (txId, rxId) pair,
 * with normal addressing, classic CAN and CAN FD.
 *
 * The engine knows nothing about sockets: frames go out through an `IsoTpLink` and come in through `onFrame`, so the
 * same code runs over a raw SocketCAN socket, a replay or an in-memory pair in tests.
 */
import { CANFD_LENGTHS, CAN_EFF_MASK, CAN_SFF_MASK, type CanFrame } from './frame.js';

/** Writes one CAN frame. */
export interface IsoTpLink {
  /**
   * `data` is a view into a buffer the channel reuses: it is valid only until the call returns or, when a promise is
   * returned, until it settles. Copy it to keep it. A returned promise is awaited before the next frame (backpressure).
   * `fd` asks for a CAN FD frame (set on every frame of a channel created with `fd: true`).
   */
  send(id: number, extended: boolean, data: Uint8Array, fd: boolean): void | Promise<void>;
}

/** Timer source; injectable so tests can drive time themselves. `now()` is in milliseconds (any origin). */
export interface IsoTpClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: IsoTpClock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export interface IsoTpOptions {
  /** Identifier we transmit on (SF, FF, CF and our FC). */
  txId: number;
  /** Identifier we listen to; other frames given to `onFrame` are ignored. */
  rxId: number;
  /** 29-bit identifiers. Default false. */
  extended?: boolean;
  /** Fill byte up to 8 bytes (e.g. 0xCC, 0x00, 0xAA); null (default) sends frames as short as possible. */
  padding?: number | null;
  /** BS we announce in our flow control: CFs the sender may send before waiting for our next FC; 0 = all. Default 0. */
  blockSize?: number;
  /** STmin we announce, as coded on the wire: 0x00-0x7F ms or 0xF1-0xF9 = 100-900 µs. Default 0. */
  stMin?: number;
  timeouts?: {
    /** Wait for a FC after our FF or the last CF of a block (ms). Default 1000. */
    nBs?: number;
    /** Wait for the next CF while receiving (ms). Default 1000. */
    nCr?: number;
  };
  /** FC WAIT frames accepted in a row before giving up ('too-many-waits'). Default 10. */
  maxWaitFrames?: number;
  /** CAN FD: frames up to 64 bytes, SF length escape above 7 bytes, FF 32-bit length escape above 4095. Default false. */
  fd?: boolean;
  /**
   * Largest message we accept; a longer FF is answered with FC OVERFLOW. Default 4095, or 1 MiB with `fd` (the 32-bit
   * escape would otherwise let any sender make us allocate 4 GiB).
   */
  maxRxLength?: number;
  clock?: IsoTpClock;
}

export type IsoTpErrorCode =
  /** Sender: no FC within N_Bs. */
  | 'timeout-bs'
  /** Receiver: no CF within N_Cr. */
  | 'timeout-cr'
  /** Sender: the receiver answered FC OVERFLOW. Receiver: a FF announced more than `maxRxLength` (we sent OVERFLOW). */
  | 'overflow'
  /** Receiver: CF with an unexpected sequence number; the message was dropped. */
  | 'wrong-sn'
  /** Sender: more FC WAIT frames in a row than `maxWaitFrames`. */
  | 'too-many-waits'
  /** Sender: FC with a reserved flow status. */
  | 'invalid-fs'
  /** Sender: payload longer than the addressing allows (4095 classic, 2^32-1 FD) or empty. */
  | 'too-long'
  /** Receiver: a new SF or FF arrived during a reception, which was dropped (the new message is processed). */
  | 'interrupted'
  /** The channel was closed. */
  | 'aborted'
  /** The link threw or rejected; the original error is `cause`. */
  | 'link-error';

export class IsoTpError extends Error {
  override name = 'IsoTpError';
  constructor(
    readonly code: IsoTpErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Flow status values of a FC frame (low nibble of its first byte). */
export const FlowStatus = { ContinueToSend: 0, Wait: 1, Overflow: 2 } as const;
export type FlowStatus = (typeof FlowStatus)[keyof typeof FlowStatus];

/** Decodes an STmin byte to microseconds; reserved values count as 127 ms, as ISO 15765-2 requires. */
export function decodeStMin(code: number): number {
  if (code >= 0 && code <= 0x7f) return code * 1000;
  if (code >= 0xf1 && code <= 0xf9) return (code - 0xf0) * 100;
  return 127_000;
}

function isValidStMin(code: number): boolean {
  return Number.isInteger(code) && ((code >= 0 && code <= 0x7f) || (code >= 0xf1 && code <= 0xf9));
}

/** Smallest CAN FD data length that holds `n` bytes. */
export function fdFrameLength(n: number): number {
  for (const len of CANFD_LENGTHS) if (len >= n) return len;
  return 64;
}

const CLASSIC_MAX_MESSAGE = 4095;
const FD_MAX_MESSAGE = 0xffffffff;
/** Filler for the bytes a CAN FD frame needs to reach a valid length when no padding byte is configured. */
const FD_FILLER = 0xcc;

type MessageHandler = (payload: Uint8Array) => void;
type ErrorHandler = (err: IsoTpError) => void;

export class IsoTpChannel {
  readonly txId: number;
  readonly rxId: number;
  readonly extended: boolean;
  readonly fd: boolean;

  private readonly link: IsoTpLink;
  private readonly clock: IsoTpClock;
  private readonly padding: number | null;
  private readonly blockSize: number;
  private readonly stMin: number;
  private readonly nBs: number;
  private readonly nCr: number;
  private readonly maxWaitFrames: number;
  private readonly maxRxLength: number;
  /** TX_DL: 8 classic, 64 FD. */
  private readonly txDl: number;

  private closed = false;
  private readonly messageHandlers: MessageHandler[] = [];
  private readonly errorHandlers: ErrorHandler[] = [];

  // Transmit side. One message at a time per direction, as the protocol requires; later sends queue behind.
  private txTail: Promise<void> = Promise.resolve();
  /** Reused for every SF/FF/CF; `txViews[n]` is its first n bytes, so a frame costs no allocation. */
  private readonly txBuf: Uint8Array;
  private readonly txViews: Uint8Array[] = [];
  /** FCs received while armed and not yet consumed, packed as fs | bs << 8 | stMin << 16. */
  private readonly fcQueue: number[] = [];
  private fcArmed = false;
  private fcWake: (() => void) | null = null;
  /** Rejects whatever the transmit side is waiting on (FC, STmin); set only while it waits. */
  private txCancel: ((err: IsoTpError) => void) | null = null;
  private lastCfAt = 0;

  // Receive side.
  private rxBuf: Uint8Array | null = null;
  private rxOff = 0;
  private rxSn = 0;
  private rxCfInBlock = 0;
  /** N_Cr runs as a deadline checked by one timer, not a timer restarted per CF. */
  private rxDeadline = 0;
  private rxTimer: unknown = null;

  constructor(link: IsoTpLink, options: IsoTpOptions) {
    const extended = options.extended ?? false;
    const idMask = extended ? CAN_EFF_MASK : CAN_SFF_MASK;
    for (const [name, id] of [
      ['txId', options.txId],
      ['rxId', options.rxId],
    ] as const) {
      if (!Number.isInteger(id) || id < 0 || id > idMask) throw new RangeError(`isotp: ${name} 0x${id.toString(16)} out of range`);
    }
    const padding = options.padding ?? null;
    if (padding !== null && (!Number.isInteger(padding) || padding < 0 || padding > 0xff)) throw new RangeError('isotp: padding must be a byte or null');
    const blockSize = options.blockSize ?? 0;
    if (!Number.isInteger(blockSize) || blockSize < 0 || blockSize > 0xff) throw new RangeError('isotp: blockSize must be 0-255');
    const stMin = options.stMin ?? 0;
    if (!isValidStMin(stMin)) throw new RangeError('isotp: stMin must be 0x00-0x7F (ms) or 0xF1-0xF9 (100-900 µs)');

    this.link = link;
    this.txId = options.txId;
    this.rxId = options.rxId;
    this.extended = extended;
    this.fd = options.fd ?? false;
    this.padding = padding;
    this.blockSize = blockSize;
    this.stMin = stMin;
    this.nBs = options.timeouts?.nBs ?? 1000;
    this.nCr = options.timeouts?.nCr ?? 1000;
    this.maxWaitFrames = options.maxWaitFrames ?? 10;
    this.maxRxLength = options.maxRxLength ?? (this.fd ? 1 << 20 : CLASSIC_MAX_MESSAGE);
    this.clock = options.clock ?? systemClock;
    this.txDl = this.fd ? 64 : 8;
    this.txBuf = new Uint8Array(this.txDl);
  }

  /** Registers a handler for each received message (handlers may keep the payload; all of them get the same one). Returns an unsubscribe. */
  onMessage(handler: MessageHandler): () => void {
    return subscribe(this.messageHandlers, handler);
  }

  /** Registers a handler for receive-side errors (send errors reject the `send` promise instead). */
  onError(handler: ErrorHandler): () => void {
    return subscribe(this.errorHandlers, handler);
  }

  /**
   * Sends one message. Resolves once its last frame has been handed to the link. `payload` must not change until then.
   * Sends issued while one is in progress wait their turn.
   */
  send(payload: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new IsoTpError('aborted', 'isotp: channel closed'));
    const max = this.fd ? FD_MAX_MESSAGE : CLASSIC_MAX_MESSAGE;
    if (payload.length === 0 || payload.length > max) {
      return Promise.reject(new IsoTpError('too-long', `isotp: payload of ${payload.length} bytes (1-${max} allowed)`));
    }
    const run = this.txTail.then(() => this.transmit(payload));
    this.txTail = run.catch(() => undefined);
    return run;
  }

  /** Feeds one received frame. Frames for other identifiers are ignored, so one bus reader can fan out to many channels. */
  onFrame(frame: CanFrame): void {
    if (this.closed || frame.id !== this.rxId || frame.extended !== this.extended || frame.remote || frame.error) return;
    const d = frame.data;
    if (d.length === 0) return;
    switch (d[0]! >> 4) {
      case 0:
        this.rxSingle(d);
        break;
      case 1:
        this.rxFirst(d);
        break;
      case 2:
        this.rxConsecutive(d);
        break;
      case 3:
        this.rxFlowControl(d);
        break;
      default:
        // Unknown PCI types are ignored, as the standard says.
        break;
    }
  }

  /** Stops the channel: a pending or queued send rejects with 'aborted', a reception in progress is dropped silently. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.resetRx();
    this.fcArmed = false;
    this.fcQueue.length = 0;
    this.txCancel?.(new IsoTpError('aborted', 'isotp: channel closed'));
  }

  // ---- transmit ----

  private async transmit(p: Uint8Array): Promise<void> {
    try {
      await this.transmitFrames(p);
    } catch (err) {
      throw err instanceof IsoTpError ? err : new IsoTpError('link-error', `isotp: link failed: ${String(err)}`, { cause: err });
    } finally {
      this.fcArmed = false;
      this.fcQueue.length = 0;
      this.fcWake = null;
      this.txCancel = null;
    }
  }

  private async transmitFrames(p: Uint8Array): Promise<void> {
    const buf = this.txBuf;
    const n = p.length;
    const dl = this.txDl;

    if (n <= 7 || (this.fd && n <= dl - 2)) {
      let start: number;
      if (n <= 7) {
        buf[0] = n;
        start = 1;
      } else {
        // CAN FD escape: SF_DL = 0 in the first byte, real length in the second.
        buf[0] = 0;
        buf[1] = n;
        start = 2;
      }
      buf.set(p, start);
      const r = this.emit(start + n);
      if (r) await r;
      return;
    }

    let off: number;
    if (n <= CLASSIC_MAX_MESSAGE) {
      buf[0] = 0x10 | (n >> 8);
      buf[1] = n & 0xff;
      off = dl - 2;
      buf.set(p.subarray(0, off), 2);
    } else {
      // FF_DL escape: 12-bit length 0, then a 32-bit big-endian length.
      buf[0] = 0x10;
      buf[1] = 0;
      buf[2] = n >>> 24;
      buf[3] = (n >>> 16) & 0xff;
      buf[4] = (n >>> 8) & 0xff;
      buf[5] = n & 0xff;
      off = dl - 6;
      buf.set(p.subarray(0, off), 6);
    }
    // Armed before sending: a synchronous link may deliver the receiver's FC before emit returns.
    this.fcArmed = true;
    let r = this.emit(dl);
    if (r) await r;

    let sn = 1;
    const cfMax = dl - 1;
    for (;;) {
      const fc = await this.awaitClearToSend();
      const bs = (fc >> 8) & 0xff;
      const stUs = decodeStMin(fc >>> 16);
      let sent = 0;
      while (off < n) {
        // STmin separates CFs; the first CF after a FC goes out at once.
        if (sent > 0 && stUs > 0) await this.pace(stUs);
        const chunk = n - off < cfMax ? n - off : cfMax;
        buf[0] = 0x20 | sn;
        for (let i = 0; i < chunk; i++) buf[1 + i] = p[off + i]!;
        off += chunk;
        sn = (sn + 1) & 0x0f;
        sent++;
        const blockEnd = bs > 0 && sent === bs && off < n;
        if (blockEnd) this.fcArmed = true;
        r = this.emit(chunk + 1);
        if (r) await r;
        this.lastCfAt = this.clock.now();
        if (blockEnd) break;
      }
      if (off >= n) return;
    }
  }

  /** Pads per the options, then hands `len` bytes of txBuf to the link. */
  private emit(len: number): void | Promise<void> {
    if (this.closed) throw new IsoTpError('aborted', 'isotp: channel closed');
    const buf = this.txBuf;
    let out = len;
    let fill = this.padding;
    if (fill !== null && out < 8) out = 8;
    if (this.fd && out > 8) {
      out = fdFrameLength(out);
      if (fill === null) fill = FD_FILLER;
    }
    if (out > len) buf.fill(fill ?? 0, len, out);
    let view = this.txViews[out];
    if (view === undefined) view = this.txViews[out] = buf.subarray(0, out);
    return this.link.send(this.txId, this.extended, view, this.fd);
  }

  /** Waits for FC CTS, handling WAIT (restarts N_Bs) and OVERFLOW. Returns the packed FC. */
  private async awaitClearToSend(): Promise<number> {
    let waits = 0;
    for (;;) {
      const fc = this.fcQueue.length > 0 ? this.fcQueue.shift()! : await this.nextFlowControl();
      const fs = fc & 0x0f;
      if (fs === FlowStatus.ContinueToSend) {
        this.fcArmed = false;
        this.fcQueue.length = 0;
        return fc;
      }
      if (fs === FlowStatus.Wait) {
        if (++waits > this.maxWaitFrames) {
          throw new IsoTpError('too-many-waits', `isotp: more than ${this.maxWaitFrames} FC WAIT frames`);
        }
        continue;
      }
      if (fs === FlowStatus.Overflow) throw new IsoTpError('overflow', 'isotp: receiver reported overflow (message too long for it)');
      throw new IsoTpError('invalid-fs', `isotp: FC with reserved flow status ${fs}`);
    }
  }

  private nextFlowControl(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.fcWake = null;
        this.txCancel = null;
        reject(new IsoTpError('timeout-bs', `isotp: no flow control within N_Bs (${this.nBs} ms)`));
      }, this.nBs);
      this.fcWake = () => {
        this.clock.clearTimeout(timer);
        this.fcWake = null;
        this.txCancel = null;
        resolve(this.fcQueue.shift()!);
      };
      this.txCancel = (err) => {
        this.clock.clearTimeout(timer);
        this.fcWake = null;
        this.txCancel = null;
        reject(err);
      };
    });
  }

  /** Sleeps until `us` µs have passed since the last CF. Timers only (no busy wait); sub-ms codes round up to 1 ms. */
  private async pace(us: number): Promise<void> {
    for (;;) {
      const remaining = us / 1000 - (this.clock.now() - this.lastCfAt);
      if (remaining <= 0) return;
      // Re-checked in a loop because timers may fire a fraction of a millisecond early.
      await new Promise<void>((resolve, reject) => {
        const timer = this.clock.setTimeout(() => {
          this.txCancel = null;
          resolve();
        }, Math.ceil(remaining));
        this.txCancel = (err) => {
          this.clock.clearTimeout(timer);
          this.txCancel = null;
          reject(err);
        };
      });
    }
  }

  private rxFlowControl(d: Uint8Array): void {
    if (!this.fcArmed || d.length < 3) return;
    this.fcQueue.push((d[0]! & 0x0f) | (d[1]! << 8) | (d[2]! << 16));
    this.fcWake?.();
  }

  // ---- receive ----

  private rxSingle(d: Uint8Array): void {
    let len = d[0]! & 0x0f;
    let start = 1;
    if (len === 0) {
      // Length escape exists only in CAN FD frames longer than 8 bytes; otherwise SF_DL 0 is invalid.
      if (d.length <= 8) return;
      len = d[1]!;
      start = 2;
      if (len === 0) return;
    }
    if (len > d.length - start) return;
    if (this.rxBuf) this.interrupt('SF');
    this.deliver(d.slice(start, start + len));
  }

  private rxFirst(d: Uint8Array): void {
    // A FF always fills its frame, so it is at least 8 bytes.
    if (d.length < 8) return;
    let len = ((d[0]! & 0x0f) << 8) | d[1]!;
    let start = 2;
    if (len === 0) {
      len = d[2]! * 0x1000000 + ((d[3]! << 16) | (d[4]! << 8) | d[5]!);
      start = 6;
    }
    // A message that would have fit a single frame must not come as FF (FF_DL < FF_DLmin): ignore it.
    if (len < (d.length === 8 ? 8 : d.length - 1)) return;
    if (this.rxBuf) this.interrupt('FF');
    if (len > this.maxRxLength) {
      this.sendFlowControl(FlowStatus.Overflow);
      this.reportError(new IsoTpError('overflow', `isotp: incoming message of ${len} bytes exceeds ${this.maxRxLength}`));
      return;
    }
    const buf = new Uint8Array(len);
    const first = Math.min(len, d.length - start);
    buf.set(d.subarray(start, start + first));
    this.rxBuf = buf;
    this.rxOff = first;
    this.rxSn = 1;
    this.rxCfInBlock = 0;
    this.sendFlowControl(FlowStatus.ContinueToSend);
    this.armRxTimer();
  }

  private rxConsecutive(d: Uint8Array): void {
    const buf = this.rxBuf;
    if (buf === null) return;
    if ((d[0]! & 0x0f) !== this.rxSn) {
      const got = d[0]! & 0x0f;
      const expected = this.rxSn;
      this.resetRx();
      this.reportError(new IsoTpError('wrong-sn', `isotp: CF sequence number ${got}, expected ${expected}; message dropped`));
      return;
    }
    const left = buf.length - this.rxOff;
    const chunk = d.length - 1 < left ? d.length - 1 : left;
    const off = this.rxOff;
    for (let i = 0; i < chunk; i++) buf[off + i] = d[1 + i]!;
    this.rxOff = off + chunk;
    this.rxSn = (this.rxSn + 1) & 0x0f;
    if (this.rxOff >= buf.length) {
      this.resetRx();
      this.deliver(buf);
      return;
    }
    if (this.blockSize > 0 && ++this.rxCfInBlock === this.blockSize) {
      this.rxCfInBlock = 0;
      this.sendFlowControl(FlowStatus.ContinueToSend);
    }
    this.rxDeadline = this.clock.now() + this.nCr;
  }

  private armRxTimer(): void {
    this.rxDeadline = this.clock.now() + this.nCr;
    if (this.rxTimer === null) this.rxTimer = this.clock.setTimeout(this.onRxTimer, this.nCr);
  }

  private readonly onRxTimer = (): void => {
    this.rxTimer = null;
    if (this.rxBuf === null) return;
    const remaining = this.rxDeadline - this.clock.now();
    if (remaining > 0) {
      this.rxTimer = this.clock.setTimeout(this.onRxTimer, Math.ceil(remaining));
      return;
    }
    this.resetRx();
    this.reportError(new IsoTpError('timeout-cr', `isotp: no consecutive frame within N_Cr (${this.nCr} ms)`));
  };

  private resetRx(): void {
    this.rxBuf = null;
    if (this.rxTimer !== null) {
      this.clock.clearTimeout(this.rxTimer);
      this.rxTimer = null;
    }
  }

  private interrupt(by: 'SF' | 'FF'): void {
    const got = this.rxOff;
    const total = this.rxBuf?.length ?? 0;
    this.resetRx();
    this.reportError(new IsoTpError('interrupted', `isotp: reception interrupted by a new ${by} after ${got} of ${total} bytes`));
  }

  /** FC frames are rare (one per block), so each gets its own buffer: an async link may still hold the previous one. */
  private sendFlowControl(fs: FlowStatus): void {
    const fill = this.padding;
    const fc = new Uint8Array(fill === null ? 3 : 8);
    fc[0] = 0x30 | fs;
    fc[1] = this.blockSize;
    fc[2] = this.stMin;
    if (fill !== null) fc.fill(fill, 3);
    try {
      const r = this.link.send(this.txId, this.extended, fc, this.fd);
      if (r) r.catch((err: unknown) => this.linkError(err));
    } catch (err) {
      this.linkError(err);
    }
  }

  private linkError(err: unknown): void {
    this.reportError(new IsoTpError('link-error', `isotp: sending flow control failed: ${String(err)}`, { cause: err }));
  }

  private deliver(payload: Uint8Array): void {
    for (const h of this.messageHandlers) h(payload);
  }

  private reportError(err: IsoTpError): void {
    for (const h of this.errorHandlers) h(err);
  }
}

function subscribe<T>(list: T[], item: T): () => void {
  list.push(item);
  return () => {
    const i = list.indexOf(item);
    if (i >= 0) list.splice(i, 1);
  };
}
