// Clock drift. Every [clock] interval_ms the agent asks the host for its time over the clock channel
// (clock-channel.ts), exports the drift (the enclave's clock minus the host's), and warns past warn_ms. With
// [clock] correct = true, and only where a stepper is given (`enclave-agent run`: clock_settime through the
// addon), it steps the enclave's clock toward the host's: by at most max_step_ms per sample, and never backwards
// unless allow_backwards. THE HOST CONTROLS THIS INPUT: a hostile host can move the enclave's clock by up to
// max_step_ms per interval (forward only by default); nothing here makes its answer trustworthy.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { ClockChannelHub, TimeSample } from './clock-channel.ts';
import type { AgentMetrics } from './metrics.ts';

/** The enclave's clock minus the host's, in ms: the host's reading is taken at the middle of the round trip. */
export function driftOf(s: TimeSample): number {
  return s.sentWallMs + s.rttMs / 2 - s.hostMs;
}

export type StepDecision =
  | { action: 'none'; reason: 'disabled' | 'within-uncertainty' }
  | { action: 'refused'; reason: 'backwards'; deltaMs: number }
  | { action: 'step'; deltaMs: number; clamped: boolean };

/**
 * What to do about `driftMs` (measured with round trip `rttMs`): the step to ADD to the enclave's clock.
 * Nothing when correction is off or the drift is within the measurement's uncertainty (half the round trip,
 * at least 1 ms); a backward step only when allowed; never more than max_step_ms at once.
 */
export function decideStep(driftMs: number, rttMs: number, cfg: Config['clock']): StepDecision {
  if (!cfg.correct) return { action: 'none', reason: 'disabled' };
  if (Math.abs(driftMs) <= Math.max(1, rttMs / 2)) return { action: 'none', reason: 'within-uncertainty' };
  const wanted = -driftMs;
  if (wanted < 0 && !cfg.allow_backwards) return { action: 'refused', reason: 'backwards', deltaMs: Math.round(wanted) };
  const bounded = Math.max(-cfg.max_step_ms, Math.min(cfg.max_step_ms, wanted));
  return { action: 'step', deltaMs: Math.round(bounded), clamped: bounded !== wanted };
}

/** Moves the enclave's clock by `deltaMs` (run: the addon's clockStep). Throws on failure. */
export type ClockStepper = (deltaMs: number) => void;

export interface ClockMonitorOptions {
  hub: ClockChannelHub;
  config: Config['clock'];
  metrics: AgentMetrics;
  logger: Logger;
  /** Given only by `enclave-agent run`; without it a decision to step is logged, not made. */
  stepper?: ClockStepper;
  /** How long one time request may take (default 5 000 ms). */
  requestTimeoutMs?: number;
}

export class ClockMonitor {
  #timer: NodeJS.Timeout | null = null;
  #lastError: string | null = null;
  #running: Promise<void> | null = null;

  constructor(private readonly opts: ClockMonitorOptions) {}

  start(): void {
    if (this.#timer !== null) return;
    this.#timer = setInterval(() => void this.sampleNow(), this.opts.config.interval_ms);
    this.#timer.unref();
  }

  /** Takes one sample now (concurrent calls share it) and acts on it. */
  sampleNow(): Promise<void> {
    this.#running ??= this.#sample().finally(() => {
      this.#running = null;
    });
    return this.#running;
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #sample(): Promise<void> {
    const { hub, config, metrics, logger } = this.opts;
    let sample: TimeSample;
    try {
      sample = await hub.request(this.opts.requestTimeoutMs ?? 5_000);
    } catch (err) {
      metrics.clockSample('error');
      const code = (err as { code?: string }).code ?? 'error';
      if (code !== this.#lastError) logger.info({ code }, 'clock: no time sample from the host');
      this.#lastError = code;
      return;
    }
    this.#lastError = null;
    const drift = driftOf(sample);
    metrics.clockSample('ok', drift);
    const fields = { driftMs: Math.round(drift), rttMs: Math.round(sample.rttMs * 10) / 10 };
    if (Math.abs(drift) > config.warn_ms) logger.warn({ ...fields, warnMs: config.warn_ms }, 'clock: enclave clock drifts from the host clock');
    else logger.debug(fields, 'clock: drift sample');
    const decision = decideStep(drift, sample.rttMs, config);
    if (decision.action === 'refused') {
      metrics.clockStep('refused');
      logger.warn({ ...fields, stepMs: decision.deltaMs }, 'clock: not stepping backwards ([clock] allow_backwards = false)');
    } else if (decision.action === 'step') {
      if (this.opts.stepper === undefined) {
        logger.info({ ...fields, stepMs: decision.deltaMs }, 'clock: would step the clock; only `enclave-agent run` steps it (the local stack never changes this machine\'s clock)');
        return;
      }
      try {
        this.opts.stepper(decision.deltaMs);
        metrics.clockStep(decision.deltaMs > 0 ? 'forward' : 'backward');
        logger.warn({ ...fields, stepMs: decision.deltaMs, clamped: decision.clamped }, 'clock: stepped the enclave clock toward the host clock');
      } catch (err) {
        metrics.clockStep('refused');
        logger.error({ ...fields, code: (err as { code?: string }).code ?? String(err) }, 'clock: stepping the clock failed');
      }
    }
  }
}
