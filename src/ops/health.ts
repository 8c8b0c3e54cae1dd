// GET /health on the ops port, for a load balancer: 200 when the agent is ready and the app answers its health
// check; 503 with a JSON reason while starting, draining, while the app is restarting (supervisor backoff), starting
// (started, port not answering yet) or down. The app is probed on every call (the probe is one TCP connect, or GET [healthcheck] path): a load
// balancer polls every few seconds and must see a killed app at once, not one probe interval later.
import type { AppHealthMonitor, AppState } from '../http/stages/health.ts';

export type AgentPhase = 'starting' | 'ready' | 'draining';
/** The supervisor's state (src/runtime/supervisor.ts), when the agent supervises the app (`run`). */
export type AppSupervision = 'starting' | 'healthy' | 'backoff' | 'stopping' | 'stopped';

export type UnhealthyReason = 'starting' | 'draining' | 'app-restarting' | 'app-starting' | 'app-stopped' | 'app-down';

export interface HealthReport {
  status: 200 | 503;
  body: {
    status: 'ok' | 'unhealthy';
    reason?: UnhealthyReason;
    agent: { phase: AgentPhase; uptime_s: number };
    app: AppState & { supervisor?: AppSupervision };
  };
}

export interface HealthSources {
  phase(): AgentPhase;
  startedAt: number;
  probe: Pick<AppHealthMonitor, 'check'>;
  supervision?: () => AppSupervision | undefined;
}

export async function healthReport(src: HealthSources): Promise<HealthReport> {
  const phase = src.phase();
  const supervisor = src.supervision?.();
  const app: HealthReport['body']['app'] = { ...(await src.probe.check()), ...(supervisor === undefined ? {} : { supervisor }) };
  const reason: UnhealthyReason | undefined =
    phase !== 'ready'
      ? phase
      : supervisor === 'backoff'
        ? 'app-restarting'
        : supervisor === 'stopping' || supervisor === 'stopped'
          ? 'app-stopped'
          : app.status !== 'up'
            ? supervisor === 'starting'
              ? 'app-starting'
              : 'app-down'
            : undefined;
  const agent = { phase, uptime_s: Math.round((Date.now() - src.startedAt) / 1000) };
  return reason === undefined
    ? { status: 200, body: { status: 'ok', agent, app } }
    : { status: 503, body: { status: 'unhealthy', reason, agent, app } };
}
