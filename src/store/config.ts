/** The `outbox` section of the device config: where messages wait for the uplink, and how much of the disk they may take. */
import { z } from 'zod';

export const outboxConfigSchema = z
  .strictObject({
    path: z.string().min(1).describe('SQLite database file, relative to this config file (e.g. /var/lib/telematics-agent/outbox.db). Its folder is created.'),
    maxBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .default(64 * 1024 * 1024)
      .describe('Cap on the messages kept (payloads plus a per-row overhead). When full, the lowest priority goes first, oldest first. Default 64 MiB.'),
    maxAgeHours: z
      .number()
      .positive()
      .default(7 * 24)
      .describe('Messages older than this are deleted unsent (counted as expired). Default 168 (7 days).'),
    durability: z
      .enum(['full', 'normal', 'off'])
      .default('normal')
      .describe(
        'How hard commits are pushed to flash. full: fsync at every batch, survives power cuts; normal (default): survives a crash of the ' +
          'agent, a power cut may lose the last seconds but never corrupts the file; off: no fsync (a power cut may corrupt the file, ' +
          'which is then moved aside at the next start).',
      ),
    writeIntervalMs: z
      .number()
      .int()
      .min(0)
      .max(60_000)
      .default(1000)
      .describe('Closed batches are written together at most this often (one transaction): fewer, larger writes spare the flash. Default 1000.'),
  })
  .describe('Store-and-forward: every message is committed to this SQLite file before it is published, and deleted after the broker acknowledged it.');

export type OutboxConfig = z.output<typeof outboxConfigSchema>;
