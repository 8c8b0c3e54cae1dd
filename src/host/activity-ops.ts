// The agent's health and a few of its metrics for the page, read from the ops endpoint (`--ops URL`: the
// bridge's re-served ops port, or the agent's own in the local stack) by the page's server — the page itself
// talks to nothing but its own origin. Unreachable is an answer, not an error: the page shows it.

export interface OpsSnapshot {
  url: string | null;
  reachable: boolean;
  /** HTTP status of /health (200 ready, 503 with a reason). */
  healthStatus?: number;
  health?: unknown;
  /** A few metric values: the sum over label sets of each name. */
  metrics?: Record<string, number>;
  error?: string;
}

/** The metrics the page shows (names without the enclave_agent_ prefix). */
export const SHOWN_METRICS = ['sessions_open', 'app_up', 'draining', 'handshakes_queued', 'log_records_dropped_total', 'log_queued_bytes', 'clock_drift_seconds', 'request_duration_seconds_count'];

/** Sums the samples of each shown metric in Prometheus text exposition. */
export function pickMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^enclave_agent_([a-z0-9_]+)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null || !SHOWN_METRICS.includes(m[1]!)) continue;
    const v = Number(m[2]);
    if (Number.isFinite(v)) out[m[1]!] = (out[m[1]!] ?? 0) + v;
  }
  return out;
}

const TIMEOUT_MS = 2000;
const MAX_BYTES = 1024 * 1024;

async function text(res: Response): Promise<string> {
  const body = await res.text();
  return body.length > MAX_BYTES ? body.slice(0, MAX_BYTES) : body;
}

export async function fetchOps(base: string | null): Promise<OpsSnapshot> {
  if (base === null) return { url: null, reachable: false, error: 'no --ops URL given' };
  const root = base.replace(/\/+$/, '');
  try {
    const h = await fetch(`${root}/health`, { signal: AbortSignal.timeout(TIMEOUT_MS), redirect: 'error' });
    const healthText = await text(h);
    let health: unknown = healthText;
    try {
      health = JSON.parse(healthText);
    } catch {
      // not JSON: shown as text
    }
    const snap: OpsSnapshot = { url: root, reachable: true, healthStatus: h.status, health };
    try {
      const m = await fetch(`${root}/metrics`, { signal: AbortSignal.timeout(TIMEOUT_MS), redirect: 'error' });
      if (m.ok) snap.metrics = pickMetrics(await text(m));
    } catch {
      // health without metrics is still worth showing
    }
    return snap;
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return { url: root, reachable: false, error: cause?.code ?? (err as Error).name };
  }
}
