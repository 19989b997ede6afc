/**
 * Liveness: how long a ping may go unanswered before the link is declared dead. Derived from the round trips the
 * pings measured, the way TCP derives its retransmission timeout (RFC 6298: smoothed RTT and its mean deviation),
 * then stretched so that TCP's own retransmissions of a lost ping or answer (each waiting about one RTO, doubling)
 * fit inside it before the agent gives up on the link: a lossy link is slow, not dead.
 */

/** How many retransmission timeouts a ping may take: the first sending plus about two retransmissions. */
export const LIVENESS_RTO_FACTOR = 4;

export class RoundTrip {
  private srtt: number | null = null;
  private rttvar = 0;
  private count = 0;

  /** A measured round trip, milliseconds. */
  sample(ms: number): void {
    if (!(Number.isFinite(ms) && ms >= 0)) return;
    this.count++;
    if (this.srtt === null) {
      this.srtt = ms;
      this.rttvar = ms / 2;
      return;
    }
    this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - ms);
    this.srtt = 0.875 * this.srtt + 0.125 * ms;
  }

  /** Smoothed round trip, milliseconds; null before the first sample. */
  get smoothedMs(): number | null {
    return this.srtt;
  }

  get variationMs(): number {
    return this.rttvar;
  }

  get samples(): number {
    return this.count;
  }

  /** The liveness timeout: LIVENESS_RTO_FACTOR × (SRTT + 4·RTTVAR), never below `minMs` (which alone applies before
   * the first sample). */
  timeoutMs(minMs: number): number {
    if (this.srtt === null) return minMs;
    return Math.max(minMs, Math.ceil(LIVENESS_RTO_FACTOR * (this.srtt + 4 * this.rttvar)));
  }
}
