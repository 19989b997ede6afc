/**
 * The certificate signer's audit log: one JSON line per request it decided, appended and fsynced before the answer
 * goes out, in a file only the signer's user reads (0600; an existing file wider than that is narrowed, and said).
 * A symbolic link at the path is refused (O_NOFOLLOW): the log is not written through someone else's link.
 *
 * Failure: opening throws one line naming `--audit` and the file. A write that fails throws (the signer then does not
 * issue: a certificate that leaves must be in the log).
 */
import { closeSync, constants, fchmodSync, fstatSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';

export type AuditDecision = 'issued' | 'refused';

/** One line of the audit log. */
export interface AuditRecord {
  /** ISO 8601. */
  ts: string;
  /** The device the topic names (the authenticated identity). */
  device: string;
  requestId: string | null;
  decision: AuditDecision;
  /** Why: the refusal's code, or `new` / `repeat` (the same certificate sent again for a repeated request). */
  reason: string;
  /** One line for a person. */
  detail: string;
  serial: string | null;
  notBefore: string | null;
  notAfter: string | null;
  /** SHA-256 of the requested key's SubjectPublicKeyInfo (hex), when the request was read that far. */
  keyFingerprint: string | null;
}

export class SignerAudit {
  private constructor(
    readonly file: string,
    private fd: number | undefined,
  ) {}

  /** Opens `file` for appending. `narrowed` is called when an existing file was readable by others. */
  static open(file: string, narrowed: (from: number) => void = () => undefined): SignerAudit {
    let fd: number;
    try {
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ELOOP' ? 'it is a symbolic link' : (err as Error).message;
      throw new Error(`--audit: cannot open ${file}: ${why}`);
    }
    const stats = fstatSync(fd);
    if (!stats.isFile()) {
      closeSync(fd);
      throw new Error(`--audit: ${file} is not a regular file`);
    }
    if ((stats.mode & 0o077) !== 0) {
      fchmodSync(fd, 0o600);
      narrowed(stats.mode & 0o777);
    }
    return new SignerAudit(file, fd);
  }

  /** Appends `record` and waits for it to be on disk. Throws when it cannot. */
  append(record: AuditRecord): void {
    if (this.fd === undefined) throw new Error(`the audit log ${this.file} is closed`);
    writeSync(this.fd, `${JSON.stringify(record)}\n`);
    fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
