// Clock drift: the measurement, the step decision and the monitor, against a fake host time source and a fake
// stepper (this machine's clock is never touched); the addon's clockStep refuses bad arguments before any
// syscall; the clock channel over a real socket pair (host side = the bridge's serveClockChannel).
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import pino from 'pino';
import { Writable } from 'node:stream';
import { parseConfig } from '../../src/config.ts';
import { ClockChannelHub, serveClockChannel } from '../../src/ops/clock-channel.ts';
import { ClockMonitor, decideStep, driftOf } from '../../src/ops/clock.ts';
import { AgentMetrics } from '../../src/ops/metrics.ts';
import { loadNative } from '../../src/transport/native.ts';
import { available } from '../native/helpers.ts';

const clockCfg = (toml = ''): ReturnType<typeof parseConfig>['clock'] => parseConfig(`[clock]\n${toml}`).clock;

describe('driftOf / decideStep', () => {
  it('drift is the enclave clock minus the host clock at the middle of the round trip', () => {
    expect(driftOf({ sentWallMs: 10_000, rttMs: 10, hostMs: 9_000 })).toBe(1_005);
    expect(driftOf({ sentWallMs: 10_000, rttMs: 0, hostMs: 12_500 })).toBe(-2_500);
  });

  it('does nothing unless [clock] correct = true', () => {
    expect(decideStep(-2_000, 1, clockCfg())).toEqual({ action: 'none', reason: 'disabled' });
  });

  it('steps forward by the drift when the enclave is behind, bounded by max_step_ms', () => {
    const cfg = clockCfg('correct = true\nmax_step_ms = 1000');
    expect(decideStep(-400, 2, cfg)).toEqual({ action: 'step', deltaMs: 400, clamped: false });
    expect(decideStep(-6_000, 2, cfg)).toEqual({ action: 'step', deltaMs: 1_000, clamped: true });
  });

  it('never steps backwards unless allow_backwards; then bounded too', () => {
    expect(decideStep(3_000, 2, clockCfg('correct = true'))).toEqual({ action: 'refused', reason: 'backwards', deltaMs: -3_000 });
    expect(decideStep(3_000, 2, clockCfg('correct = true\nallow_backwards = true\nmax_step_ms = 500'))).toEqual({ action: 'step', deltaMs: -500, clamped: true });
  });

  it('leaves a drift within the measurement uncertainty (half the round trip, at least 1 ms) alone', () => {
    const cfg = clockCfg('correct = true');
    expect(decideStep(-40, 100, cfg)).toEqual({ action: 'none', reason: 'within-uncertainty' });
    expect(decideStep(-1, 0.1, cfg)).toEqual({ action: 'none', reason: 'within-uncertainty' });
    expect(decideStep(-60, 100, cfg).action).toBe('step');
  });
});

/** A socket pair over loopback TCP: [agent side, host side]. */
async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const a = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const b = await accepted;
  server.close();
  await new Promise((r) => a.once('connect', r));
  return [a, b];
}

function logLines(): { logger: pino.Logger; lines: { msg: string; level: number; [k: string]: unknown }[] } {
  const lines: { msg: string; level: number }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(JSON.parse(chunk.toString()) as { msg: string; level: number });
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

const toClose: (() => void)[] = [];
afterEach(() => {
  for (const c of toClose.splice(0)) c();
});

async function monitorWithHost(hostOffsetMs: number, toml: string, stepper?: (d: number) => void) {
  const [agentSide, hostSide] = await socketPair();
  toClose.push(() => agentSide.destroy(), () => hostSide.destroy());
  serveClockChannel(hostSide, () => Date.now() + hostOffsetMs);
  const hub = new ClockChannelHub();
  hub.attach(agentSide);
  const metrics = new AgentMetrics({ mode: 'http', version: 'test', processMetrics: false });
  const log = logLines();
  const monitor = new ClockMonitor({ hub, config: clockCfg(toml), metrics, logger: log.logger, ...(stepper === undefined ? {} : { stepper }) });
  return { hub, metrics, monitor, log };
}

const metric = async (m: AgentMetrics, series: string): Promise<number | undefined> => {
  const line = (await m.metrics()).split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

describe('ClockMonitor over the clock channel', () => {
  it('exports the drift and warns past warn_ms; measures only when correct = false', async () => {
    const steps: number[] = [];
    const { monitor, metrics, log } = await monitorWithHost(3_000, 'warn_ms = 1000', (d) => steps.push(d));
    await monitor.sampleNow();
    const drift = (await metric(metrics, 'enclave_agent_clock_drift_seconds'))!;
    expect(drift).toBeLessThan(-2.9);
    expect(drift).toBeGreaterThan(-3.1);
    expect(await metric(metrics, 'enclave_agent_clock_samples_total{result="ok"}')).toBe(1);
    expect(log.lines.some((l) => l.msg === 'clock: enclave clock drifts from the host clock' && l.level === 40)).toBe(true);
    expect(steps).toEqual([]);
  });

  it('steps through the stepper when configured, bounded; refuses backwards', async () => {
    const steps: number[] = [];
    const ahead = await monitorWithHost(60_000, 'correct = true\nmax_step_ms = 2000', (d) => steps.push(d));
    await ahead.monitor.sampleNow();
    expect(steps).toEqual([2_000]);
    expect(await metric(ahead.metrics, 'enclave_agent_clock_steps_total{direction="forward"}')).toBe(1);

    const behind = await monitorWithHost(-60_000, 'correct = true', (d) => steps.push(d));
    await behind.monitor.sampleNow();
    expect(steps).toEqual([2_000]);
    expect(await metric(behind.metrics, 'enclave_agent_clock_steps_total{direction="refused"}')).toBe(1);
  });

  it('without a stepper (the local stack) logs what it would do and steps nothing', async () => {
    const { monitor, metrics, log } = await monitorWithHost(10_000, 'correct = true');
    await monitor.sampleNow();
    expect(log.lines.some((l) => l.msg.startsWith('clock: would step the clock'))).toBe(true);
    expect(await metric(metrics, 'enclave_agent_clock_steps_total{direction="forward"}')).toBe(0);
  });

  it('counts an error when no host channel is attached, or the host answers garbage (channel closed)', async () => {
    const metrics = new AgentMetrics({ mode: 'http', version: 'test', processMetrics: false });
    const hub = new ClockChannelHub();
    const monitor = new ClockMonitor({ hub, config: clockCfg(), metrics, logger: pino({ enabled: false }) });
    await monitor.sampleNow();
    expect(await metric(metrics, 'enclave_agent_clock_samples_total{result="error"}')).toBe(1);
    expect(await metric(metrics, 'enclave_agent_clock_drift_seconds')).toBeUndefined();

    const [agentSide, hostSide] = await socketPair();
    toClose.push(() => agentSide.destroy(), () => hostSide.destroy());
    hub.attach(agentSide);
    hostSide.on('data', () => hostSide.write('{"id":1,"host_ms":"soon"}\n'));
    await monitor.sampleNow();
    expect(await metric(metrics, 'enclave_agent_clock_samples_total{result="error"}')).toBe(2);
    expect(hub.attached).toBe(false);
  });
});

describe('the host side of the clock channel', () => {
  it('closes a peer that keeps asking and never reads its answers, rather than buffering them', async () => {
    const [agentSide, hostSide] = await socketPair();
    toClose.push(() => agentSide.destroy(), () => hostSide.destroy());
    let answered = 0;
    serveClockChannel(hostSide, () => {
      answered++;
      return Date.now();
    });
    agentSide.pause(); // never reads
    agentSide.on('error', () => {});
    let closed = false;
    hostSide.once('close', () => (closed = true));
    // 400,000 requests (4 MB) make 16 MB of answers: more than the sockets' buffers hold on loopback.
    const TOTAL = 400_000;
    const batch = Array.from({ length: 1000 }, (_, i) => `{"id":${i + 1}}\n`).join('');
    for (let i = 0; i < TOTAL / 1000 && !closed; i++) {
      if (!agentSide.write(batch)) await new Promise((r) => (agentSide.once('drain', r), hostSide.once('close', r)));
    }
    await expect.poll(() => closed || answered === TOTAL, { timeout: 30_000 }).toBe(true);
    expect(closed).toBe(true);
    expect(answered).toBeLessThan(TOTAL);
  });
});

describe.runIf(available)('addon clockStep: argument validation (the clock is never stepped here)', () => {
  const step = (): ((v: unknown) => void) => (loadNative() as unknown as { clockStep: (v: unknown) => void }).clockStep;

  it('refuses non-numbers, non-integers, zero, non-finite values and steps over one hour, before any syscall', () => {
    for (const bad of [undefined, '1000', 1n, null, {}]) expect(() => step()(bad)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' }));
    for (const bad of [0, 1.5, NaN, Infinity, -Infinity, 3_600_001, -3_600_001]) expect(() => step()(bad)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_INVALID_ARG_VALUE' }));
  });
});
