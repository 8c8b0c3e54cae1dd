// The fault suite's fixtures, all on loopback: the app as a real child process (fixtures/app.mjs, so a test
// can SIGKILL it mid-response), and the agent assembled in-process by startAgentRuntime (the same assembly
// `enclave-agent run` and `start` use) with the NSM simulator, TCP standing in for vsock, and its logs
// captured in memory.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { createMemoryLogSink, type MemoryLogSink } from '../../src/http/log-sink.ts';
import type { DecryptStage } from '../../src/http/stages/decrypt.ts';
import type { SessionSummary } from '../../src/responder/session.ts';
import { startAgentRuntime, type AgentRuntime, type AgentRuntimeOptions } from '../../src/runtime/agent.ts';
import { utf8 } from '../../src/util/bytes.ts';
import { freePort, OWNER_ENV } from '../runtime/harness.ts';

export const APP_SCRIPT = path.join(import.meta.dirname, 'fixtures/app.mjs');
export const IDENTITY = { agentVersion: 'fault-suite', app: 'node app.mjs', config: 'faults' };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitUntil(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

// -------------------------------------------------------------------------------------------------------------
// The app process

export interface AppProcess {
  readonly port: number;
  readonly rawPort: number | undefined;
  readonly child: ChildProcess;
  /** Lines the app printed ("ready", "begin /drip", ...). */
  readonly lines: string[];
  waitForLine(line: string, timeoutMs?: number): Promise<void>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
}

export async function startAppProcess(port?: number, opts: { raw?: boolean; rawPort?: number } = {}): Promise<AppProcess> {
  const p = port ?? (await freePort());
  const rawPort = opts.rawPort ?? (opts.raw === true ? await freePort() : undefined);
  const child = spawn(process.execPath, [APP_SCRIPT], {
    env: { ...process.env, APP_PORT: String(p), ...(rawPort === undefined ? {} : { APP_RAW_PORT: String(rawPort) }), [OWNER_ENV]: String(process.pid) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (c: string) => {
    buf += c;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const app: AppProcess = {
    port: p,
    rawPort,
    child,
    lines,
    waitForLine: async (line, timeoutMs = 10_000) => {
      await waitUntil(() => lines.includes(line) || gone, timeoutMs, `app line "${line}"`);
      if (!lines.includes(line)) throw new Error(`the app exited before printing "${line}"`);
    },
    kill: async () => {
      if (!gone) child.kill('SIGKILL');
      await exited;
    },
  };
  await app.waitForLine('ready');
  return app;
}

// -------------------------------------------------------------------------------------------------------------
// The agent

/** Every line a pino logger wrote, kept as text (the leak check searches it) and parsed. */
export interface MemoryLog {
  readonly logger: pino.Logger;
  readonly text: () => string;
  readonly records: () => Record<string, unknown>[];
}

export function memoryLog(level: pino.Level = 'trace'): MemoryLog {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      chunks.push(typeof chunk === 'string' ? chunk : utf8.decode(chunk));
      cb();
    },
  });
  const logger = pino({ level }, stream);
  return {
    logger,
    text: () => chunks.join(''),
    records: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export interface AgentStackOptions {
  appPort: number;
  mode?: 'http' | 'raw';
  /** enclave.toml [limits] keys. */
  limits?: Record<string, number>;
  /** enclave.toml [app] keys besides port. */
  app?: Record<string, unknown>;
  /** Other top-level enclave.toml keys (trusted_headers, ...). */
  extra?: Record<string, unknown>;
  decrypt?: DecryptStage;
  /** Also start a host bridge in front of the public port. */
  bridge?: boolean;
  /** Start egress (startAgentRuntime's `egress`). */
  egress?: AgentRuntimeOptions['egress'];
  stateDir?: string;
}

export interface AgentStack {
  readonly runtime: AgentRuntime;
  readonly port: number;
  readonly sim: NsmSimulator;
  readonly stateDir: string;
  readonly log: MemoryLog;
  readonly bridgeLog: MemoryLog;
  readonly trx: MemoryLogSink;
  readonly sessions: SessionSummary[];
  readonly bridge: Bridge | undefined;
  /** PCR0/1/2 as hex, for the SDK. */
  readonly pins: { PCR0: string; PCR1: string; PCR2: string };
  close(): Promise<void>;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export async function startAgentStack(opts: AgentStackOptions): Promise<AgentStack> {
  const stateDir = opts.stateDir ?? mkdtempSync(path.join(os.tmpdir(), 'ea-faults-'));
  const ownDir = opts.stateDir === undefined;
  const sim = await createNsmSimulator({ stateDir: path.join(stateDir, 'nsm-simulator'), identity: IDENTITY });
  const config = configFromObject({
    mode: opts.mode ?? 'http',
    app: { port: opts.appPort, startup_grace_ms: 0, ...opts.app },
    api: { port: 0 },
    ...(opts.limits === undefined ? {} : { limits: opts.limits }),
    ...opts.extra,
  });
  const log = memoryLog();
  const bridgeLog = memoryLog();
  const trx = createMemoryLogSink();
  const sessions: SessionSummary[] = [];
  const runtime = await startAgentRuntime({
    config,
    listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0 },
    nsm: sim,
    stateDir,
    logger: log.logger,
    trxSink: trx,
    ...(opts.decrypt === undefined ? {} : { decrypt: opts.decrypt }),
    ...(opts.egress === undefined ? {} : { egress: opts.egress }),
    onSessionClosed: (s) => sessions.push(s),
  });
  const port = runtime.publicPort!;
  const bridge = opts.bridge === true ? await startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port }, logger: bridgeLog.logger }) : undefined;
  return {
    runtime,
    port,
    sim,
    stateDir,
    log,
    bridgeLog,
    trx,
    sessions,
    bridge,
    pins: { PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) },
    async close() {
      await bridge?.close();
      await runtime.close();
      if (ownDir) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

// -------------------------------------------------------------------------------------------------------------
// Raw HTTP over Data / streams

export function httpRequest(method: string, target: string, body = '', headers: Record<string, string> = {}): Uint8Array {
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const len = body === '' && method === 'GET' ? '' : `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  return utf8.encode(`${method} ${target} HTTP/1.1\r\nHost: app\r\n${extra}${len}Connection: close\r\n\r\n${body}`);
}

/** The status code of a raw HTTP/1.1 response. */
export function statusOf(response: Uint8Array | string): number {
  const text = typeof response === 'string' ? response : utf8.decode(response.subarray(0, 64));
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(text.slice(0, 40))}`);
  return Number(m[1]);
}
