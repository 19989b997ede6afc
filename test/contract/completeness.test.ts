/**
 * A backend that knows only the contract proves it received every telemetry message of a car: the whole agent
 * (`telematics-agent run`, a real process) on a simulated vehicle, publishing every value of three signals (the `every`
 * rule, JSON) through mosquitto, across a dead zone long enough to overflow its 64 KiB outbox, a broker restart and a
 * kill -9 of the agent. The backend dedupes by (deviceId, seq), reads the loss notices, and checks that the numbers it
 * received and the numbers announced lost cover every number from its first to the latest health report's
 * `agent.outbox.nextSeq - 1`, as docs/payload-format.md says a backend can. Every message is also checked against the
 * contract by the broker fixture's subscriber.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { LossNotice } from '../../src/contract/telemetry.js';
import { DEMO_DBC_PATH } from '../../src/sim/vehicle.js';
import { decodeMessage } from '../../src/uplink/codec.js';
import { AgentProcess, writeConfig } from '../support/agent-process.js';
import { withBroker } from '../support/broker-fixture.js';
import type { ReceivedMessage } from '../support/mosquitto.js';
import { makeTempDir } from '../support/temp.js';
import { delay, waitFor } from '../support/wait.js';

const DEVICE = 'car-complete';

/** What the backend knows about one car's data stream, from the messages alone. */
class StreamLedger {
  readonly received = new Set<number>();
  readonly lost: LossNotice['lost'] = [];
  nextSeq: number | null = null;
  duplicates = 0;
  private read = 0;

  /** Reads the messages not read yet. */
  update(messages: readonly ReceivedMessage[]): void {
    for (; this.read < messages.length; this.read++) {
      const { topic, payload } = messages[this.read]!;
      if (topic === `vehicles/${DEVICE}/telemetry` || topic === `vehicles/${DEVICE}/events`) {
        const seq = payload[0] === 0x7b ? (JSON.parse(payload.toString('utf8')) as { seq: number }).seq : decodeMessage(payload, 'cbor').header.seq;
        this.take(seq);
      } else if (topic === `vehicles/${DEVICE}/loss`) {
        const notice = JSON.parse(payload.toString('utf8')) as LossNotice;
        this.take(notice.seq);
        this.lost.push(...notice.lost);
      } else if (topic === `vehicles/${DEVICE}/health`) {
        const report = JSON.parse(payload.toString('utf8')) as { agent: { outbox: { nextSeq: number } | null } };
        if (report.agent.outbox) this.nextSeq = report.agent.outbox.nextSeq;
      }
    }
  }

  private take(seq: number): void {
    if (this.received.has(seq)) this.duplicates++;
    else this.received.add(seq);
  }

  /** The numbers from the first known one to `upTo` that were neither received nor announced lost. */
  missing(upTo: number): number[] {
    const known = [...this.received, ...this.lost.map((r) => r.first)];
    if (known.length === 0) return [];
    const first = Math.min(...known);
    const missing: number[] = [];
    for (let seq = first; seq <= upTo && missing.length < 20; seq++) {
      if (this.received.has(seq)) continue;
      if (this.lost.some((r) => r.first <= seq && seq <= r.last)) continue;
      missing.push(seq);
    }
    return missing;
  }
}

describe('a backend proves it received every message of a car', { timeout: 240_000 }, () => {
  const fleet = withBroker();

  it('[17.complete] across a dead zone that overflows the outbox, a broker restart and a kill -9: received and announced-lost cover every number', async (t) => {
    const dir = makeTempDir('complete-');
    const config = writeConfig(dir, 'car', {
      deviceId: DEVICE,
      buses: [{ name: 'can0', dbc: DEMO_DBC_PATH, source: { type: 'sim', speed: 1, seed: 7 } }],
      collection: {
        format: 'json',
        batch: { maxSamples: 100, maxDelayMs: 200 },
        rules: [{ name: 'everything', mode: 'every', signals: ['EngineSpeed', 'VehicleSpeed', 'LongitudinalAccel'] }],
      },
      outbox: { path: path.join(dir, 'var', 'outbox.db'), maxBytes: 64 * 1024, writeIntervalMs: 100 },
      uplink: { url: fleet.broker.url, ...fleet.pki.identityFiles(DEVICE), protocol: 5, reconnect: { initialMs: 50, maxMs: 400 } },
      health: { intervalS: 1, http: { enabled: false } },
      logging: { verboseForS: 0 },
    });
    let agent = AgentProcess.start(config);
    t.after(() => agent.stop('SIGKILL'));
    const backend = fleet.backend;
    const ledger = new StreamLedger();
    const telemetry = (): number => backend.on(DEVICE, 'telemetry').length;
    const flowing = async (what: string): Promise<void> => {
      const before = telemetry();
      await waitFor(() => telemetry() >= before + 5, `${what}: telemetry flowing again`, 60_000);
    };

    await flowing('at start');

    // A dead zone: the broker frozen (the car's link silent, as out of coverage) for longer than the outbox holds.
    fleet.broker.pause();
    await delay(8000);
    fleet.broker.resume();
    await flowing('after the dead zone');

    // The broker restarts (clean: sessions saved).
    await fleet.broker.restart();
    await flowing('after the broker restart');

    // The car loses power (kill -9) and starts again on the same outbox.
    await agent.stop('SIGKILL');
    agent = AgentProcess.start(config);
    await flowing('after the kill -9');

    // The proof: a health report taken after all that names nextSeq; every number below it is accounted for.
    const healthBefore = backend.on(DEVICE, 'health').length;
    await waitFor(() => backend.on(DEVICE, 'health').length > healthBefore, 'a health report after the kill -9', 30_000);
    ledger.update(backend.messages);
    const upTo = ledger.nextSeq! - 1;
    await waitFor(
      () => {
        ledger.update(backend.messages);
        return ledger.missing(upTo).length === 0;
      },
      `every number up to ${upTo} received or announced lost (missing: ${ledger.missing(upTo).join(', ')})`,
      60_000,
    );

    // The dead zone overflowed the outbox: the evicted messages were announced, exactly, and none of them arrived.
    const evicted = ledger.lost.filter((r) => r.reason === 'evicted');
    assert.ok(evicted.length > 0, `no eviction announced: ${JSON.stringify(ledger.lost)}`);
    assert.ok(
      ledger.lost.every((r) => r.exact && r.count === r.last - r.first + 1),
      JSON.stringify(ledger.lost),
    );
    const lostCount = evicted.reduce((n, r) => n + r.count, 0);
    const first = Math.min(...ledger.received);
    assert.equal(ledger.received.size + lostCount >= upTo - first + 1, true);
    // A message evicted while it was already on its way (in the car's TCP stream when the broker froze) arrives all the
    // same: announced lost and received, as payload-format.md says a backend must expect (keep it: it was delivered).
    const receivedAnyway = evicted.reduce((n, r) => n + [...ledger.received].filter((seq) => seq >= r.first && seq <= r.last).length, 0);
    t.diagnostic(
      `numbers ${first}..${upTo}: ${ledger.received.size} received (${ledger.duplicates} duplicates dropped), ${lostCount} announced lost in ${evicted.length} range(s), ${receivedAnyway} of them received anyway (in flight when evicted)`,
    );
  });
});
