// Every egress decision, allowed or denied, is counted and becomes a transaction-log record of type "egress"
// (name, IP, port, bytes each way, duration — never payload); refused ones are also logged at warn, the line
// saying how (denied by the policy, failed on the way, busy at capacity), at most WARN_BURST per WARN_WINDOW_MS
// (the rest are counted and summarised), so a looping app cannot flood the log.
// The records of flows not allowed are bounded the same way (RECORD_BURST per window, then one count record
// {"type":"egress","allowed":false,"suppressed":N,"window_ms":...} at most a window after the first held back,
// and at flush()): an app looping on refused names or queries would otherwise write its chosen text to the host
// at its own pace. Held-back counts are never dropped: a timer or the egress service's close writes them.
import type { Logger } from 'pino';
import type { LogSink } from '../http/log-sink.ts';
import { recordEgressDecision, type EgressOutcome } from '../ops/metrics.ts';
import type { EgressErrorCode } from './errors.ts';

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
  /** Failed because the host dialer was at its cap of concurrent flows, or the egress listeners at [egress] max_proxy_connections. */
  busy?: boolean;
  /** The typed error's code, when one refused it (e.g. EGRESS_PROXY_BUSY). */
  code?: EgressErrorCode;
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
export const RECORD_BURST = 100;

export interface DecisionLogOptions {
  trxSink?: LogSink;
  logger?: Logger;
  /** Extra observer (metrics). */
  onDecision?: (d: EgressDecision) => void;
  now?: () => number;
}

/** At most `burst` events per `windowMs`; says how many were held back when a new window opens. */
class WindowLimit {
  private start = -Infinity;
  private used = 0;
  private held = 0;
  constructor(
    private readonly burst: number,
    private readonly windowMs: number,
  ) {}

  /** Whether this event may go out, and the count held back in the window that just closed (0: none). */
  take(t: number): { ok: boolean; heldBack: number } {
    let heldBack = 0;
    if (t - this.start >= this.windowMs) {
      heldBack = this.held;
      this.start = t;
      this.used = 0;
      this.held = 0;
    }
    if (this.used < this.burst) {
      this.used++;
      return { ok: true, heldBack };
    }
    this.held++;
    return { ok: false, heldBack };
  }

  /** The count held back so far in this window, now reported (the window itself runs on). */
  takeHeld(): number {
    const n = this.held;
    this.held = 0;
    return n;
  }
}

export class DecisionLog {
  private readonly warns = new WindowLimit(WARN_BURST, WARN_WINDOW_MS);
  private readonly refusalRecords = new WindowLimit(RECORD_BURST, WARN_WINDOW_MS);
  private readonly now: () => number;
  /** Writes the held-back counts a window after the first was held back, even if no decision follows. */
  private flushTimer: NodeJS.Timeout | undefined;
  constructor(private readonly opts: DecisionLogOptions = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** Writes what was held back (the count record, the warn summary) now; the egress service's close calls it. */
  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.writeHeld(this.refusalRecords.takeHeld(), this.warns.takeHeld());
  }

  private writeHeld(records: number, warns: number): void {
    if (records > 0) this.opts.trxSink?.write({ type: 'egress', allowed: false, suppressed: records, window_ms: WARN_WINDOW_MS });
    if (warns > 0) this.opts.logger?.warn({ suppressed: warns, windowMs: WARN_WINDOW_MS }, 'egress refused: more flows refused (denied, failed or busy), not logged one by one');
  }

  private armFlush(): void {
    if (this.flushTimer !== undefined) return;
    this.flushTimer = setTimeout(() => this.flush(), WARN_WINDOW_MS);
    this.flushTimer.unref();
  }

  record(d: EgressDecision): void {
    const outcome = outcomeOf(d);
    if (outcome === 'allowed') egressCounters.allowed++;
    else if (outcome === 'denied') egressCounters.denied++;
    else if (outcome === 'busy') egressCounters.busy++;
    else egressCounters.failed++;
    recordEgressDecision(outcome);
    egressCounters.bytesOut += d.bytesOut;
    egressCounters.bytesIn += d.bytesIn;
    const gate = d.allowed ? { ok: true, heldBack: 0 } : this.refusalRecords.take(this.now());
    this.writeHeld(gate.heldBack, 0);
    if (!gate.ok) this.armFlush();
    if (gate.ok) {
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
        ...(d.code === undefined ? {} : { code: d.code }),
      });
    }
    if (outcome !== 'allowed') this.warnRefused(d, outcome);
    this.opts.onDecision?.(d);
  }

  private warnRefused(d: EgressDecision, outcome: Exclude<EgressOutcome, 'allowed'>): void {
    const { ok, heldBack } = this.warns.take(this.now());
    this.writeHeld(0, heldBack);
    if (!ok) this.armFlush();
    if (ok) this.opts.logger?.warn({ via: d.via, name: d.name, ip: d.ip, port: d.port, reason: d.reason, ...(d.code === undefined ? {} : { code: d.code }) }, WARN_LINE[outcome]);
  }
}

/** The outcome a decision is counted under (the metric's `outcome` label). */
function outcomeOf(d: EgressDecision): EgressOutcome {
  return d.allowed ? 'allowed' : d.busy === true ? 'busy' : d.failed === true ? 'error' : 'denied';
}

/** The warn line of each kind of refusal: one at capacity or one that failed on the way was not denied by the policy. */
const WARN_LINE: Readonly<Record<Exclude<EgressOutcome, 'allowed'>, string>> = {
  denied: 'egress denied',
  error: 'egress failed',
  busy: 'egress busy: at capacity, refused',
};
