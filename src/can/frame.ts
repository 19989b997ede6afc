/**
 * A CAN frame as every stage of the pipeline sees it.
 *
 * Sources may reuse one frame object (and its data buffer) for every frame they deliver, to keep the hot path free
 * of allocation: a sink that needs to keep a frame beyond its call must copy it (`cloneFrame`).
 */
export interface CanFrame {
  /** Reception time, seconds since the Unix epoch (microsecond resolution in candump logs). */
  ts: number;
  /** Interface or channel the frame came from, e.g. `can0`. */
  bus: string;
  /** 11-bit or 29-bit identifier, without any flag bits. */
  id: number;
  /** 29-bit identifier (extended frame format). */
  extended: boolean;
  /** CAN FD frame (payload up to 64 bytes). */
  fd: boolean;
  /** CAN FD flags as candump writes them after `##` (bit 0 BRS, bit 1 ESI); 0 for classic frames. */
  fdFlags: number;
  /** Remote transmission request (no payload; `dlc` carries the requested length). */
  remote: boolean;
  /** Error frame reported by the controller; `id` holds the CAN_ERR_* class bits, `data` the details. */
  error: boolean;
  /** Data length: payload length for data frames, requested length for remote frames. */
  dlc: number;
  /** Payload. Its length is the frame's data length. */
  data: Uint8Array;
}

/** Receives frames from a source. The frame may be reused by the source after the call returns. */
export type FrameSink = (frame: CanFrame) => void;

/** Anything that produces frames: a live bus, a log replay, the simulated vehicle. */
export interface FrameSource {
  /** Human-readable name for logs and status, e.g. `replay:truck.log` or `sim:demo`. */
  readonly name: string;
  /** Starts delivering frames to `sink`. Resolves when the source has ended (a log ran out) or was stopped. */
  run(sink: FrameSink, signal?: AbortSignal): Promise<void>;
}

/**
 * How often a live or paced source hands a busy bus's frames over, ms (a bus's `readIntervalMs` overrides it). Each
 * wake-up of the process costs more CPU than decoding a hundred frames, so a busy bus is read in batches: the process
 * wakes about 1000 / this many times a second at any frame rate, and an idle bus never wakes it. Frames come at most
 * this much later than they arrived, never earlier; they keep the time they arrived (the kernel's, the log's).
 */
export const SOURCE_READ_INTERVAL_MS = 20;

export const CAN_MAX_DLEN = 8;
export const CANFD_MAX_DLEN = 64;
export const CAN_SFF_MASK = 0x7ff;
export const CAN_EFF_MASK = 0x1fffffff;

/** Valid CAN FD payload lengths; a DLC code above 8 maps to one of these. */
export const CANFD_LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64] as const;

export function createFrame(): CanFrame {
  return {
    ts: 0,
    bus: '',
    id: 0,
    extended: false,
    fd: false,
    fdFlags: 0,
    remote: false,
    error: false,
    dlc: 0,
    data: new Uint8Array(0),
  };
}

export function cloneFrame(frame: CanFrame): CanFrame {
  return { ...frame, data: frame.data.slice() };
}
