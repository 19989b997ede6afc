/**
 * `npm run bench -- keepalive [--json]`: what an idle car costs and how reachable it is behind a carrier NAT that
 * forgets idle TCP flows after 50 s, with the adaptive heartbeat beside fixed 30 s and 60 s MQTT keepalives.
 *
 * Three carrier networks (test/support/carrier-network.ts), one per car, each with its own mosquitto in the cloud:
 * the cars run at the same time without sharing a link, so each link's counters see one car only. Each car is the
 * real MqttSession (test/support/netns-agent.ts): the adaptive one with the default heartbeat settings except
 * holdCycles 0 (so learning takes about four minutes rather than seven), the fixed ones with MQTT.js's keepalive.
 *
 * - Bytes per hour: every IP packet on the car's link, both ways (what a data plan bills), counted over a steady
 *   window and extrapolated to an hour: for the fixed cars from a minute after the start, for the adaptive car from
 *   the moment its heartbeat settled, to the end of the run.
 * - Delivered: the backend sends each car a command 30 s into its window, then every 67 or 83 s (in turn); a command
 *   counts when it reaches the car within COMMAND_DEADLINE_S (a driver at the door does not wait longer for an
 *   unlock; the persistent session would bring it after the car's next reconnection).
 * The run lasts RUN_S, or WINDOW_S after the adaptive heartbeat settled if that is later.
 * Needs root and the harness's tools (iproute2, nftables, conntrack, mosquitto: scripts/install-test-deps.sh).
 */
import path from 'node:path';
import { keepaliveConfigSchema } from '../src/uplink/config.js';
import { CarAgent } from '../test/support/car-agent.js';
import { CarrierBroker, NetnsMqttClient } from '../test/support/carrier-broker.js';
import { CAR_IF, CarrierNetwork } from '../test/support/carrier-network.js';
import { TestPki } from '../test/support/mosquitto.js';
import type { NetnsAgentOptions } from '../test/support/netns-agent.js';
import { makeTempDir } from '../test/support/temp.js';
import { delay } from '../test/support/wait.js';

const NAT_TIMEOUT_S = 50;
const WINDOW_S = 240;
/** The run lasts at least this long, so the fixed cars' windows hold enough commands. */
const RUN_S = 600;
const FIXED_WINDOW_START_S = 60;
const LEARNING_LIMIT_S = 480;
/** Gaps between commands, taken in turn: longer than the NAT timeout, so the car idles long enough between two
 * commands to lose a flow nothing else keeps, and uneven, so they meet the keepalives at different phases. */
const COMMAND_GAPS_S = [67, 83];
const FIRST_COMMAND_S = 30;
const COMMAND_DEADLINE_S = 15;

type CarName = 'adaptive' | 'fixed30' | 'fixed60';

interface Car {
  name: CarName;
  net: CarrierNetwork;
  backend: NetnsMqttClient;
  agent: CarAgent;
  deviceId: string;
  windowStart: number | null;
  bytesAtStart: number;
  commands: { topic: string; sentAt: number }[];
}

export interface KeepaliveBenchResult {
  nat_timeout_s: number;
  learned_s: number;
  adaptive: CarResult;
  fixed30: CarResult;
  fixed60: CarResult;
}

interface CarResult {
  bytes_per_hour: number;
  delivered: number;
  window_s: number;
  commands: number;
  reconnections: number;
}

function linkBytes(net: CarrierNetwork): number {
  const { uplink, downlink } = net.linkCounters();
  return uplink.seenBytes + downlink.seenBytes;
}

export async function runKeepaliveBenchmark(json: boolean): Promise<void> {
  const say = (line: string): void => {
    if (!json) process.stdout.write(`${line}\n`);
  };
  const dir = makeTempDir('bench-keepalive-');
  const cars: Car[] = [];
  const started = performance.now();
  const elapsedS = (): number => (performance.now() - started) / 1000;
  try {
    // The agent's defaults, as a device config without a keepalive section gets them.
    const defaults = keepaliveConfigSchema.parse({});
    for (const name of ['adaptive', 'fixed30', 'fixed60'] as const) {
      const net = await CarrierNetwork.create({ natTimeoutS: NAT_TIMEOUT_S });
      const broker = await CarrierBroker.start(net, new TestPki(`keepalive bench ${name} CA`));
      const backend = await NetnsMqttClient.connect(net, 'cloud', broker, { identity: 'backend', keepalive: 60, subscribe: [] });
      const keepalive: NetnsAgentOptions['keepalive'] =
        name === 'adaptive'
          ? {
              adaptive: true,
              settings: { ...defaults, holdCycles: 0 },
              livenessMinS: defaults.livenessMinS,
              memoryPath: path.join(dir, 'link-memory.db'),
              network: CAR_IF,
            }
          : { adaptive: false, keepaliveS: name === 'fixed30' ? 30 : 60 };
      const deviceId = `bench-${name}`;
      const agent = CarAgent.start(net, broker, deviceId, { keepalive, connectTimeoutMs: 10_000, reconnect: { initialMs: 1000, maxMs: 30_000 } });
      cars.push({ name, net, backend, agent, deviceId, windowStart: null, bytesAtStart: 0, commands: [] });
    }
    for (const car of cars) await car.agent.waitFor(() => car.agent.connected, `${car.name} to connect`, 20_000);
    say(`keepalive: NAT timeout ${NAT_TIMEOUT_S} s; three idle cars on their own carrier networks; the adaptive one learning...`);

    const adaptive = cars[0]!;
    let learnedS: number | null = null;
    const nextCommandAt = new Map<CarName, number>();
    let endAt = Infinity;
    while (elapsedS() < endAt) {
      const now = elapsedS();
      for (const car of cars) {
        if (car.windowStart === null) {
          const ready = car.name === 'adaptive' ? learnedS !== null : now >= FIXED_WINDOW_START_S;
          if (ready) {
            car.windowStart = now;
            car.bytesAtStart = linkBytes(car.net);
            nextCommandAt.set(car.name, now + FIRST_COMMAND_S);
          }
        } else if (now >= nextCommandAt.get(car.name)!) {
          const topic = `vehicles/${car.deviceId}/commands/unlock-${car.commands.length}`;
          car.backend.publish(topic, 'unlock');
          car.commands.push({ topic, sentAt: performance.now() });
          nextCommandAt.set(car.name, now + COMMAND_GAPS_S[car.commands.length % COMMAND_GAPS_S.length]!);
        }
      }
      if (learnedS === null) {
        const settled = adaptive.agent.of('interval').find((e) => (e.change as { phase: string }).phase === 'settled');
        if (settled) {
          learnedS = (settled.change as { toS: number }).toS;
          endAt = Math.max(elapsedS() + WINDOW_S, RUN_S);
          say(`keepalive: the adaptive heartbeat settled at ${learnedS} s after ${elapsedS().toFixed(0)} s; measuring until ${endAt.toFixed(0)} s`);
        } else if (now > LEARNING_LIMIT_S) {
          throw new Error(`the adaptive heartbeat did not settle within ${LEARNING_LIMIT_S} s: ${JSON.stringify(adaptive.agent.of('interval'))}`);
        }
      }
      await delay(250);
    }
    // Commands sent near the end get their deadline before counting.
    const last = Math.max(...cars.flatMap((c) => c.commands.map((m) => m.sentAt)));
    await delay(Math.max(0, last + COMMAND_DEADLINE_S * 1000 - performance.now()));

    const results = {} as Record<CarName, CarResult>;
    for (const car of cars) {
      const windowS = elapsedS() - car.windowStart!;
      const bytes = linkBytes(car.net) - car.bytesAtStart;
      const arrived = car.commands.filter((c) => {
        const got = car.agent.of('command').find((e) => e.topic === c.topic);
        return got !== undefined && got.at - c.sentAt <= COMMAND_DEADLINE_S * 1000;
      }).length;
      const reconnections = car.agent.states().filter((s) => s.state === 'connected' && s.at >= started + car.windowStart! * 1000).length;
      results[car.name] = {
        bytes_per_hour: Math.round((bytes / windowS) * 3600),
        delivered: car.commands.length === 0 ? 0 : Math.round((arrived / car.commands.length) * 1000) / 1000,
        window_s: Math.round(windowS),
        commands: car.commands.length,
        reconnections,
      };
    }
    const result: KeepaliveBenchResult = { nat_timeout_s: NAT_TIMEOUT_S, learned_s: learnedS!, ...results };
    if (json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      return;
    }
    say(`keepalive: learned ${learnedS} s for a ${NAT_TIMEOUT_S} s NAT (${((learnedS! / NAT_TIMEOUT_S) * 100).toFixed(0)} %)`);
    say('  car        bytes/hour   delivered   reconnections   window');
    for (const name of ['adaptive', 'fixed30', 'fixed60'] as const) {
      const r = results[name];
      say(
        `  ${name.padEnd(9)} ${String(r.bytes_per_hour).padStart(11)}   ${`${(r.delivered * 100).toFixed(0)} % of ${r.commands}`.padStart(10)}   ${String(r.reconnections).padStart(13)}   ${r.window_s} s`,
      );
    }
    say(`  (bytes: IP packets on the car's link both ways, extrapolated from each window; delivered: within ${COMMAND_DEADLINE_S} s)`);
  } finally {
    for (const car of cars) {
      await car.agent.close();
      await car.backend.close();
      await car.net.destroy();
    }
  }
}
