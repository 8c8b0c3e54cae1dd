// A token bucket: `burst` tokens at most, refilled at `perSecond`. Shared by the TLS ingress's fresh-nonce budget
// (ingress/nonce-budget.ts) and the per-session pace of RequestAttestation (responder/attestation-pace.ts).
// Browser-safe: the caller passes the time.

export interface Rate {
  perSecond: number;
  burst: number;
}

export class TokenBucket {
  tokens: number;
  at: number;
  constructor(rate: Rate, now: number) {
    this.tokens = rate.burst;
    this.at = now;
  }

  /** Tokens now (refilled up to the burst; a clock stepped back refills nothing, and takes nothing either). */
  level(rate: Rate, now: number): number {
    this.tokens = Math.min(rate.burst, this.tokens + (Math.max(0, now - this.at) / 1000) * rate.perSecond);
    this.at = now;
    return this.tokens;
  }
}
