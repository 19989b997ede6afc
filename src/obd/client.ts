/**
 * What the agent asks of an OBD-II connection, whichever way it reaches the car: ObdCanClient (ISO 15765-4 on a CAN
 * interface) and Elm327Client (an ELM327 adapter on a serial port) both provide it, so the poller, the CLI and the
 * commands use either without knowing which.
 */
import type { EcuAnswer, EcuPidReadings, ObdEcuInfo, ObdRequestOptions } from './can-client.js';
import type { DtcService } from './j1979.js';
import type { PidReader } from './poller.js';

export interface ObdClient extends PidReader {
  readonly ecus: readonly ObdEcuInfo[];
  /** Mode 01 current data; from one ECU (`ecu`) or every one that has the PIDs. */
  readPids(pids: readonly number[], options?: ObdRequestOptions): Promise<EcuPidReadings[]>;
  /** Mode 03 (stored), 07 (pending) or 0A (permanent) DTCs, e.g. `P0133`. */
  readDtcs(service?: DtcService, options?: ObdRequestOptions): Promise<EcuAnswer<string[]>[]>;
  /** Mode 04: erases DTCs and readiness. Only on a person's explicit request. */
  clearDtcs(options?: ObdRequestOptions): Promise<EcuAnswer<true>[]>;
  /** Mode 09 info type 02. */
  readVin(options?: ObdRequestOptions): Promise<EcuAnswer<string>[]>;
  close(): void;
}
