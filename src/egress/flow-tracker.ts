// The flows open through egress: splices the app's socket to its upstream, records each decision with its
// byte counts and duration once the flow ends, and drains on shutdown (let flows finish up to a deadline,
// then cut the rest).
import type { Duplex } from 'node:stream';
import type { DecisionLog, EgressVia } from './decision-log.ts';
import { splice, type Splice, type SpliceOptions } from './splice.ts';

export interface FlowMeta {
  via: EgressVia;
  name: string;
  ip: string;
  port: number;
  /** When the app's connection arrived (performance.now()). */
  startedAt: number;
}

export class FlowTracker {
  private readonly active = new Set<Splice>();
  private idle: (() => void) | null = null;

  constructor(private readonly log: DecisionLog) {}

  get size(): number {
    return this.active.size;
  }

  /** Splices app ↔ upstream; the decision record is written when both sides have closed. */
  run(app: Duplex, upstream: Duplex, meta: FlowMeta, opts: SpliceOptions = {}): Promise<void> {
    const s = splice(app, upstream, opts);
    this.active.add(s);
    return s.done.then((r) => {
      this.active.delete(s);
      this.log.record({
        allowed: true,
        via: meta.via,
        name: meta.name,
        ip: meta.ip,
        port: meta.port,
        bytesOut: r.aToB,
        bytesIn: r.bToA,
        durationMs: performance.now() - meta.startedAt,
        reason: r.clean ? 'closed' : 'reset',
      });
      if (this.active.size === 0) this.idle?.();
    });
  }

  /** Waits for open flows to end by themselves for up to `timeoutMs`, then cuts what is left. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.active.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs);
        this.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.idle = null;
    }
    this.destroyAll();
  }

  destroyAll(): void {
    for (const s of this.active) s.destroy();
  }
}
