/**
 * Bus health from SocketCAN error frames (linux/can/error.h): the controller's fault-confinement state (error-active,
 * warning, passive, bus-off) and one counter per error class. Error frames can arrive by the thousand on a bad bus,
 * so each one costs a few increments; only a change of controller state is an event. Beside them, the frames the
 * kernel dropped because the agent's socket buffer was full (`kernelDrops`, counted by the socket, not the controller).
 */
import type { CanFrame } from './frame.js';

/** Error classes, carried in the identifier of an error frame. */
export const CanErrorClass = {
  TxTimeout: 0x001,
  LostArbitration: 0x002,
  Controller: 0x004,
  Protocol: 0x008,
  Transceiver: 0x010,
  NoAck: 0x020,
  BusOff: 0x040,
  BusError: 0x080,
  Restarted: 0x100,
  Counters: 0x200,
} as const;

/** Controller status bits, data[1] of a `Controller` error frame. */
export const CanControllerStatus = {
  RxOverflow: 0x01,
  TxOverflow: 0x02,
  RxWarning: 0x04,
  TxWarning: 0x08,
  RxPassive: 0x10,
  TxPassive: 0x20,
  Active: 0x40,
} as const;

/** ISO 11898-1 fault confinement, as SocketCAN reports it. */
export type ControllerState = 'error-active' | 'error-warning' | 'error-passive' | 'bus-off';

export interface BusHealthCounters {
  errorFrames: number;
  busOff: number;
  errorPassive: number;
  errorWarning: number;
  restarted: number;
  arbitrationLost: number;
  protocolErrors: number;
  noAck: number;
  busErrors: number;
  txTimeouts: number;
  transceiverErrors: number;
  rxOverflows: number;
  txOverflows: number;
}

export interface ControllerStateChange {
  bus: string;
  state: ControllerState;
  previous: ControllerState;
  /** Seconds since the Unix epoch (the error frame's timestamp). */
  ts: number;
}

export class BusHealth {
  state: ControllerState = 'error-active';
  /** Transmit and receive error counters, when the controller reports them (`Counters` class); -1 otherwise. */
  txErrorCounter = -1;
  rxErrorCounter = -1;
  /**
   * Frames the kernel dropped before the agent read them, because the socket's receive buffer was full (SO_RXQ_OVFL),
   * over every socket the bus had. Not an error frame: the controller received them, the agent was too slow.
   */
  kernelDrops = 0;
  readonly counters: BusHealthCounters = {
    errorFrames: 0,
    busOff: 0,
    errorPassive: 0,
    errorWarning: 0,
    restarted: 0,
    arbitrationLost: 0,
    protocolErrors: 0,
    noAck: 0,
    busErrors: 0,
    txTimeouts: 0,
    transceiverErrors: 0,
    rxOverflows: 0,
    txOverflows: 0,
  };

  constructor(
    readonly bus: string,
    private readonly onStateChange?: (change: ControllerStateChange) => void,
  ) {}

  /** Accounts for one error frame (`frame.error` set; `id` holds the class bits). */
  record(frame: CanFrame): void {
    const c = this.counters;
    const cls = frame.id;
    const d = frame.data;
    c.errorFrames++;
    if (cls & CanErrorClass.TxTimeout) c.txTimeouts++;
    if (cls & CanErrorClass.LostArbitration) c.arbitrationLost++;
    if (cls & CanErrorClass.Protocol) c.protocolErrors++;
    if (cls & CanErrorClass.Transceiver) c.transceiverErrors++;
    if (cls & CanErrorClass.NoAck) c.noAck++;
    if (cls & CanErrorClass.BusError) c.busErrors++;
    if (cls & CanErrorClass.Counters && d.length >= 8) {
      this.txErrorCounter = d[6]!;
      this.rxErrorCounter = d[7]!;
    }

    let next = this.state;
    if (cls & CanErrorClass.Controller && d.length >= 2) {
      const status = d[1]!;
      if (status & CanControllerStatus.RxOverflow) c.rxOverflows++;
      if (status & CanControllerStatus.TxOverflow) c.txOverflows++;
      if (status & (CanControllerStatus.RxPassive | CanControllerStatus.TxPassive)) {
        c.errorPassive++;
        next = 'error-passive';
      } else if (status & (CanControllerStatus.RxWarning | CanControllerStatus.TxWarning)) {
        c.errorWarning++;
        next = 'error-warning';
      } else if (status & CanControllerStatus.Active) next = 'error-active';
    }
    if (cls & CanErrorClass.Restarted) {
      c.restarted++;
      next = 'error-active';
    }
    // Bus-off wins over anything else in the same frame: the controller has left the bus.
    if (cls & CanErrorClass.BusOff) {
      c.busOff++;
      next = 'bus-off';
    }
    if (next !== this.state) {
      const previous = this.state;
      this.state = next;
      this.onStateChange?.({ bus: this.bus, state: next, previous, ts: frame.ts });
    }
  }
}
