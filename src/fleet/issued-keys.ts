/**
 * The certificate signer's memory of what it issued: one row per certified key (its SHA-256 fingerprint), with the
 * device, the request and the certificate. It is what makes "the key is new" checkable across restarts, paces
 * issuance per device, and lets a repeated request get the same certificate again.
 *
 * A file (`--state DIR`/issued-keys.sqlite) opened through StateDatabase (mode 0600, no link followed, errors naming
 * `--state` and the file), synchronous FULL: a row is on disk before the certificate leaves. A damaged file is not set
 * aside: the signer refuses to start, naming it, since a fresh registry would forget every key it had certified. The
 * development run keeps its registry in memory (`IssuedKeys.inMemory()`).
 */
import Database from 'better-sqlite3';
import { DamagedStateFile, StateDatabase } from '../store/state-database.js';

export interface IssuedKey {
  fingerprint: string;
  deviceId: string;
  requestId: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  /** Epoch ms. */
  issuedAt: number;
  certificate: string;
}

const SCHEMA = `CREATE TABLE IF NOT EXISTS issued (
  fingerprint TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  serial TEXT NOT NULL,
  not_before TEXT NOT NULL,
  not_after TEXT NOT NULL,
  issued_at INTEGER NOT NULL,
  certificate TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issued_by_device ON issued (device_id, issued_at);`;

type Row = {
  fingerprint: string;
  device_id: string;
  request_id: string;
  serial: string;
  not_before: string;
  not_after: string;
  issued_at: number;
  certificate: string;
};

export class IssuedKeys {
  private readonly byFingerprint: Database.Statement<[string], Row>;
  private readonly latest: Database.Statement<[string], { issued_at: number }>;
  private readonly insert: Database.Statement<[string, string, string, string, string, string, number, string]>;

  private constructor(
    private readonly db: Database.Database,
    private readonly closeFile: () => void,
  ) {
    this.byFingerprint = db.prepare('SELECT * FROM issued WHERE fingerprint = ?');
    this.latest = db.prepare('SELECT issued_at FROM issued WHERE device_id = ? ORDER BY issued_at DESC LIMIT 1');
    this.insert = db.prepare('INSERT INTO issued VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  }

  /** Opens (or creates) `file`; throws one line naming `--state` and the file. */
  static open(file: string): IssuedKeys {
    let state: StateDatabase;
    try {
      state = StateDatabase.open(file, { configKey: '--state', synchronous: 'FULL', setup: (db) => db.exec(SCHEMA) });
    } catch (err) {
      if (err instanceof DamagedStateFile) {
        throw new Error(`--state: ${file} is damaged (${err.message}); restore it from a backup: a new one would forget every key already certified`);
      }
      throw err;
    }
    return new IssuedKeys(state.db, () => state.close());
  }

  /** A registry that lives as long as the process (the development run's). */
  static inMemory(): IssuedKeys {
    const db = new Database(':memory:');
    db.exec(SCHEMA);
    return new IssuedKeys(db, () => db.close());
  }

  find(fingerprint: string): IssuedKey | undefined {
    const row = this.byFingerprint.get(fingerprint);
    return (
      row && {
        fingerprint: row.fingerprint,
        deviceId: row.device_id,
        requestId: row.request_id,
        serial: row.serial,
        notBefore: row.not_before,
        notAfter: row.not_after,
        issuedAt: row.issued_at,
        certificate: row.certificate,
      }
    );
  }

  /** When `deviceId` last got a certificate (epoch ms), if ever. */
  lastIssuedAt(deviceId: string): number | undefined {
    return this.latest.get(deviceId)?.issued_at;
  }

  /**
   * Records `key` and then runs `also` (the audit record) in the same transaction: if `also` throws, nothing is
   * recorded, and the certificate must not be sent.
   */
  record(key: IssuedKey, also: () => void): void {
    this.db.transaction(() => {
      this.insert.run(key.fingerprint, key.deviceId, key.requestId, key.serial, key.notBefore, key.notAfter, key.issuedAt, key.certificate);
      also();
    })();
  }

  close(): void {
    this.closeFile();
  }
}
