/** The simulated ELM327 on a real pseudo-terminal (socat), for the serial driver and CLI tests. */
import path from 'node:path';
import { DriveCycle, type VehicleState } from '../../src/sim/drive-cycle.js';
import { Elm327Simulator, type Elm327SimulatorOptions } from '../../src/sim/elm327.js';
import { Elm327PtyServer } from '../../src/sim/elm327-pty.js';
import type { Elm327ClientOptions } from '../../src/obd/elm327.js';
import { makeTempDir } from './temp.js';

/**
 * The recorded car of ../shared/testdata/obd/README.md (test/support/elm327-recording.ts) in the values the recording
 * shows, 750 rpm, 50 km/h, 90 °C coolant; every other value from a running demo car.
 */
export function recordedCar(overrides: Partial<VehicleState> = {}): { state: VehicleState } {
  const car = new DriveCycle({ seed: 1 });
  for (let k = 0; k < 2000 && !car.state.engineRunning; k++) car.step(0.01);
  return { state: { ...car.state, engineRunning: true, engineRpm: 750, speedKph: 50, coolantTempC: 90, ...overrides } };
}

/** Small simulator delays: the tests exercise behaviour, not the recorded timing. */
export const FAST_SIM_TIMING = { resetMs: 20, warmStartMs: 10, searchMs: 60, answerMs: 3, atMs: 0 } as const;

/** Client timeouts to match: short, but far above what the simulator takes. */
export function fastClientOptions(port: string, extra: Partial<Elm327ClientOptions> = {}): Elm327ClientOptions {
  return {
    port,
    timeouts: { atMs: 600, resetMs: 1500, requestMs: 800, searchMs: 3000, probeMs: 250 },
    reconnect: { initialMs: 50, maxMs: 400 },
    readyWaitMs: 4000,
    ...extra,
  };
}

export interface ElmRig {
  sim: Elm327Simulator;
  server: Elm327PtyServer;
  /** What the host opens. */
  path: string;
  close(): Promise<void>;
}

/** A simulator with the recorded car (unless `vehicle` is given) served on a fresh pty. */
export async function elmOnPty(options: Partial<Elm327SimulatorOptions> & { baudRate?: number } = {}): Promise<ElmRig> {
  const { baudRate, ...simOptions } = options;
  const sim = new Elm327Simulator({
    vehicle: recordedCar(),
    dtcs: { stored: ['P0133', 'P0300'] },
    ...simOptions,
    timing: { ...FAST_SIM_TIMING, ...simOptions.timing },
  });
  const link = path.join(makeTempDir('elm327-'), 'ttyELM');
  const server = new Elm327PtyServer(sim, { link, ...(baudRate !== undefined ? { baudRate } : {}) });
  await server.plug();
  return {
    sim,
    server,
    path: link,
    close: async () => {
      await server.close();
      sim.close();
    },
  };
}
