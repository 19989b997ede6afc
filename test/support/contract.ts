/**
 * The backend's view of the contract: every file in contract/ loaded into ajv (JSON Schema 2020-12, a validator the
 * agent itself does not use), and `check(topic, payload)` telling what a message on a topic of the agent breaks.
 * The fleet backend subscriber of the tests (test/support/mosquitto.ts) checks every message it receives with it, and
 * the broker fixture fails the suite when one did not match: every end-to-end test is a contract test.
 *
 * What it checks, by topic (vehicles/<deviceId>/...): status, health, logs, csr, loss, telemetry and events (JSON
 * against `telemetry`, binary decoded by the agent's codec against `telemetry-decoded`), results on the default result
 * topic and under results/ (a SUCCEEDED detail also against its command's `commands/<name>.result`, an IN_PROGRESS
 * detail against its `.progress`). A message's `deviceId` must be the topic's. Messages the backend sends (commands,
 * certificates) are the tests' own, often malformed on purpose: not checked. A topic the contract does not name is a
 * violation.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { contractUri } from '../../src/contract/registry.js';
import { decodeMessage } from '../../src/uplink/codec.js';

const CONTRACT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'contract');

function schemaFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return schemaFiles(file);
    return entry.name.endsWith('.schema.json') ? [file] : [];
  });
}

export class ContractChecker {
  private readonly validators = new Map<string, ValidateFunction>();

  private constructor(readonly ajv: Ajv2020) {}

  /** The schemas of contract/ (throws when one does not compile: the contract itself is broken). */
  static load(dir = CONTRACT_DIR): ContractChecker {
    const ajv = new Ajv2020({ strict: true, allowUnionTypes: true, allErrors: true });
    for (const file of schemaFiles(dir)) ajv.addSchema(JSON.parse(readFileSync(file, 'utf8')) as object);
    return new ContractChecker(ajv);
  }

  /** The validator of the schema registered as `name` (its `$id`). */
  validator(name: string): ValidateFunction {
    let validate = this.validators.get(name);
    if (!validate) {
      validate = this.ajv.getSchema(contractUri(name));
      if (!validate) throw new Error(`contract: no schema ${name} in ${CONTRACT_DIR}`);
      this.validators.set(name, validate);
    }
    return validate;
  }

  /** What `value` breaks of the schema `name` (empty when it matches). */
  problems(name: string, value: unknown): string[] {
    const validate = this.validator(name);
    if (validate(value)) return [];
    return (validate.errors ?? []).slice(0, 5).map((e) => `${name}${e.instancePath || ''}: ${e.message ?? 'invalid'} ${JSON.stringify(e.params)}`);
  }

  /** What a message the agent published on `topic` breaks of the contract (empty when it matches). */
  check(topic: string, payload: Buffer): string[] {
    const match = /^vehicles\/([^/]+)\/(.+)$/.exec(topic);
    if (!match) return [`${topic}: not a topic of the contract`];
    const [, deviceId, rest] = match as unknown as [string, string, string];
    if (/^commands\/[^/]+$/.test(rest) || rest === 'certificate') return [];
    const problems: string[] = [];
    const add = (found: string[]): void => {
      for (const p of found) problems.push(`${topic}: ${p}`);
    };
    const json = (): unknown => {
      try {
        return JSON.parse(payload.toString('utf8'));
      } catch (err) {
        add([`not JSON (${(err as Error).message})`]);
        return undefined;
      }
    };
    const sameDevice = (message: unknown): void => {
      const id = (message as { deviceId?: unknown } | undefined)?.deviceId;
      if (id !== undefined && id !== deviceId) add([`deviceId ${JSON.stringify(id)} is not the topic's ${deviceId}`]);
    };
    const simple: Record<string, string> = { status: 'status', health: 'health', logs: 'logs', csr: 'csr', loss: 'loss' };
    const name = simple[rest];
    if (name !== undefined) {
      const message = json();
      if (message !== undefined) {
        add(this.problems(name, message));
        sameDevice(message);
      }
      return problems;
    }
    if (rest === 'telemetry' || rest === 'events') {
      if (payload[0] === 0x7b) {
        const message = json();
        if (message === undefined) return problems;
        add(this.problems('telemetry', message));
        sameDevice(message);
        if ((message as { kind?: unknown }).kind !== rest) add([`kind ${JSON.stringify((message as { kind?: unknown }).kind)} on the ${rest} topic`]);
        return problems;
      }
      try {
        const { header, samples } = decodeMessage(payload, 'cbor');
        const message = { ...header, samples };
        add(this.problems('telemetry-decoded', message));
        sameDevice(message);
        if (header.kind !== rest) add([`kind ${header.kind} on the ${rest} topic`]);
      } catch (err) {
        add([`binary payload does not decode: ${(err as Error).message}`]);
      }
      return problems;
    }
    if (/^commands\/[^/]+\/result$/.test(rest) || rest.startsWith('results/')) {
      const result = json() as { status?: string; command?: string; detail?: unknown } | undefined;
      if (result === undefined) return problems;
      add(this.problems('result', result));
      sameDevice(result);
      const command = result.command;
      if (command !== undefined && result.detail !== undefined) {
        if (result.status === 'SUCCEEDED') add(this.problems(`commands/${command}.result`, result.detail));
        if (result.status === 'IN_PROGRESS' && this.ajv.getSchema(contractUri(`commands/${command}.progress`))) {
          add(this.problems(`commands/${command}.progress`, result.detail));
        }
      }
      return problems;
    }
    return [`${topic}: not a topic of the contract`];
  }
}

let shared: ContractChecker | undefined;

/** One checker per test process (compiling the schemas takes a moment). */
export function contractChecker(): ContractChecker {
  shared ??= ContractChecker.load();
  return shared;
}
