/**
 * The fleet view: every car the backend identity can see, from what the broker retains for it (the status: birth,
 * last will or shutdown; the latest health report), with no backend database. `collectFleet` reads the retained
 * messages of `vehicles/+/status` and `vehicles/+/health` with a subscribe/unsubscribe barrier, no timer
 * (src/fleet/retained-read.ts: once the UNSUBACK is in, all of them have come). `fleetCars` turns them into one row
 * per car, sorted by device ID; `matchesFilter` and `selectCars` pick cars by state, device pattern,
 * certificate, outbox depth and agent version (what a multi-car `send` can call too).
 *
 * Failure: a message off the contract (src/contract/decoder.ts) is kept as the car's `problems`, never fatal; a car
 * whose status is off the contract has state `unknown`. A refused subscription, a broker that does not answer within `waitMs`,
 * or a connection that closes rejects, naming the filter or the broker. Car-sent text is returned as sent: whoever prints it escapes it (src/cli/ops-fleet.ts).
 */
import type { MqttClient } from 'mqtt';
import { ContractError, decodeAgentMessage } from '../contract/decoder.js';
import type { HealthReport, LastError } from '../contract/health.js';
import type { StatusBirth, StatusShutdown, StatusWill } from '../contract/messages.js';
import { readRetained } from './retained-read.js';

/** The topics the fleet view reads: each car's retained status and latest health report. */
export const FLEET_TOPICS = ['vehicles/+/status', 'vehicles/+/health'] as const;

/** What the broker holds of one car: the decoded messages, or what was wrong with them. */
export interface RetainedCar {
  deviceId: string;
  status: StatusBirth | StatusWill | StatusShutdown | null;
  health: HealthReport | null;
  /** One line per message off the contract: `status: <why>`, `health: <why>`. */
  problems: string[];
}

/** One car's row: what `telematics-ops fleet --json` prints in `cars` (docs/fleet-operations.md). */
export interface FleetCar {
  deviceId: string;
  /** From the retained status; `unknown` without one (or with one off the contract). */
  state: 'online' | 'offline' | 'unknown';
  /** Online: when it connected; offline after a shutdown: when it stopped; null after a lost connection (the will has no time). */
  sinceMs: number | null;
  /** Offline: `shutdown` or `connection lost`; null otherwise. */
  reason: string | null;
  birthSeq: number | null;
  /** The latest health report's time, and its age when the view was taken, seconds. */
  reportTsMs: number | null;
  reportAgeS: number | null;
  /** The uplink's state at that report, and the heartbeat interval (learned, or configured). */
  link: { state: string; heartbeatS: number } | null;
  outbox: { messages: number; oldestAgeS: number | null } | null;
  certificateDaysLeft: number | null;
  version: string | null;
  lastError: LastError | null;
  problems: string[];
}

/** Collects the retained status and health of every car the connection's identity may read. */
export async function collectFleet(client: MqttClient, options: { waitMs: number }): Promise<Map<string, RetainedCar>> {
  const cars = new Map<string, RetainedCar>();
  const carOf = (deviceId: string): RetainedCar => {
    let car = cars.get(deviceId);
    if (!car) cars.set(deviceId, (car = { deviceId, status: null, health: null, problems: [] }));
    return car;
  };
  for (const { topic, payload } of await readRetained(client, FLEET_TOPICS, options.waitMs)) {
    const kind = topic.endsWith('/status') ? 'status' : 'health';
    const topicDevice = /^vehicles\/([^/]+)\//.exec(topic)?.[1];
    if (topicDevice === undefined) continue;
    const car = carOf(topicDevice);
    try {
      const decoded = decodeAgentMessage(topic, payload);
      if (decoded.kind === 'status') car.status = decoded.message;
      else if (decoded.kind === 'health') car.health = decoded.message;
    } catch (err) {
      car.problems.push(`${kind}: ${err instanceof ContractError ? err.problem : (err as Error).message}`);
    }
  }
  return cars;
}

/** One row per car, sorted by device ID; ages against `now` (unix ms). */
export function fleetCars(retained: Iterable<RetainedCar>, now = Date.now()): FleetCar[] {
  const rows = [...retained].map((car): FleetCar => {
    const { status, health } = car;
    const agent = health?.agent;
    return {
      deviceId: car.deviceId,
      state: status === null ? 'unknown' : status.online ? 'online' : 'offline',
      sinceMs: status && 'ts' in status ? status.ts : null,
      reason: status && !status.online ? status.reason : null,
      birthSeq: status?.birthSeq ?? null,
      reportTsMs: health?.tsMs ?? null,
      reportAgeS: health ? Math.max(0, Math.round((now - health.tsMs) / 1000)) : null,
      link: agent?.uplink ? { state: agent.uplink.state, heartbeatS: agent.uplink.heartbeat.intervalS } : null,
      outbox: agent?.outbox ? { messages: agent.outbox.messages, oldestAgeS: agent.outbox.oldestAgeS } : null,
      certificateDaysLeft: agent?.certificate?.daysLeft ?? null,
      version: agent?.version ?? null,
      lastError: agent?.lastError ?? null,
      problems: car.problems,
    };
  });
  return rows.sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0));
}

/** The filters of `telematics-ops fleet` (and of anything that picks cars from the fleet view). */
export interface FleetFilter {
  online?: boolean;
  offline?: boolean;
  /** A device ID, or a glob where `*` is any run of characters. */
  device?: string;
  /** Cars whose certificate expires within this many days (a car without a report does not match). */
  certExpiringDays?: number;
  /** Cars with more than this many messages waiting in the outbox. */
  outboxOver?: number;
  /** Cars running this agent version. */
  version?: string;
}

/** `*` matches any run of characters, everything else itself; the whole ID must match. */
export function devicePattern(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((part) => part.replace(/[\\^$.|?+()[\]{}]/g, '\\$&'))
      .join('.*')}$`,
    's',
  );
}

/** Whether `car` passes every filter given (an empty filter passes every car). */
export function matchesFilter(car: FleetCar, filter: FleetFilter, pattern = filter.device === undefined ? undefined : devicePattern(filter.device)): boolean {
  if (filter.online === true && car.state !== 'online') return false;
  if (filter.offline === true && car.state !== 'offline') return false;
  if (pattern && !pattern.test(car.deviceId)) return false;
  if (filter.certExpiringDays !== undefined && (car.certificateDaysLeft === null || car.certificateDaysLeft > filter.certExpiringDays)) return false;
  if (filter.outboxOver !== undefined && (car.outbox === null || car.outbox.messages <= filter.outboxOver)) return false;
  if (filter.version !== undefined && car.version !== filter.version) return false;
  return true;
}

/** The cars of `cars` that pass `filter`, in the same order. */
export function filterCars(cars: readonly FleetCar[], filter: FleetFilter): FleetCar[] {
  const pattern = filter.device === undefined ? undefined : devicePattern(filter.device);
  return cars.filter((car) => matchesFilter(car, filter, pattern));
}

/**
 * The device IDs the fleet view selects with `filter`, sorted: reads the retained status and health over `client`
 * (a backend connection, src/commands/operator-client.ts's connectBackend) and applies the filter. For a multi-car
 * send (`send --where`).
 */
export async function selectCars(client: MqttClient, filter: FleetFilter, options: { quietMs?: number; waitMs?: number } = {}): Promise<string[]> {
  const retained = await collectFleet(client, { waitMs: options.waitMs ?? 10_000, ...(options.quietMs !== undefined ? { quietMs: options.quietMs } : {}) });
  return filterCars(fleetCars(retained.values()), filter).map((car) => car.deviceId);
}

/** `40 cars: 38 online, 2 offline` (and how many are unknown, when some are). */
export function countLine(cars: readonly FleetCar[]): string {
  const online = cars.filter((c) => c.state === 'online').length;
  const offline = cars.filter((c) => c.state === 'offline').length;
  const unknown = cars.length - online - offline;
  return `${cars.length} ${cars.length === 1 ? 'car' : 'cars'}: ${online} online, ${offline} offline${unknown > 0 ? `, ${unknown} unknown` : ''}`;
}
