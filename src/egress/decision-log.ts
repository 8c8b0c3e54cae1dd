// Every egress decision, allowed or denied, becomes a transaction-log record of type "egress" (name, IP,
// port, bytes each way, duration — never payload) and a count; denied ones are also logged at warn, at most
// WARN_BURST per WARN_WINDOW_MS (the rest are counted and summarised), so a looping app cannot flood the log.
import type { Logger } from 'pino';
import type { LogSink } from '../http/log-sink.ts';
import { recordEgressDecision } from '../ops/metrics.ts';

export type EgressVia = 'explicit' | 'transparent' | 'dns';

export interface EgressDecision {
  allowed: boolean;
  via: EgressVia;
  /** The name the app asked for ("" for a raw IP). */
  name: string;
  /** The address dialled or refused (null when refused before resolution). */
  ip: string | null;
  port: number;
  /** App → destination, destination → app. */
  bytesOut: number;
  bytesIn: number;
  durationMs: number;
  /** Why refused or how it ended: "not on the allow-list", "non-global address", "connect failed", ... */
  reason?: string;
  /** Not refused by the policy but failed on the way (dialer down, connect refused, resolver error). */
  failed?: boolean;
  /** Failed because the host dialer was at its cap of concurrent flows. */
  busy?: boolean;
}

/** Process-wide egress totals (the Prometheus counter is src/ops/metrics.ts egress_decisions_total{outcome}). */
export const egressCounters = {
  allowed: 0,
  denied: 0,
  failed: 0,
  busy: 0,
  bytesOut: 0,
  bytesIn: 0,
};

export const WARN_BURST = 10;
export const WARN_WINDOW_MS = 10_000;

export interface DecisionLogOptions {
  trxSink?: LogSink;
  logger?: Logger;
  /** Extra observer (metrics). */
  onDecision?: (d: EgressDecision) => void;
  now?: () => number;
}

export class DecisionLog {
  private windowStart = -Infinity;
  private warned = 0;
  private suppressed = 0;
  private readonly now: () => number;
  constructor(private readonly opts: DecisionLogOptions = {}) {
    this.now = opts.now ?? Date.now;
  }

  record(d: EgressDecision): void {
    const outcome = d.allowed ? 'allowed' : d.busy === true ? 'busy' : d.failed === true ? 'error' : 'denied';
    if (outcome === 'allowed') egressCounters.allowed++;
    else if (outcome === 'denied') egressCounters.denied++;
    else if (outcome === 'busy') egressCounters.busy++;
    else egressCounters.failed++;
    recordEgressDecision(outcome);
    egressCounters.bytesOut += d.bytesOut;
    egressCounters.bytesIn += d.bytesIn;
    this.opts.trxSink?.write({
      type: 'egress',
      allowed: d.allowed,
      via: d.via,
      name: d.name,
      ip: d.ip,
      port: d.port,
      bytes_out: d.bytesOut,
      bytes_in: d.bytesIn,
      duration_ms: Math.round(d.durationMs * 10) / 10,
      ...(d.reason === undefined ? {} : { reason: d.reason }),
      ...(d.failed === true ? { failed: true } : {}),
      ...(d.busy === true ? { busy: true } : {}),
    });
    if (!d.allowed) this.warnDenied(d);
    this.opts.onDecision?.(d);
  }

  private warnDenied(d: EgressDecision): void {
    const t = this.now();
    if (t - this.windowStart >= WARN_WINDOW_MS) {
      if (this.suppressed > 0) this.opts.logger?.warn({ suppressed: this.suppressed, windowMs: WARN_WINDOW_MS }, 'egress denied: more flows denied, not logged one by one');
      this.windowStart = t;
      this.warned = 0;
      this.suppressed = 0;
    }
    if (this.warned < WARN_BURST) {
      this.warned++;
      this.opts.logger?.warn({ via: d.via, name: d.name, ip: d.ip, port: d.port, reason: d.reason }, 'egress denied');
    } else {
      this.suppressed++;
    }
  }
}
