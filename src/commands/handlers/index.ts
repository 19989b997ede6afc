/**
 * Every command the agent knows, one handler per file. A command not listed here is REJECTED as 'unknown-command'.
 * Nothing here runs a shell command from a message: each handler does one fixed thing with validated parameters.
 */
import type { CommandHandler } from '../handler.js';
import { captureSnapshot } from './capture-snapshot.js';
import { clearDtcs } from './clear-dtcs.js';
import { getConfig } from './get-config.js';
import { getStatus } from './get-status.js';
import { ping } from './ping.js';
import { readDtcs } from './read-dtcs.js';
import { readVin } from './read-vin.js';
import { restartAgent } from './restart-agent.js';
import { rotateCertificate } from './rotate-certificate.js';
import { setConfig } from './set-config.js';
import { setLogLevel } from './set-log-level.js';
import { setSignal } from './set-signal.js';

// Handlers are typed by their own parameters; the dispatcher validates with `params` before calling `run`.
export const HANDLERS: readonly CommandHandler[] = [
  ping,
  getStatus,
  getConfig,
  setConfig,
  readDtcs,
  clearDtcs,
  readVin,
  captureSnapshot,
  setSignal,
  setLogLevel,
  restartAgent,
  rotateCertificate,
];

export { captureSnapshot, clearDtcs, getConfig, readDtcs, readVin, restartAgent, rotateCertificate, setConfig, setLogLevel, setSignal };
