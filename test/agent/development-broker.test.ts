/**
 * [17.mqtt5] The default run's development broker, with real parts only: `telematics-agent run` as a child process on
 * a copy of device-config/default.json (its own var/ folder, the url's port 0 or two free ports), Debian's mosquitto
 * as the agent starts it, `telematics-ops send` as an operator types it, and a backend client on the broker's backend
 * listener that sees each message with its MQTT 5 properties.
 *
 * - With mosquitto installed the run speaks MQTT 5 and says so; a command's results come back on the response topic
 *   with the correlation data echoed; rotateCertificate is answered by the development signer.
 * - mosquitto is the agent's: its files are in the agent's var/ folder; it is restarted when it dies, taken along
 *   when the agent is killed, found and stopped when an earlier agent left it, and a port held by another process
 *   stops the start with a line naming it.
 * - Without mosquitto (TELEMATICS_MOSQUITTO naming none) the run takes aedes, says so once, and still answers
 *   telematics-ops and rotateCertificate on its backend listener, under MQTT 3.1.1.
 *
 * Every wait is for what the agent says or the broker does, never a fixed time.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { before, describe, it, type TestContext } from 'node:test';
import mqtt, { type MqttClient } from 'mqtt';
import { probePort } from '../../src/uplink/mosquitto-broker.js';
import { AgentProcess } from '../support/agent-process.js';
import {
  brokerLine as brokerLineOf,
  DEFAULT_DEVICE,
  defaultRunConfig,
  defaultRunPki,
  logMessages as logMessagesOf,
  type BrokerLine,
} from '../support/default-run.js';
import { freePort, mosquittoPath } from '../support/mosquitto.js';
import { runProgram, type ProgramRun } from '../support/programs.js';
import { makeTempDir } from '../support/temp.js';
import { waitFor } from '../support/wait.js';

const DEVICE = DEFAULT_DEVICE;
/** The development PKI of the default config. */
let certsDir: string;
before(() => {
  certsDir = defaultRunPki();
});
/** A loaded 2-core machine starts node, mosquitto and the TLS session slowly. */
const START_MS = 60_000;
/** What makes a run take aedes: a mosquitto that is not there. */
const NO_MOSQUITTO = '/nonexistent/mosquitto';

/** device-config/default.json as `npm start` runs it, in `dir` (test/support/default-run.ts), the broker on `port`. */
function defaultRun(dir: string, port: number, uplink: Record<string, unknown> = {}): string {
  return defaultRunConfig(dir, { port, uplink });
}

function start(t: TestContext, file: string, env: NodeJS.ProcessEnv = process.env): AgentProcess {
  const agent = AgentProcess.command(['run', '--config', file], { env, waitTimeoutMs: START_MS });
  t.after(() => agent.stop('SIGKILL'));
  return agent;
}

/** The messages of the agent's JSON log, in order. */
function logMessages(agent: AgentProcess): { level: string; msg: string }[] {
  return logMessagesOf(agent.stderr);
}

/** The start line of the broker, parsed. */
function brokerLine(agent: AgentProcess): BrokerLine {
  return brokerLineOf(agent.stderr);
}

interface BackendMessage {
  topic: string;
  payload: string;
  correlationData: Buffer | undefined;
}

/** The fleet backend on the backend listener, recording what the car publishes with its MQTT 5 properties. */
async function backendClient(t: TestContext, port: number, protocol: 5 | 4): Promise<{ client: MqttClient; messages: BackendMessage[] }> {
  const client = mqtt.connect(`mqtts://localhost:${port}`, {
    protocolVersion: protocol,
    clientId: `backend/test-${process.pid}`,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    ca: readFileSync(path.join(certsDir, 'ca.crt')),
    cert: readFileSync(path.join(certsDir, 'backend.crt')),
    key: readFileSync(path.join(certsDir, 'backend.key')),
    rejectUnauthorized: true,
  });
  t.after(() => client.endAsync(true));
  const messages: BackendMessage[] = [];
  client.on('message', (topic, payload, packet) =>
    messages.push({ topic, payload: payload.toString('utf8'), correlationData: packet.properties?.correlationData }),
  );
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  await client.subscribeAsync(`vehicles/${DEVICE}/#`, { qos: 1 });
  return { client, messages };
}

/** `telematics-ops send` with the development PKI's certificates, to the broker's backend listener. */
function send(backendPort: number, command: string, params = '{}'): Promise<ProgramRun> {
  return runProgram('telematics-ops', [
    'send',
    '-d',
    DEVICE,
    '-c',
    command,
    '-p',
    params,
    '-w',
    '-j',
    '--certs-dir',
    certsDir,
    '--broker',
    `localhost:${backendPort}`,
  ]);
}

/** The results `send --json` printed. */
function results(run: ProgramRun): { id: string; status: string; detail?: unknown }[] {
  assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
  return run.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { id: string; status: string; detail?: unknown });
}

/** Whether `pid` is a live process (a zombie is not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/** The pid of the agent's mosquitto, from its pid file. */
function mosquittoPid(dir: string): number {
  return Number(readFileSync(path.join(dir, 'var', 'mosquitto', 'mosquitto.pid'), 'utf8').trim());
}

/** Two free ports in a row, for a url with a fixed port (the backend listener takes the next one). */
async function portPair(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port < 65_535 && (await probePort('127.0.0.1', port + 1)) === null) return port;
  }
}

/** Something else listening on `port`, until the test ends. */
async function occupy(t: TestContext, port: number): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return server;
}

describe('[17.mqtt5] the default run on mosquitto', { skip: mosquittoPath() === null ? 'mosquitto is not installed' : false }, () => {
  it('[17.mqtt5] speaks MQTT 5 and says so; a command sent with the certs dir gets its results with the correlation data echoed; rotateCertificate is signed by the development signer', async (t) => {
    const dir = makeTempDir('devbroker-mqtt5-');
    const agent = start(t, defaultRun(dir, 0));
    await agent.waitForStderr(/uplink: connected to /);
    const broker = brokerLine(agent);
    assert.equal(broker.name, 'mosquitto');
    assert.equal(broker.protocol, 'MQTT 5');
    assert.ok(agent.stderr.includes(`uplink: connected to mqtts://localhost:${broker.port}"`), agent.stderr);
    // The car's own session is MQTT 5: mosquitto's log says so of the client (p5), in the agent's var/ folder.
    const mosquittoLog = path.join(dir, 'var', 'mosquitto', 'mosquitto.log');
    await waitFor(
      () => existsSync(mosquittoLog) && readFileSync(mosquittoLog, 'utf8').includes(`as ${DEVICE} (p5, c0,`),
      "the car's CONNECT in mosquitto's log",
    );

    const backend = await backendClient(t, broker.backendPort, 5);
    const ping = results(await send(broker.backendPort, 'ping', '{"echo":"mqtt5"}'));
    const id = ping[0]!.id;
    assert.deepEqual(
      ping.map((r) => r.status),
      ['ACCEPTED', 'IN_PROGRESS', 'SUCCEEDED'],
    );
    assert.equal((ping[2]!.detail as { echo: string }).echo, 'mqtt5');
    // On the response topic telematics-ops gave, each with the correlation data it gave (the command's ID), never on
    // the 3.1.1 result topic.
    const onResponseTopic = (): BackendMessage[] =>
      backend.messages.filter((m) => /^vehicles\/demo-vehicle-001\/results\/[0-9a-f]+$/.test(m.topic) && (JSON.parse(m.payload) as { id: string }).id === id);
    await waitFor(() => onResponseTopic().some((m) => m.payload.includes('"SUCCEEDED"')), 'the final result at the backend');
    for (const message of onResponseTopic()) assert.equal(message.correlationData?.toString('utf8'), id, message.payload);
    assert.equal(backend.messages.filter((m) => m.topic === `vehicles/${DEVICE}/commands/${id}/result`).length, 0);

    // rotateCertificate: the car's request goes to the backend listener's signer and its certificate comes back.
    const certFile = path.join(certsDir, `${DEVICE}.crt`);
    const before = readFileSync(certFile, 'utf8');
    const rotation = results(await send(broker.backendPort, 'rotateCertificate'));
    assert.equal(rotation[rotation.length - 1]!.status, 'SUCCEEDED', JSON.stringify(rotation));
    assert.notEqual(readFileSync(certFile, 'utf8'), before);
    assert.ok(backend.messages.some((m) => m.topic === `vehicles/${DEVICE}/csr`));
    assert.ok(backend.messages.some((m) => m.topic === `vehicles/${DEVICE}/certificate`));
    assert.ok(
      logMessages(agent).some((m) => m.level === 'info' && m.msg.startsWith(`broker: the development certificate signer issued a certificate for '${DEVICE}'`)),
      agent.stderr,
    );
    const again = results(await send(broker.backendPort, 'ping'));
    assert.equal(again[again.length - 1]!.status, 'SUCCEEDED', 'connected with the new certificate');

    // Its files are the agent's, beside the outbox; it stops with the agent.
    const pid = mosquittoPid(dir);
    assert.ok(alive(pid));
    const conf = readFileSync(path.join(dir, 'var', 'mosquitto', 'mosquitto.conf'), 'utf8');
    assert.match(conf, new RegExp(`^listener ${broker.port} 127\\.0\\.0\\.1$`, 'm'));
    assert.match(conf, new RegExp(`^listener ${broker.backendPort} 127\\.0\\.0\\.1$`, 'm'));
    assert.match(conf, new RegExp(`^persistence_location ${path.join(dir, 'var', 'mosquitto')}/$`, 'm'));
    const { code } = await agent.stop('SIGTERM');
    assert.equal(code, 0, agent.stderr);
    assert.equal(alive(pid), false, 'mosquitto stopped with the agent');
    assert.equal(existsSync(path.join(dir, 'var', 'mosquitto', 'mosquitto.pid')), false);
    assert.ok(existsSync(path.join(dir, 'var', 'mosquitto', 'mosquitto.db')), 'sessions saved beside the outbox');
    assert.ok(!logMessages(agent).some((m) => m.level === 'error'), agent.stderr);
  });

  it('[17.mqtt5] a mosquitto that dies is logged with its last lines and started again, and the car reconnects; killed, the agent takes it along, and the next start gets the same ports', async (t) => {
    const dir = makeTempDir('devbroker-crash-');
    const port = await portPair();
    const file = defaultRun(dir, port);
    const first = start(t, file);
    await first.waitForStderr(/uplink: connected to /);
    assert.deepEqual([brokerLine(first).port, brokerLine(first).backendPort], [port, port + 1]);

    const crashed = mosquittoPid(dir);
    process.kill(crashed, 'SIGKILL');
    await first.waitForStderr(/"broker: mosquitto 2\.\d+\.\d+ running again \(pid \d+\)/);
    const exit = logMessages(first).find((m) => m.msg.includes('exited unexpectedly'))!;
    assert.equal(exit.level, 'error');
    assert.match(
      exit.msg,
      new RegExp(
        `^broker: mosquitto \\(pid ${crashed}\\) exited unexpectedly \\(signal SIGKILL\\); starting it again in 1\\.0 s; its last lines: "[^"]+"( / "[^"]+")*$`,
      ),
    );
    await waitFor(
      () => logMessages(first).filter((m) => m.msg === `uplink: connected to mqtts://localhost:${port}`).length >= 2,
      'the car to reconnect',
      START_MS,
    );
    const restarted = mosquittoPid(dir);
    assert.notEqual(restarted, crashed);

    // The agent dies without a word (a power cut, kill -9): its mosquitto goes with it, and frees the ports.
    first.child.kill('SIGKILL');
    await first.exited;
    await waitFor(() => !alive(restarted), 'mosquitto to die with its agent', 10_000);
    const second = start(t, file);
    await second.waitForStderr(/uplink: connected to /);
    assert.deepEqual([brokerLine(second).port, brokerLine(second).backendPort], [port, port + 1]);
    assert.equal((await second.stop('SIGTERM')).code, 0, second.stderr);
  });

  it('[17.mqtt5] a mosquitto left running by an earlier agent is stopped at start; a port held by another process stops the start, naming it', async (t) => {
    const dir = makeTempDir('devbroker-left-');
    const port = await portPair();
    const file = defaultRun(dir, port);
    const first = start(t, file);
    await first.waitForStderr(/uplink: connected to /);
    assert.equal((await first.stop('SIGTERM')).code, 0);

    // As an agent killed where setpriv was not there to take its mosquitto along leaves it: running on the agent's
    // config, its pid in the pid file.
    const conf = path.join(dir, 'var', 'mosquitto', 'mosquitto.conf');
    const left = spawn(mosquittoPath()!, ['-c', conf], { detached: true, stdio: 'ignore' });
    t.after(() => {
      if (left.exitCode === null && left.signalCode === null) left.kill('SIGKILL');
    });
    await waitFor(() => existsSync(`/proc/${left.pid}`), 'the leftover mosquitto');
    writeFileSync(path.join(dir, 'var', 'mosquitto', 'mosquitto.pid'), `${left.pid}\n`);
    const leftExited = new Promise((resolve) => left.once('exit', resolve));
    const second = start(t, file);
    await second.waitForStderr(/uplink: connected to /);
    await leftExited;
    const stopped = logMessages(second).find((m) => m.msg.startsWith('broker: stopped mosquitto'));
    assert.deepEqual(stopped, { ...stopped, level: 'warn', msg: `broker: stopped mosquitto (pid ${left.pid}), left running by an earlier run of this agent` });
    assert.equal((await second.stop('SIGTERM')).code, 0);

    // Another program on either port: the start stops at once with one line naming the listener and the port.
    for (const [taken, where] of [
      [port, `127.0.0.1:${port}`],
      [port + 1, `127.0.0.1:${port + 1} (its backend listener, the port after the url's)`],
    ] as const) {
      const server = await occupy(t, taken);
      const run = await runProgram('telematics-agent', ['run', '--config', file]);
      assert.equal(run.status, 1, run.stderr);
      assert.match(
        run.stderr,
        new RegExp(
          `^telematics-agent: uplink\\.url: the embedded broker cannot listen on ${where.replace(/[.()']/g, '\\$&')}: the port is in use \\(another agent or broker running\\?\\)$`,
          'm',
        ),
      );
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('[17.mqtt5] the default run without mosquitto', () => {
  const env = { ...process.env, TELEMATICS_MOSQUITTO: NO_MOSQUITTO };

  it('[17.mqtt5] falls back to aedes and says so once, naming the package; MQTT 3.1.1; telematics-ops and rotateCertificate work on its backend listener', async (t) => {
    const dir = makeTempDir('devbroker-aedes-');
    const agent = start(t, defaultRun(dir, 0), env);
    await agent.waitForStderr(/uplink: connected to /);
    const fallback = logMessages(agent).filter((m) => m.msg.includes('using aedes'));
    assert.deepEqual(fallback, [
      {
        ...fallback[0],
        level: 'warn',
        msg: `broker: TELEMATICS_MOSQUITTO=${NO_MOSQUITTO} is not an executable file: using aedes, which speaks MQTT 3.1.1 only; for MQTT 5: apt-get install mosquitto`,
      },
    ]);
    const broker = brokerLine(agent);
    assert.equal(broker.name, 'aedes');
    assert.equal(broker.protocol, 'MQTT 3.1.1');
    assert.equal(existsSync(path.join(dir, 'var', 'mosquitto')), false);

    const backend = await backendClient(t, broker.backendPort, 4);
    const ping = results(await send(broker.backendPort, 'ping'));
    const id = ping[0]!.id;
    assert.equal(ping[ping.length - 1]!.status, 'SUCCEEDED');
    // Under 3.1.1 no response topic and no correlation data: the command's own result topic, matched by its ID.
    await waitFor(
      () => backend.messages.some((m) => m.topic === `vehicles/${DEVICE}/commands/${id}/result` && m.payload.includes('"SUCCEEDED"')),
      'the final result at the backend',
    );
    assert.ok(backend.messages.every((m) => m.correlationData === undefined));

    const rotation = results(await send(broker.backendPort, 'rotateCertificate'));
    assert.equal(rotation[rotation.length - 1]!.status, 'SUCCEEDED', JSON.stringify(rotation));
    assert.ok(logMessages(agent).some((m) => m.msg.startsWith(`broker: the development certificate signer issued a certificate for '${DEVICE}'`)));
    assert.equal((await agent.stop('SIGTERM')).code, 0);
    assert.equal(logMessages(agent).filter((m) => m.msg.includes('using aedes')).length, 1, 'said once');
  });

  it('[17.mqtt5] mosquitto asked for by name, or MQTT 5 asked for, without mosquitto: the start stops, naming the key and the package', async () => {
    const dir = makeTempDir('devbroker-none-');
    const byName = await runProgram('telematics-agent', ['run', '--config', defaultRun(dir, 0, { embeddedBroker: 'mosquitto' })], { env });
    assert.equal(byName.status, 1);
    assert.match(
      byName.stderr,
      /^telematics-agent: uplink\.embeddedBroker: "mosquitto", but TELEMATICS_MOSQUITTO=\/nonexistent\/mosquitto is not an executable file \(Debian: apt-get install mosquitto\)$/m,
    );
    const mqtt5 = await runProgram('telematics-agent', ['run', '--config', defaultRun(dir, 0, { protocol: 5 })], { env });
    assert.equal(mqtt5.status, 1);
    assert.match(
      mqtt5.stderr,
      /^telematics-agent: uplink\.protocol: 5 needs mosquitto as the embedded broker, but .* \(Debian: apt-get install mosquitto\); aedes speaks MQTT 3\.1\.1 only$/m,
    );
    const aedes5 = await runProgram('telematics-agent', ['run', '--config', defaultRun(dir, 0, { embeddedBroker: 'aedes', protocol: 5 })]);
    assert.equal(aedes5.status, 1);
    assert.match(aedes5.stderr, /uplink\.protocol: aedes speaks MQTT 3\.1\.1 only: use 4, or embeddedBroker "mosquitto"/);
  });
});
