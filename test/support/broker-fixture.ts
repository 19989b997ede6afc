/**
 * The broker a test talks to, set up and taken down in one place: a real mosquitto on the shipped fleet
 * configuration (test/support/mosquitto.ts) with the PKI its clients chain to, and (unless asked not to) the fleet
 * backend's subscriber recording what devices publish.
 *
 * - `withBroker()` in a describe(): starts them in the suite's `before` hook and takes them down in its `after` hook;
 *   the suite reads them through the returned getters. What must end while the broker still runs (an agent, an
 *   operator client, sessions) is handed to `beforeStop`, since node:test runs `after` hooks in the order they were
 *   registered, and this one was registered first.
 * - `startBroker()` in one test: the same, started at once; the test registers `close` with `t.after`.
 *
 * The backend subscriber checks every message it receives against the contract (test/support/contract.ts); closing
 * throws when one did not match, so a suite on this fixture fails on any drift of what the agent publishes (only the
 * topics a test names as `offContract`, where it plays a car that publishes off the contract on purpose, are spared).
 *
 * Failure: a broker that does not start fails the hook or the call with mosquitto's own words; taking down resumes a
 * broker a test left paused (SIGSTOP), runs every `beforeStop` task even when one fails (the first failure is thrown
 * after the broker has stopped), and never leaves mosquitto running.
 */
import { after, before } from 'node:test';
import { BackendSubscriber, Mosquitto, TestPki, type MosquittoOptions } from './mosquitto.js';

export interface BrokerOptions extends Omit<MosquittoOptions, 'pki'> {
  /** The PKI the broker and its clients use; default a new TestPki (made when the broker starts). */
  pki?: TestPki;
  /** The backend subscriber's topic filter (default `vehicles/#`); false: no backend subscriber. */
  backend?: string | false;
  /**
   * Check what the backend receives against the contract (default true). False only for a suite whose devices publish
   * payloads of the test's own making (the publisher's tests feed it synthetic messages), never for the agent's.
   */
  contract?: boolean;
  /**
   * Topics a test publishes off the contract on purpose, as a car would (a forged car in the fleet view's test): their
   * violations are not held against the suite. Every other message is still checked.
   */
  offContract?: RegExp;
}

export interface RunningBroker {
  readonly pki: TestPki;
  readonly broker: Mosquitto;
  /** The backend's subscriber; throws when started with `backend: false`. */
  readonly backend: BackendSubscriber;
  /** Resumes the broker if paused, closes the backend subscriber and stops the broker. */
  close(): Promise<void>;
}

/** Starts a broker (and the backend subscriber) now. */
export async function startBroker(options: BrokerOptions = {}): Promise<RunningBroker> {
  const { pki = new TestPki(), backend: filter = 'vehicles/#', contract = true, offContract, ...mosquittoOptions } = options;
  const broker = await Mosquitto.start({ pki, ...mosquittoOptions });
  let backend: BackendSubscriber | undefined;
  try {
    if (filter !== false) backend = await BackendSubscriber.connect(broker, pki, filter);
  } catch (err) {
    await broker.stop();
    throw err;
  }
  return {
    pki,
    broker,
    get backend(): BackendSubscriber {
      if (!backend) throw new Error('this broker was started without a backend subscriber (backend: false)');
      return backend;
    },
    async close(): Promise<void> {
      broker.resume();
      try {
        await backend?.close();
      } finally {
        await broker.stop();
      }
      // Every message the backend received was checked against the contract: one that did not match fails the suite.
      const violations = contract ? (backend?.contractViolations ?? []).filter((v) => !offContract?.test(v.slice(0, v.indexOf(': ')))) : [];
      if (violations.length > 0) throw new Error(`messages that do not match the contract (contract/):\n  ${violations.join('\n  ')}`);
    },
  };
}

export interface BrokerFixture {
  /** The PKI: at once when passed in options, else once the suite's `before` hook has run. */
  readonly pki: TestPki;
  /** Available once the suite's `before` hook has run. */
  readonly broker: Mosquitto;
  readonly backend: BackendSubscriber;
  /** Runs `task` when the suite ends, before the backend and the broker go (tasks registered later run first). */
  beforeStop(task: () => unknown): void;
}

/** A broker for the enclosing describe(): started in its `before` hook, stopped in its `after` hook. */
export function withBroker(options: BrokerOptions = {}): BrokerFixture {
  let running: RunningBroker | undefined;
  const tasks: (() => unknown)[] = [];
  const started = (): RunningBroker => {
    if (!running) throw new Error('the broker fixture is read before its before hook started the broker');
    return running;
  };
  before(async () => {
    running = await startBroker(options);
  });
  after(async () => {
    // A test may have left the broker frozen: what ends now (sessions, agents) must be able to reach it.
    running?.broker.resume();
    let failure: { error: unknown } | undefined;
    for (const task of tasks.splice(0).reverse()) {
      try {
        await task();
      } catch (err) {
        failure ??= { error: err };
      }
    }
    await running?.close();
    if (failure) throw failure.error;
  });
  return {
    get pki(): TestPki {
      return options.pki ?? started().pki;
    },
    get broker(): Mosquitto {
      return started().broker;
    },
    get backend(): BackendSubscriber {
      return started().backend;
    },
    beforeStop(task: () => unknown): void {
      tasks.push(task);
    },
  };
}
