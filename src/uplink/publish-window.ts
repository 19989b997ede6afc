/**
 * The QoS 1 publishes one connection may have unacknowledged at once: the broker's CONNACK Receive Maximum (MQTT 5,
 * 3.3.4). It is one limit for the whole connection, shared by every sender (the publisher's window, the remote log,
 * the health report, command results, the birth and the last status): a strict broker ends the connection with
 * 0x93 (Receive Maximum exceeded) when the client sends one more, and every publish in flight would be sent again.
 *
 * A publish takes a slot before it is written and gives it back on its PUBACK or failure; beyond the limit publishes
 * wait in the order they were asked for, so each sender's own order holds on the wire. A waiting publish whose
 * connection was lost meanwhile is skipped (its starter says so), and its slot goes to the next one. One window per
 * connection: a new connection starts empty, with the new CONNACK's limit.
 */

/** Writes the publish; false when it no longer should be (it failed while waiting), so it took no slot. */
export type PublishStarter = () => boolean;

export class PublishWindow {
  private inFlight = 0;
  private peakInFlight = 0;
  private readonly waiting: PublishStarter[] = [];
  /** Index of the first waiting starter (a queue without Array.shift's copying when a backlog is long). */
  private head = 0;

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`PublishWindow: a receive maximum is at least 1, not ${limit}`);
  }

  /** Starts the publish now if a slot is free, or once one is. */
  take(start: PublishStarter): void {
    if (this.inFlight < this.limit) {
      this.inFlight++;
      if (this.inFlight > this.peakInFlight) this.peakInFlight = this.inFlight;
      if (!start()) this.release();
      return;
    }
    this.waiting.push(start);
  }

  /** A publish in flight was acknowledged or failed: its slot goes to the next waiting publish that still wants it. */
  release(): void {
    while (this.head < this.waiting.length) {
      const next = this.waiting[this.head]!;
      this.waiting[this.head++] = skip;
      if (this.head === this.waiting.length) {
        this.waiting.length = 0;
        this.head = 0;
      }
      if (next()) return;
    }
    this.inFlight--;
  }

  /** Publishes written and not yet acknowledged. */
  get unacknowledged(): number {
    return this.inFlight;
  }

  /** Publishes waiting for a slot. */
  get queued(): number {
    return this.waiting.length - this.head;
  }

  /** The most ever in flight on this connection (for the tests and the health report). */
  get peak(): number {
    return this.peakInFlight;
  }
}

const skip: PublishStarter = () => false;
