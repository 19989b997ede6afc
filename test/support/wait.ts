/**
 * Waiting in tests: for an event (poll a condition until it holds), never sleep-and-hope. The one `waitFor` every test
 * and helper uses, host and VM alike.
 *
 * Failure: `waitFor` rejects after `timeoutMs` with "timed out after N ms waiting for <what>", so a failed wait says
 * what it was waiting for; a condition that throws rejects with that error at once.
 */

/** Resolves after `ms` milliseconds (a pause between steps of a test, or a turn of the event loop with 0). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** How often a condition is checked: often enough to catch a state that lasts a few milliseconds. */
const POLL_MS = 2;

/** Polls `condition` until it holds; rejects after `timeoutMs` (default 5 s) naming `what` it waited for. */
export async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const start = performance.now();
  while (!condition()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(POLL_MS);
  }
}
