/**
 * Child process for the kill -9 tests (run as dist/test/store/outbox-writer.js <db path> <durability> <seed>
 * [maxBytes] [mixed]): appends batches to the outbox as fast as it can and prints each batch's sequence numbers on a
 * line once `append` has returned, i.e. once the batch is committed. The test kills it at a random moment and checks
 * every printed number. Standard output to a pipe is written synchronously on Linux, so a printed line is never held
 * back in a buffer. A small `maxBytes` makes the outbox evict (and announce) as it goes; `mixed` adds a command
 * result to every batch, and then each number is printed with its stream (`d:<seq>`, `r:<seq>`).
 */
import { SqliteOutbox, type Durability, type OutboxItem } from '../../src/store/outbox.js';
import { seededRandom } from '../support/random.js';

const [dbPath, durabilityArg, seedArg, maxBytesArg, mixedArg] = process.argv.slice(2);
if (!dbPath || (durabilityArg !== 'full' && durabilityArg !== 'normal' && durabilityArg !== 'off')) {
  console.error('usage: outbox-writer <db path> full|normal|off [seed] [maxBytes] [mixed]');
  process.exit(2);
}
const durability: Durability = durabilityArg;
/** Batch sizes vary from run to run, reproducibly. */
const random = seededRandom(Number(seedArg ?? 1));
const mixed = mixedArg === 'mixed';
/**
 * Results per run, at most: they must never fill the outbox by themselves (about 450 of them would, at the tests'
 * 120 kB), or eviction, which takes the lowest priority first and results only when nothing else is left, would take
 * them too; a slow machine, where the kill comes late, made runs that long.
 */
const MAX_RESULTS = 100;
let results = 0;

/** The payload names its own sequence number, so the test can check a stored message is the one numbered. */
function writerPayload(seq: number): Uint8Array {
  const text = `seq=${seq};`;
  return new TextEncoder().encode(text.padEnd(200, '.'));
}

const outbox = SqliteOutbox.open({
  path: dbPath,
  deviceId: 'car-kill',
  maxBytes: maxBytesArg ? Number(maxBytesArg) : 1_000_000_000,
  maxAgeMs: 365 * 24 * 3600 * 1000,
  durability,
  onProblem: (err) => console.error(err.message),
});

function appendBatch(): void {
  const size = 1 + Math.floor(random() * 20);
  const items: OutboxItem[] = Array.from({ length: size }, (_, i) => ({
    kind: i % 2 ? ('events' as const) : ('telemetry' as const),
    priority: (i % 4) as 0 | 1 | 2 | 3,
    createdAt: Date.now(),
    encode: writerPayload,
  }));
  if (mixed && results++ < MAX_RESULTS)
    items.push({ kind: 'result', priority: 7, createdAt: Date.now(), topic: 'vehicles/car-kill/results/x', encode: writerPayload });
  const { seqs } = outbox.append(items);
  if (seqs.length > 0)
    process.stdout.write(`${mixed ? seqs.map((seq, i) => `${items[i]!.kind === 'result' ? 'r' : 'd'}:${seq}`).join(' ') : seqs.join(' ')}\n`);
  setImmediate(appendBatch);
}
appendBatch();
