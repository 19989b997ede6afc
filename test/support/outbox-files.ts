/**
 * The outbox tests' shared set-up: a real SQLite outbox in a fresh temporary folder, with the problems it reports
 * collected; payloads that carry their own sequence number (so a stored message can be matched to its number); and
 * the loss notices a file holds, read with a connection of their own (so that no peek closes the open notice).
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { decodeLossNotice, type LossNotice } from '../../src/store/loss-notice.js';
import { SqliteOutbox, type OutboxError, type OutboxOptions } from '../../src/store/outbox.js';
import { makeTempDir } from './temp.js';

/** A payload of `size` bytes that starts with its sequence number (`seq=<n>;`). */
export function payloadFor(seq: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  bytes.set(new TextEncoder().encode(`seq=${seq};`).subarray(0, size));
  return bytes;
}

export interface OpenedOutbox {
  outbox: SqliteOutbox;
  problems: OutboxError[];
}

/** Opens the outbox file for car-1 (10 MB, a day's age limit unless `options` says otherwise). */
export function openOutbox(file: string, options: Partial<OutboxOptions> = {}): OpenedOutbox {
  const problems: OutboxError[] = [];
  const outbox = SqliteOutbox.open({
    path: file,
    deviceId: 'car-1',
    maxBytes: 10_000_000,
    maxAgeMs: 24 * 3600 * 1000,
    onProblem: (err) => problems.push(err),
    ...options,
  });
  return { outbox, problems };
}

/** `outbox.db` in a new temporary folder. */
export function outboxFile(prefix: string): string {
  return path.join(makeTempDir(prefix), 'outbox.db');
}

/** The loss notices stored in the file, in the order written. */
export function storedNotices(file: string): LossNotice[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare<[], { payload: Buffer }>("SELECT payload FROM message WHERE kind = 'loss' ORDER BY id")
      .all()
      .map((row) => decodeLossNotice(row.payload));
  } finally {
    db.close();
  }
}
