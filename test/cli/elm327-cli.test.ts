/**
 * The ELM327 side of the CLI as a firmware engineer uses it: `obd --port` against the simulator on a real pty (run as
 * a child process, the simulator in this one), `sim-elm327` serving another `obd`, and `run` polling an adapter from
 * the device config while the adapter is unplugged and plugged back in, the CAN bus decoding all along.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { runAgent } from '../../src/cli/run.js';
import { parseDeviceConfig } from '../../src/config/device-config.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { AgentProcess } from '../support/agent-process.js';
import { elmOnPty, type ElmRig } from '../support/elm327.js';
import { RECORDED_VIN } from '../support/elm327-recording.js';
import { runProgram } from '../support/programs.js';
import { repoRoot } from '../support/shared.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

const rigs: ElmRig[] = [];
after(async () => {
  for (const rig of rigs) await rig.close();
});

/** The car of the recording: VIN WP0ZZZ99ZTS390000, 750 rpm, 50 km/h, 90 °C, DTCs P0133 and P0300. */
async function recordedAdapter(options: Parameters<typeof elmOnPty>[0] = {}): Promise<ElmRig> {
  const rig = await elmOnPty({ ecus: [{ vin: RECORDED_VIN, dtcs: { stored: ['P0133', 'P0300'] } }], ...options });
  rigs.push(rig);
  return rig;
}

/** What `obd --port … --json` prints: the fields these tests read. */
interface ObdSummaryJson {
  vin: string;
  protocol: string;
  supportedPids: string[];
  values: { rpm: number; speed: number; coolantTemp: number };
  dtcs: string[];
  pendingDtcs: string[];
  errors?: unknown;
  adapter: { voltage: unknown };
}

describe('obd --port', () => {
  it('--json prints one object: VIN, protocol, supported PIDs, live values and DTCs', async () => {
    const rig = await recordedAdapter();
    const result = await runProgram('telematics-agent', ['obd', '--port', rig.path, '--json']);
    assert.equal(result.status, 0, result.stderr);
    const summary = JSON.parse(result.stdout) as ObdSummaryJson;
    assert.equal(summary.vin, RECORDED_VIN);
    assert.equal(summary.protocol, 'ISO 15765-4 (CAN 11/500)');
    for (const pid of ['0104', '0105', '010C', '010D', '0111', '0142']) assert.ok(summary.supportedPids.includes(pid), pid);
    assert.ok(summary.supportedPids.every((p) => /^01[0-9A-F]{2}$/.test(p)));
    assert.equal(summary.values.rpm, 750);
    assert.equal(summary.values.speed, 50);
    assert.equal(summary.values.coolantTemp, 90);
    assert.deepEqual(summary.dtcs, ['P0133', 'P0300']);
    assert.deepEqual(summary.pendingDtcs, []);
    assert.equal(summary.errors, undefined);
    assert.deepEqual(summary.adapter, { device: 'ELM327', version: '1.5', baudRate: 38400, voltage: summary.adapter.voltage });
  });

  it('without --json prints the same for a person to read', async () => {
    const rig = await recordedAdapter({ protocol: 3 });
    const result = await runProgram('telematics-agent', ['obd', '--port', rig.path]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /^Connection {2}ELM327 v1\.5 on .*ttyELM at 38400 baud/m);
    assert.match(result.stdout, /^Protocol {4}ISO 9141-2$/m);
    assert.match(result.stdout, new RegExp(`^VIN {9}${RECORDED_VIN}$`, 'm'));
    assert.match(result.stdout, /^ {2}rpm +750 rpm$/m);
    assert.match(result.stdout, /^ {2}coolantTemp +90 °C$/m);
    assert.match(result.stdout, /^DTCs {8}P0133 P0300$/m);
  });

  it('runs single queries through the adapter too (read-vin, read-pids by name)', async () => {
    const rig = await recordedAdapter();
    const vin = await runProgram('telematics-agent', ['obd', '--port', rig.path, 'read-vin']);
    assert.equal(vin.status, 0, vin.stderr);
    assert.deepEqual(JSON.parse(vin.stdout), {
      port: rig.path,
      adapter: 'ELM327 v1.5',
      protocol: 'ISO 15765-4 (CAN 11/500)',
      vin: RECORDED_VIN,
      ecus: [{ ecu: 0, vin: RECORDED_VIN }],
    });
    const pids = await runProgram('telematics-agent', ['obd', '--port', rig.path, 'read-pids', 'rpm', 'speed']);
    assert.equal(pids.status, 0, pids.stderr);
    assert.deepEqual((JSON.parse(pids.stdout) as { ecus: unknown }).ecus, [
      { ecu: 0, pids: { rpm: { value: 750, unit: 'rpm' }, speed: { value: 50, unit: 'km/h' } } },
    ]);
  });

  it('fails with exit status 1 and a clear reason: no port, nothing answering, the ignition off', async () => {
    const missing = await runProgram('telematics-agent', ['obd', '--port', '/dev/serial/by-id/usb-no-such-adapter']);
    assert.equal(missing.status, 1);
    assert.equal(missing.stdout, '');
    assert.match(missing.stderr, /^telematics-agent: \/dev\/serial\/by-id\/usb-no-such-adapter: no such serial port \(is the adapter plugged in\?\)\n$/);

    const off = await recordedAdapter({ ignition: false });
    const result = await runProgram('telematics-agent', ['obd', '--port', off.path, '--json']);
    assert.equal(result.status, 1);
    assert.equal(result.stdout, '');
    assert.match(result.stderr, /answers, but no ECU does \(UNABLE TO CONNECT\): is the ignition on/);

    const deaf = await recordedAdapter({ baudRate: 9600 });
    const wrongBaud = await runProgram('telematics-agent', ['obd', '--port', deaf.path, '--baud', '115200']);
    assert.equal(wrongBaud.status, 1);
    assert.match(wrongBaud.stderr, /no ELM327 prompt on .* at 115200 baud/);
  });
});

describe('sim-elm327', () => {
  it('serves the demo car on a pty that obd --port reads, and stops on SIGINT', async () => {
    const link = path.join(makeTempDir('sim-elm327-'), 'ttyELM');
    const sim = AgentProcess.command(['sim-elm327', '--link', link, '--dtc', 'P0420', '--answer-ms', '5']);
    try {
      await waitFor(() => existsSync(link), 'the pty link', 10_000);
      const result = await runProgram('telematics-agent', ['obd', '--port', link, '--json']);
      assert.equal(result.status, 0, result.stderr);
      const summary = JSON.parse(result.stdout) as ObdSummaryJson;
      assert.equal(summary.vin, 'WDX1SMDEMC0000001');
      assert.deepEqual(summary.dtcs, ['P0420']);
      // 30 s into the drive cycle: the engine runs.
      assert.ok(summary.values.rpm > 500, JSON.stringify(summary.values));
    } finally {
      await sim.stop('SIGINT');
    }
    assert.equal((await sim.exited).code, 0);
    const { stderr } = sim;
    assert.match(stderr, /elm327-v1\.5 on .*ttyELM \(car protocol 6\)/);
    assert.match(stderr, /stopped: \d+ commands, \d+ OBD requests/);
    assert.equal(existsSync(link), false, 'the pty is gone');
  });

  it('names what is wrong with its arguments', async () => {
    const bad = await runProgram('telematics-agent', ['sim-elm327', '--link', '/tmp/x', '--protocol', '2']);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /expected 3-9/);
  });
});

describe('run with an ELM327 adapter', () => {
  it('polls the adapter from the device config, rides out an unplug, and the CAN bus decodes throughout', async () => {
    const rig = await recordedAdapter();
    const config = parseDeviceConfig(
      {
        deviceId: 'elm-test',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 1 } }],
        obdAdapters: [
          {
            name: 'obd',
            port: rig.path,
            pids: [
              { pid: 'rpm', intervalMs: 50 },
              { pid: 'coolantTemp', intervalMs: 100 },
              { pid: 'fuelPressure', intervalMs: 100 },
            ],
          },
        ],
        status: { intervalMs: 100, signals: [] },
      },
      { file: 'inline', baseDir: repoRoot },
    );
    const warnings: string[] = [];
    let written = '';
    const stop = new AbortController();
    const running = runAgent({ config, signal: stop.signal, output: { write: (t: string) => (written += t) }, warn: (m) => warnings.push(m) });
    try {
      await waitFor(() => /OBD rpm 750 rpm, coolantTemp 90 °C/.test(written), 'OBD values in the status line', 10_000);
      await delay(300);
      const requestsBefore = rig.sim.counters.obdRequests;
      await rig.server.unplug();
      await waitFor(() => warnings.some((w) => /reconnecting/.test(w)), 'the unplug reported', 15_000);
      const framesLine = written.length;
      await delay(600);
      // While the adapter is away the bus goes on: status lines keep coming with frames in them.
      assert.match(written.slice(framesLine), /[1-9]\d* frames\/s/);
      await rig.server.plug();
      const replugged = written.length;
      await waitFor(() => /obd ready/.test(written.slice(replugged)), 'the adapter ready again', 10_000);
      // Polling resumes by itself: the simulator gets requests again (re-initialisation takes about 10).
      const requestsAtReplug = rig.sim.counters.obdRequests;
      await waitFor(() => rig.sim.counters.obdRequests > requestsAtReplug + 10, 'requests after the replug', 15_000);
      assert.ok(requestsAtReplug > requestsBefore);
    } finally {
      stop.abort();
    }
    const summary = await running;
    assert.ok(summary.buses[0]!.frames > 500, `${summary.buses[0]!.frames} frames`);
    const adapter = summary.adapters[0]!;
    assert.equal(adapter.name, 'obd');
    assert.ok(adapter.obd.samples > 10, JSON.stringify(adapter));
    // The simulated engine ECU has no fuel pressure PID: reported once, never asked for.
    assert.equal(adapter.obd.unsupported, 1);
    assert.equal(warnings.filter((w) => /adapter ready/.test(w)).length, 2, warnings.join('\n'));
    assert.ok(
      warnings.some((w) => /^obd: OBD: PID fuelPressure \(0x0A\) is not polled: no ECU supports it$/.test(w)),
      warnings.join('\n'),
    );
    assert.match(written, /obd \(.*ttyELM, (ready|idle|waiting|connecting)\): \d+ samples from \d+ requests, 1 PID not supported/);
  });
});
