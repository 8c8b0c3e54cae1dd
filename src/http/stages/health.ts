// Stage and monitor: health. The app is probed on its `healthcheck` path (GET, 2xx/3xx = up) every
// `intervalMs`, or, without a configured path, by opening a TCP connection to its port. `GET
// /.well-known/health` is answered by the agent itself: its own state and the app's last known state as
// JSON, 200 when the app is up and 503 otherwise. The HTTP probe goes through the lean client (app-client.ts),
// not undici: an agent whose requests all take the fast path never loads undici (~0.7 MB of source V8 keeps).
import net from 'node:net';
import type { Logger } from 'pino';
import { AppClient } from '../app-client.ts';
import type { AppResponseHandler } from '../app-client.ts';
import type { Exchange, Stage } from '../exchange.ts';
import { errorBody, respond } from '../exchange.ts';
import { pathOf } from './attestation-endpoint.ts';

export const HEALTH_PATH = '/.well-known/health';

export interface AppState {
  status: 'up' | 'down' | 'unknown';
  /** ISO time of the last probe. */
  checked_at: string | null;
  /** What the probe did: 'http GET <path>' or 'tcp connect'. */
  probe: string;
  /** HTTP status of the last probe, when it got one. */
  http_status?: number;
  latency_ms?: number;
  /** Error code of the last failed probe. */
  error?: string;
}

export interface HealthMonitorOptions {
  host: string;
  port: number;
  /** App health path; without it the probe is a TCP connect. */
  path?: string;
  intervalMs?: number;
  timeoutMs?: number;
  logger?: Logger;
}

export class AppHealthMonitor {
  private state: AppState;
  private timer: NodeJS.Timeout | null = null;
  private client: AppClient | null = null;
  private inFlight: Promise<AppState> | null = null;
  private lastCheck = 0;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;

  constructor(private readonly opts: HealthMonitorOptions) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.timeoutMs = opts.timeoutMs ?? 2_000;
    this.state = { status: 'unknown', checked_at: null, probe: opts.path !== undefined ? `http GET ${opts.path}` : 'tcp connect' };
    if (opts.path !== undefined) {
      // One connection, kept alive between probes for as long as undici's default (4 s). The probe's own
      // deadline (httpProbe) covers the whole exchange; the client's are a backstop behind it.
      const backstop = 2 * this.timeoutMs;
      this.client = new AppClient({ host: opts.host, port: opts.port, maxConnections: 1, keepAliveTimeoutMs: 4_000, headersTimeoutMs: backstop, bodyTimeoutMs: backstop });
    }
  }

  /** Starts periodic probing (the first probe runs now). */
  start(): void {
    if (this.timer !== null) return;
    void this.check();
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
  }

  current(): AppState {
    return { ...this.state };
  }

  /** The state, probing first when the last result is older than one interval. */
  async fresh(): Promise<AppState> {
    if (this.state.status !== 'unknown' && performance.now() - this.lastCheck < this.intervalMs) return this.current();
    return this.check();
  }

  /** Probes now (concurrent callers share one probe). */
  check(): Promise<AppState> {
    this.inFlight ??= this.probe().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  close(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.client?.close();
    return Promise.resolve();
  }

  private async probe(): Promise<AppState> {
    const started = performance.now();
    const base = { checked_at: new Date().toISOString(), probe: this.state.probe };
    let next: AppState;
    try {
      if (this.client !== null) {
        const status = await httpProbe(this.client, this.opts, this.timeoutMs);
        const up = status >= 200 && status < 400;
        next = { ...base, status: up ? 'up' : 'down', http_status: status, latency_ms: round(performance.now() - started) };
      } else {
        await tcpProbe(this.opts.host, this.opts.port, this.timeoutMs);
        next = { ...base, status: 'up', latency_ms: round(performance.now() - started) };
      }
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      next = { ...base, status: 'down', error: typeof code === 'string' ? code : (err as Error).name };
    }
    if (next.status !== this.state.status) this.opts.logger?.info({ app: next }, `app is ${next.status}`);
    this.state = next;
    this.lastCheck = performance.now();
    return this.current();
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/**
 * `GET path` on the app; resolves with the status once the whole response is read (the connection is then
 * reusable). Rejects with the client's coded error, or APP_PROBE_TIMEOUT when the exchange (head and body)
 * takes longer than `timeoutMs`.
 */
function httpProbe(client: AppClient, opts: HealthMonitorOptions, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let status = 0;
    let abort: ((reason: Error) => void) | null = null;
    const timer = setTimeout(() => abort?.(Object.assign(new Error('the health probe timed out'), { code: 'APP_PROBE_TIMEOUT' })), timeoutMs);
    const handler: AppResponseHandler = {
      onAppHead: (s) => void (status = s),
      onAppData: () => true,
      onAppComplete: () => {
        clearTimeout(timer);
        resolve(status);
      },
      onAppError: (err) => {
        clearTimeout(timer);
        reject(err);
      },
    };
    const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
    try {
      abort = client.request({ method: 'GET', path: opts.path!, headers: ['host', `${host}:${opts.port}`], body: null }, handler);
    } catch (err) {
      clearTimeout(timer); // a path the client cannot write (HttpModeError)
      throw err;
    }
  });
}

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    sock.setTimeout(timeoutMs, () => sock.destroy(Object.assign(new Error('probe timed out'), { code: 'ETIMEDOUT' })));
    sock.once('connect', () => {
      sock.destroy();
      resolve();
    });
    sock.once('error', reject);
  });
}

export function healthEndpointStage(monitor: AppHealthMonitor, agent: { startedAt: number }): Stage {
  const serve = async (ex: Exchange): Promise<void> => {
    if (ex.req.method !== 'GET' && ex.req.method !== 'HEAD') {
      respond(ex, 405, ['Allow', 'GET, HEAD'], errorBody('HTTP_METHOD_NOT_ALLOWED', `expected GET or HEAD, found ${ex.req.method ?? '?'}`, ''));
      return;
    }
    const app = await monitor.fresh();
    const up = app.status === 'up';
    const body = {
      status: up ? 'ok' : 'unhealthy',
      agent: { status: 'ok', uptime_s: Math.round((Date.now() - agent.startedAt) / 1000) },
      app,
    };
    respond(ex, up ? 200 : 503, ['Cache-Control', 'no-store'], JSON.stringify(body));
  };
  return (ex, next) => (pathOf(ex.req.url) === HEALTH_PATH ? serve(ex) : next());
}
