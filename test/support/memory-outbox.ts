/** An OutboxQueue in memory, for the uplink tests: the order and the contract of the SQLite outbox, nothing kept. */
import type { MessageKind, Priority } from '../../src/collect/sample.js';
import type { IdFilter, OutboxQueue, OutboxRecord, SendPosition } from '../../src/store/outbox-queue.js';

export class MemoryOutbox implements OutboxQueue {
  private readonly records = new Map<number, OutboxRecord>();
  private readonly listeners = new Set<() => void>();
  /** Here a message's id and its seq are the same number. */
  private nextSeq = 1;
  /** Ids acknowledged, in the order they were. */
  readonly acknowledged: number[] = [];
  /** Ids dropped (refused for good), in the order they were. */
  readonly dropped: number[] = [];

  /** Adds a message whose payload is `{seq, ...body}` as JSON (so the backend can tell which it got). */
  add(kind: MessageKind | 'loss', priority: Priority, body: Record<string, unknown> = {}, padTo = 0): OutboxRecord {
    const seq = this.nextSeq++;
    let json = JSON.stringify({ seq, priority, ...body });
    if (json.length < padTo) json = JSON.stringify({ seq, priority, ...body, pad: 'x'.repeat(padTo - json.length - 9) });
    const record: OutboxRecord = { id: seq, seq, kind, priority, createdAt: Date.now(), payload: new TextEncoder().encode(json) };
    this.records.set(seq, record);
    this.revision++;
    for (const listener of this.listeners) listener();
    return record;
  }

  peek(maxCount: number, maxBytes: number, skip: IdFilter, after?: SendPosition): OutboxRecord[] {
    const afterIt = (r: OutboxRecord): boolean => after === undefined || r.priority < after.priority || (r.priority === after.priority && r.id > after.id);
    const ordered = [...this.records.values()].filter((r) => !skip.has(r.id) && afterIt(r)).sort((a, b) => b.priority - a.priority || a.id - b.id);
    const out: OutboxRecord[] = [];
    let bytes = 0;
    for (const record of ordered) {
      if (out.length >= maxCount) break;
      if (out.length > 0 && bytes + record.payload.byteLength > maxBytes) break;
      out.push(record);
      bytes += record.payload.byteLength;
    }
    return out;
  }

  acknowledge(id: number): void {
    if (this.records.delete(id)) this.acknowledged.push(id);
  }

  /** As the SQLite outbox: a loss notice is never dropped. */
  drop(id: number): boolean {
    if (this.records.get(id)?.kind === 'loss') return false;
    if (this.records.delete(id)) this.dropped.push(id);
    this.revision++;
    return true;
  }

  /** Moved by add and drop (OutboxQueue.revision). */
  revision = 0;

  /** Deletions here are immediate. */
  readonly unflushedAcknowledgements = 0;
  recordAcknowledgements(): void {}
  flushAcknowledgements(): void {}

  get pending(): number {
    return this.records.size;
  }

  onAppend(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

/** The seq of a payload MemoryOutbox made. */
export function seqOf(payload: Uint8Array): number {
  return (JSON.parse(Buffer.from(payload).toString('utf8')) as { seq: number }).seq;
}
