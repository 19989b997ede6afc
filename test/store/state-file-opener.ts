/**
 * Child process for the state-file tests (run as dist/test/store/state-file-opener.js outbox|link-memory <file>):
 * opens the file as the agent would, writes once, closes, and prints one JSON line: {firstSeq} or {error}. The test
 * kills it if it blocks (a FIFO planted at a file SQLite or the sidecar reader would open).
 */
import { SqliteOutbox } from '../../src/store/outbox.js';
import { LinkMemory } from '../../src/uplink/link-memory.js';

const [kind, file] = process.argv.slice(2);
if ((kind !== 'outbox' && kind !== 'link-memory') || !file) {
  console.error('usage: state-file-opener outbox|link-memory <file>');
  process.exit(2);
}
try {
  if (kind === 'outbox') {
    const outbox = SqliteOutbox.open({ path: file, deviceId: 'car-1', maxBytes: 1_000_000, maxAgeMs: 3_600_000 });
    const [firstSeq] = outbox.append([{ kind: 'telemetry', priority: 1, createdAt: Date.now(), encode: () => new Uint8Array(10) }]).seqs;
    outbox.close();
    console.log(JSON.stringify({ firstSeq }));
  } else {
    const memory = LinkMemory.open(file);
    memory.remember('wlan0', { intervalS: 30, lastGoodS: null, knownBadS: null, phase: 'probe', cyclesLeft: 0 });
    memory.close();
    console.log(JSON.stringify({}));
  }
} catch (err) {
  console.log(JSON.stringify({ error: (err as Error).message }));
}
