/**
 * [19.memory] What a run loads: `telematics-agent run` as a child process, asked (test/support/loaded-packages.ts,
 * preloaded, answering SIGUSR2) which npm packages it has loaded once its uplink is connected.
 *
 * - A car's run (an external mosquitto with mutual TLS, remote commands, health publishing): no aedes, no development
 *   PKI (node-forge only as far as its ASN.1 reader, which the identity check uses), no serialport without an ELM327
 *   adapter, no ajv (a test tool), and no systeminformation, even once a host sample has been published (the host's
 *   values and the network the adaptive heartbeat keys its memory by are read from /proc and /sys).
 * - The development run (`uplink.embeddedBroker: "aedes"`) loads what it asks for: aedes, and node-forge for the
 *   development PKI. The probe sees them: the first test's absences are not the probe's blindness.
 *
 * [19.wakeup] And when it is up: the run says once when it decoded its first frame, in seconds since the process
 * started (with `uplink: connected to ...`, what tells from outside how long a start took).
 *
 * Every wait is for what the agent says, never a fixed time.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { AgentProcess, writeConfig } from '../support/agent-process.js';
import { CommandPki } from '../support/commands.js';
import { defaultRunConfig } from '../support/default-run.js';
import { parseLoadedPackages, loadedPackagesProbe, type LoadedPackages } from '../support/loaded-packages.js';
import { BackendSubscriber, Mosquitto, TestPki } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

/** A loaded 2-core machine starts node, the broker and the TLS session slowly. */
const START_MS = 60_000;
const CONNECTED = /uplink: connected to /;

/** Starts `run --config file` with the probe preloaded, waits until connected (and `ready`), and asks what it has loaded. */
async function loadedOnceConnected(t: TestContext, file: string, ready: () => Promise<void> = async () => undefined): Promise<LoadedPackages> {
  const agent = AgentProcess.command(['run', '--config', file], { env: loadedPackagesProbe(process.env), waitTimeoutMs: START_MS });
  t.after(() => agent.stop('SIGKILL'));
  await agent.waitForStderr(CONNECTED);
  await ready();
  agent.child.kill('SIGUSR2');
  let answer: LoadedPackages | undefined;
  await waitFor(() => (answer = parseLoadedPackages(agent.stderr)) !== undefined || !agent.running, 'the loaded-packages answer', START_MS);
  assert.ok(answer, `no answer from the probe:\n${agent.stderr}`);
  const stopped = await agent.stop('SIGTERM');
  assert.equal(stopped.code, 0, agent.stderr);
  return answer;
}

describe('[19.wakeup] the wake-up line', () => {
  it('[19.wakeup] a run says once per bus, at info, when it decoded its first frame, in seconds since the process started', { timeout: 60_000 }, async (t) => {
    const dir = makeTempDir('startup-first-frame-');
    const file = writeConfig(dir, 'car', { deviceId: 'car-startup-2', buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }] });
    const spawned = performance.now();
    const agent = AgentProcess.command(['run', '--config', file], { waitTimeoutMs: START_MS });
    t.after(() => agent.stop('SIGKILL'));
    const line = /"msg":"can0: first frame decoded (\d+\.\d{3}) s after the process started"/;
    await agent.waitForStderr(line);
    const seenS = (performance.now() - spawned) / 1000;
    const entry = JSON.parse(agent.stderr.split('\n').find((l) => line.test(l))!) as { level: string; component: string };
    assert.equal(entry.level, 'info');
    assert.equal(entry.component, 'can0');
    // The child's clock starts after this process spawned it: what it says is never more than what this side saw.
    const saidS = Number(line.exec(agent.stderr)![1]);
    assert.ok(saidS > 0 && saidS <= seenS + 0.01, `${saidS} s said, ${seenS} s seen`);
    await agent.waitForStdout(/frames\/s/);
    assert.equal(agent.stderr.match(new RegExp(line.source, 'g'))!.length, 1, agent.stderr);
    assert.equal((await agent.stop('SIGTERM')).code, 0, agent.stderr);
  });
});

describe('[19.memory] what a run loads', () => {
  let pki: TestPki;
  let broker: Mosquitto;
  before(async () => {
    pki = new TestPki();
    broker = await Mosquitto.start({ pki, quiet: true });
  });
  after(() => broker.stop());

  it(
    "[19.memory] a car's run loads no aedes, no node-forge beyond its ASN.1 reader, no serialport, no ajv, and no systeminformation, even after a host sample",
    { timeout: 120_000 },
    async (t) => {
      const dir = makeTempDir('startup-car-');
      const commandPki = new CommandPki();
      const file = writeConfig(dir, 'car', {
        deviceId: 'car-startup-1',
        buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim' } }],
        collection: { rules: [{ name: 'driving', mode: 'periodic', intervalMs: 1000, priority: 3, signals: ['VehicleSpeed', 'EngineSpeed'] }] },
        outbox: { path: path.join(dir, 'outbox.db') },
        uplink: { url: broker.url, ...pki.identityFiles('car-startup-1') },
        commands: { caFile: commandPki.caFile, replayDbPath: path.join(dir, 'commands.db') },
        // A report every second: the probe is asked once one, with its host sample, has arrived.
        health: { intervalS: 1, http: { enabled: false } },
      });
      const backend = await BackendSubscriber.connect(broker, pki);
      t.after(() => backend.close());
      const loaded = await loadedOnceConnected(t, file, () =>
        backend.waitFor(() => backend.on('car-startup-1', 'health').length > 0, 'a health report with its host sample', START_MS),
      );
      const report = JSON.parse(backend.on('car-startup-1', 'health')[0]!.payload.toString('utf8')) as { system: { memTotalBytes: unknown; disk: unknown } };
      assert.ok(typeof report.system.memTotalBytes === 'number' && report.system.disk !== null, JSON.stringify(report.system));
      // What it does load: the outbox, the MQTT client, the log (the probe sees the agent's packages at all).
      for (const name of ['better-sqlite3', 'mqtt', 'pino']) assert.ok(loaded.packages.includes(name), `${name} in ${loaded.packages.join(', ')}`);
      for (const name of ['aedes', 'serialport', 'ajv', 'systeminformation'])
        assert.ok(!loaded.packages.includes(name), `${name} is loaded: ${loaded.packages.join(', ')}`);
      // The identity check reads certificate extensions with forge's ASN.1 reader: its files, not the package's index.
      assert.deepEqual(loaded.files['node-forge']!.sort(), ['lib/asn1.js', 'lib/baseN.js', 'lib/forge.js', 'lib/oids.js', 'lib/util.js']);
    },
  );

  it('[19.memory] the development run loads the development broker (aedes) and node-forge for its PKI', { timeout: 120_000 }, async (t) => {
    const dir = makeTempDir('startup-dev-');
    const file = defaultRunConfig(dir, { port: 0, uplink: { embeddedBroker: 'aedes' } });
    const loaded = await loadedOnceConnected(t, file);
    assert.ok(loaded.packages.includes('aedes'), loaded.packages.join(', '));
    assert.ok(loaded.files['node-forge']!.includes('lib/index.js'), loaded.files['node-forge']!.join(', '));
  });
});
