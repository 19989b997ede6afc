/**
 * What a source plug-in declares: one module per source type (src/agent/sources/<type>.ts), listed once in the
 * registry (registry.ts). Everything that used to branch on `source.type` asks the plug-in instead: the config loader
 * (its schema, the files it names), the agent (how it is created and run), the command context (whether a frame can be
 * written to it), provisioning (the files a bundle carries) and the status line, health and getStatus (its live
 * status fields).
 *
 * Two kinds: a bus source delivers CAN frames to the bus's decoder (`buses[].source`); an adapter yields values, not
 * frames (`obdAdapters[]`: an ELM327, and the next value sources). A plug-in's `create` must not fail for a device
 * that is not there yet (an unplugged adapter, a missing interface): the agent waits for it, as a car needs. What
 * cannot work at all (a bad config) is its schema's to refuse, before anything starts.
 */
import type { z } from 'zod';
import type { FrameSink, FrameSource } from '../../can/frame.js';
import type { BusDecoder } from '../../dbc/bus-decoder.js';
import type { ComponentLog } from '../../health/log.js';
import type { ObdConfig } from '../../obd/config.js';
import type { PositionReading } from '../../gnss/position.js';
import type { ObdPolling, ObdPollingConfig } from '../obd-polling.js';

/** What every bus source's config holds: its type, the registry's key. */
export interface SourceConfig {
  readonly type: string;
  readonly [field: string]: unknown;
}

/** What every adapter's config holds: its name, and its type (absent: the registry's default type, elm327). */
export interface AdapterConfig {
  readonly type?: string;
  readonly name: string;
  readonly [field: string]: unknown;
}

/** The bus a source is created for, as the config loader returns it (paths resolved). */
export interface SourceBus<C extends SourceConfig> {
  readonly name: string;
  readonly dbc: string;
  readonly j1939?: boolean;
  readonly source: C;
  readonly obd?: ObdConfig;
}

/** What a bus source is created with besides its config. */
export interface BusSourceContext {
  /** The bus's decoder: its database (the simulated car sends its messages, kernel filters pass its identifiers) and its counters (`badLogLines`). */
  readonly decoder: BusDecoder;
  /**
   * The bus's log (component: the bus's name; each message begins with it, `can0: ...`). One line per change of state,
   * at the level it deserves; never per frame.
   */
  readonly log: ComponentLog;
}

/** A bus's link to a controller, as the status line, health and getStatus show it (null fields: not known). */
export interface BusLinkStatus {
  /** The interface's state (starting, missing, down, open); once the run has stopped, the state before it closed. */
  readonly state: string;
  /** The CAN controller's error state (error-active, error-warning, error-passive, bus-off) while the link is up. */
  readonly controllerState: string | null;
  /** Error frames the controller reported. */
  readonly errorFrames: number;
  /** Frames the kernel dropped because the agent's socket buffer was full; absent when the link cannot tell. */
  readonly kernelDrops?: number;
  /** The status line's words: `can0 open, error-active, 0 error frames`. */
  readonly text: string;
}

/** A created bus source. */
export interface BusSource {
  /** What delivers the frames; its `name` (`sim:demo`, `replay:drive.log`) is the one the summary shows. */
  readonly frames: FrameSource;
  /**
   * Delivers frames to `sink` until the source ends or `signal` aborts (a looping replay starts over at the end of its
   * log). A rejection stops the agent (the first failure ends every source).
   */
  run(sink: FrameSink, signal: AbortSignal): Promise<void>;
  /** The OBD-II poller over this bus's link (a bus with `obd`, on a source that allows it), or null. */
  readonly obd: ObdPolling | null;
  /** The link's live status; null for a source without one (simulated, replayed). */
  link(): BusLinkStatus | null;
}

/**
 * Where a frame a remote command writes (setSignal) goes: out of an interface (a socket opened for that frame), back
 * into the bus's own receiver (a simulated bus: the frame is decoded and collected as the traffic of another node
 * would be), or nowhere, with the reason the command is refused with.
 */
export type FrameWriteRoute =
  { readonly to: 'interface'; readonly interface: string } | { readonly to: 'loopback' } | { readonly to: 'none'; readonly reason: string };

export interface BusSourceType<C extends SourceConfig = SourceConfig> {
  readonly kind: 'bus';
  /** `buses[].source.type`; unique among bus sources. */
  readonly type: string;
  /**
   * The zod schema of `buses[].source` for this type: a strict object whose `type` is `z.literal(type)` (the config
   * loader puts it in a discriminated union). Its `.describe()` is the JSON Schema's description.
   */
  readonly schema: z.ZodType<C>;
  /**
   * Fields of the config that name files, relative to the config file: the loader resolves them to absolute paths and
   * checks that they exist; provisioning carries them into a bundle (sourceFiles in registry.ts). The bus's DBC is
   * the bus's, not listed here.
   */
  readonly files?: readonly string[];
  /** Whether the bus can carry OBD-II polling (`buses[].obd`): it needs a live link to the ECUs. Default false. */
  readonly obd?: boolean;
  /** Where a frame written by setSignal goes. */
  writeRoute(source: C): FrameWriteRoute;
  /** Creates the source; opens nothing that could fail for a device not there yet (see the file comment). */
  create(bus: SourceBus<C>, context: BusSourceContext): BusSource;
}

/** An adapter as the status line, health and getStatus show it. */
export interface AdapterStatus {
  /** Its state (an ELM327's: idle, opening, initialising, ready…); once the run has stopped, the state before it closed. */
  readonly state: string;
  /** Where it is reached (a serial port), for the summary. */
  readonly port: string;
  /** The status line's words: `obd ready (ELM327 v1.5)`. */
  readonly text: string;
  /** A position source's latest fix and its age (health's `gnss`, the status page); absent for other adapters. */
  readonly position?: PositionReading;
}

/** What an adapter is created with besides its config. */
export interface AdapterContext {
  /** The adapter's log (component: the adapter's name; each message begins with it, `obd: ...`). */
  readonly log: ComponentLog;
  /** Receives every numeric value, by the name the collection rules read it under (`<adapter>.obd.<key>`), with its time (unix s). */
  readonly offer: (name: string, value: number, ts: number) => void;
}

/** A created adapter. */
export interface Adapter {
  /** Yields values until `signal` aborts; never rejects (trouble is reported and it carries on). */
  run(signal: AbortSignal): Promise<void>;
  /** Its OBD-II poller (remote commands read DTCs and the VIN through it), or null for an adapter that is not OBD. */
  readonly obd: ObdPolling | null;
  status(): AdapterStatus;
}

export interface AdapterType<C extends AdapterConfig = AdapterConfig> {
  readonly kind: 'adapter';
  /** `obdAdapters[].type`; unique among adapters. */
  readonly type: string;
  /** The zod schema of an `obdAdapters[]` entry of this type: a strict object with `name` and `type: z.literal(type)` (optional for the default type). */
  readonly schema: z.ZodType<C>;
  /** The OBD-II PIDs it polls (remote commands' preconditions take the poll interval as a value's period), or null. */
  obdPolling(config: C): ObdPollingConfig | null;
  create(config: C, context: AdapterContext): Adapter;
}

export type SourceType = BusSourceType | AdapterType;
