/**
 * Who may be whom on the broker ([14.1] client-ID takeover, [14.4] a car named like the backend), on both brokers
 * the project ships: the fleet's mosquitto (deploy/mosquitto/, run as shipped by test/support/mosquitto.ts, as the
 * default run does when mosquitto is installed) and the embedded aedes broker, the default run's fallback. The same scenarios run on each:
 *
 * - another car's certificate that connects with the victim's client ID never displaces the victim: mosquitto makes
 *   the certificate's CN the client ID (so the intruder is only itself), the embedded broker refuses it; the victim
 *   stays connected through repeated attempts, and a command queued for it while it is away survives an intruder's
 *   clean start and is delivered when it comes back;
 * - a car's certificate called `backend` (issued by the device CA, as `provision --device backend` once did) gets no
 *   fleet rights: it reads no other car and sends no command;
 * - the backend identity works only with the backend CA's certificate.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { issueClientCertificate, writeIssued } from '../../src/pki/dev-ca.js';
import { loadIdentity } from '../../src/pki/identity.js';
import { EmbeddedBroker } from '../../src/uplink/embedded-broker.js';
import { MqttSession, type SessionState } from '../../src/uplink/session.js';
import { withBroker } from '../support/broker-fixture.js';
import { BACKEND, TestPki, waitForState } from '../support/mosquitto.js';
import { waitFor } from '../support/wait.js';

interface BrokerUnderTest {
  name: string;
  url: string;
  backendUrl: string;
  /** MQTT protocol the broker speaks (aedes: 3.1.1 only). */
  protocol: 4 | 5;
}

/** Connects a raw client and resolves with the CONNACK's outcome: connected, or the refusal's return code. */
async function tryConnect(url: string, options: IClientOptions): Promise<{ client: MqttClient; connected: boolean; code?: number }> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, rejectUnauthorized: true, ...options });
  return new Promise((resolve) => {
    client.once('connect', () => resolve({ client, connected: true }));
    client.once('error', (err) => resolve({ client, connected: false, code: (err as { code?: number }).code }));
    client.once('close', () => resolve({ client, connected: false }));
  });
}

function scenarios(pki: TestPki, broker: () => BrokerUnderTest): void {
  const tls = (files: { certFile: string; keyFile: string }): IClientOptions => ({
    ca: readFileSync(pki.caFile),
    cert: readFileSync(files.certFile),
    key: readFileSync(files.keyFile),
  });

  /** The victim's session, as the agent runs it (persistent, its own certificate), counting its drops. */
  function victimSession(deviceId: string): { session: MqttSession; drops: () => number; commands: string[] } {
    const session = new MqttSession({
      url: broker().url,
      deviceId,
      identity: loadIdentity(pki.identityFiles(deviceId)),
      protocol: broker().protocol,
      connectTimeoutMs: 5000,
      reconnect: { initialMs: 50, maxMs: 200 },
    });
    const states: SessionState[] = [];
    session.onStateChange((change) => states.push(change.state));
    const commands: string[] = [];
    session.onCommand((_topic, payload) => commands.push(payload.toString('utf8')));
    return { session, drops: () => states.filter((s) => s === 'disconnected').length, commands };
  }

  /**
   * Asserts that `client` receives nothing of what `send` publishes for others: it subscribes to `filters` (mosquitto
   * grants any subscription and applies the ACL at delivery), `send` runs, then a sentinel on `sentinelTopic`, which
   * the client may read; once the sentinel is there, anything sent before it would be too.
   */
  async function receivesNothingBut(
    client: MqttClient,
    backend: MqttClient,
    filters: string[],
    sentinelTopic: string,
    send: () => Promise<void>,
  ): Promise<void> {
    const seen: string[] = [];
    client.on('message', (topic) => seen.push(topic));
    await client.subscribeAsync([...filters, sentinelTopic], { qos: 1 }).catch(() => undefined);
    await send();
    await backend.publishAsync(sentinelTopic, 'sentinel', { qos: 1 });
    await waitFor(() => seen.includes(sentinelTopic), 'the sentinel', 5000);
    // Overlapping subscriptions may bring the sentinel twice: what matters is that nothing else came.
    assert.deepEqual([...new Set(seen)], [sentinelTopic]);
  }

  async function backendClient(): Promise<MqttClient> {
    const attempt = await tryConnect(broker().backendUrl, {
      ...tls(pki.backend()),
      protocolVersion: broker().protocol,
      clientId: `backend/${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
    });
    assert.ok(attempt.connected, `the backend connects to ${broker().name}`);
    return attempt.client;
  }

  it("[14.1] another car with the victim's client ID never displaces it; a command queued for the victim survives and is delivered", async (t) => {
    const victimId = 'car-victim';
    const intruderFiles = pki.client('car-intruder');
    const victim = victimSession(victimId);
    const backend = await backendClient();
    t.after(async () => {
      await victim.session.close();
      await backend.endAsync(true);
    });
    victim.session.start();
    await waitForState(victim.session, 'connected');

    // Eight attempts, each with a clean start under the victim's client ID (as the review's 8 drops in 8 s).
    let accepted = 0;
    for (let i = 0; i < 8; i++) {
      const attempt = await tryConnect(broker().url, { ...tls(intruderFiles), protocolVersion: broker().protocol, clientId: victimId, clean: true });
      if (attempt.connected) {
        accepted++;
        // Accepted only as itself: the victim's commands are not its to read.
        if (i === 0) {
          await receivesNothingBut(attempt.client, backend, [`vehicles/${victimId}/commands/+`], 'vehicles/car-intruder/commands/sentinel', () =>
            backend.publishAsync(`vehicles/${victimId}/commands/ping`, 'for-the-victim', { qos: 1 }).then(() => undefined),
          );
        }
      }
      await attempt.client.endAsync(true);
    }
    if (broker().name === 'embedded') assert.equal(accepted, 0, "the embedded broker refuses a client ID that is not the certificate's");

    // Still up: a command reaches it on the connection it had all along.
    await backend.publishAsync(`vehicles/${victimId}/commands/ping`, 'while-attacked', { qos: 1 });
    await waitFor(() => victim.commands.includes('while-attacked'), 'the command sent during the attack', 5000);
    assert.deepEqual(victim.commands, broker().name === 'embedded' ? ['while-attacked'] : ['for-the-victim', 'while-attacked']);
    assert.equal(victim.drops(), 0, 'the victim was never disconnected');
    assert.equal(victim.session.state, 'connected');

    // Away (its persistent session keeps its subscription), a command is queued for it; the intruder tries a clean
    // start under its client ID, which on a broker without the binding erases the queue.
    await victim.session.close();
    await backend.publishAsync(`vehicles/${victimId}/commands/ping`, 'queued-while-away', { qos: 1 });
    const wipe = await tryConnect(broker().url, { ...tls(intruderFiles), protocolVersion: broker().protocol, clientId: victimId, clean: true });
    await wipe.client.endAsync(true);
    const back = victimSession(victimId);
    t.after(() => back.session.close());
    back.session.start();
    await waitFor(() => back.commands.includes('queued-while-away'), 'the queued command after the victim came back', 10_000);
  });

  it("[14.4] a car certificate named `backend` gets only a car's rights: it reads no other car and sends no command", async (t) => {
    const impostorFiles = writeIssued(pki.dir, `impostor-${broker().name}`, issueClientCertificate(pki.ca, BACKEND));
    const target = victimSession('car-target');
    const backend = await backendClient();
    t.after(async () => {
      await target.session.close();
      await backend.endAsync(true);
    });
    target.session.start();
    await waitForState(target.session, 'connected');

    const attempt = await tryConnect(broker().url, { ...tls(impostorFiles), protocolVersion: broker().protocol, clientId: BACKEND });
    if (attempt.connected) {
      const impostor = attempt.client;
      await receivesNothingBut(impostor, backend, ['vehicles/#', 'vehicles/car-target/#'], 'vehicles/backend/commands/sentinel', async () => {
        // Its own attempt at a command, and a car's telemetry it must not read.
        await impostor.publishAsync('vehicles/car-target/commands/ping', 'from-impostor', { qos: 1 }).catch(() => undefined);
        await target.session.publish(target.session.topic('telemetry'), 'telemetry', { qos: 1 });
      });
      await impostor.endAsync(true);
      // The real backend's command arrives; the impostor's never did (they are in order on the target's connection).
      await backend.publishAsync('vehicles/car-target/commands/ping', 'from-backend', { qos: 1 });
      await waitFor(() => target.commands.includes('from-backend'), "the backend's command", 5000);
      assert.deepEqual(target.commands, ['from-backend']);
    } else {
      assert.equal(broker().name, 'embedded', 'mosquitto accepts it as the car it is; the embedded broker refuses the reserved name');
    }

    // The backend listener does not know the device CA at all.
    const onBackendPort = await tryConnect(broker().backendUrl, {
      ...tls(impostorFiles),
      protocolVersion: broker().protocol,
      clientId: 'impostor-on-backend-port',
    });
    await onBackendPort.client.endAsync(true);
    if (broker().backendUrl !== broker().url) assert.equal(onBackendPort.connected, false, 'a device certificate on the backend listener');
  });
}

describe('broker identities: the shipped mosquitto configuration', { timeout: 120_000 }, () => {
  const pki = new TestPki('broker identity test CA');
  const fleet = withBroker({ pki, backend: false });
  scenarios(pki, () => ({ name: 'mosquitto', url: fleet.broker.url, backendUrl: fleet.broker.backendUrl, protocol: 5 }));
});

describe('broker identities: the embedded broker', { timeout: 120_000 }, () => {
  const pki = new TestPki('broker identity test CA');
  let embedded: EmbeddedBroker;
  before(async () => {
    const server = pki.server();
    embedded = await EmbeddedBroker.start({ certFile: server.certFile, keyFile: server.keyFile, caFile: pki.caFile, backendCaFile: pki.backendCaFile });
  });
  after(() => embedded?.close());
  // [17.mqtt5] Two listeners, as the fleet broker: the backend on its own, which takes only the backend CA.
  scenarios(pki, () => ({ name: 'embedded', url: embedded.url, backendUrl: embedded.backendUrl, protocol: 4 }));

  it('[14.1] counts the refused connections, and says why in the CONNACK (identifier rejected, not authorized)', async () => {
    const before = embedded.refusedConnections;
    const tls = { ca: readFileSync(pki.caFile), cert: readFileSync(pki.client('car-x').certFile), key: readFileSync(pki.client('car-x').keyFile) };
    const other = await tryConnect(embedded.url, { ...tls, protocolVersion: 4, clientId: 'car-y' });
    await other.client.endAsync(true);
    assert.equal(other.connected, false);
    assert.equal(other.code, 2, 'identifier rejected');
    const self = await tryConnect(embedded.url, { ...tls, protocolVersion: 4, clientId: 'car-x' });
    await self.client.endAsync(true);
    assert.equal(self.connected, true);
    const reserved = writeIssued(pki.dir, 'reserved-ca', issueClientCertificate(pki.ca, 'ca'));
    const named = await tryConnect(embedded.url, {
      ca: readFileSync(pki.caFile),
      cert: readFileSync(reserved.certFile),
      key: readFileSync(reserved.keyFile),
      protocolVersion: 4,
      clientId: 'ca',
    });
    await named.client.endAsync(true);
    assert.equal(named.code, 5, 'not authorized');
    assert.equal(embedded.refusedConnections - before, 2);
  });
});
