// Shared set-up for the TLS-ingress tests: a real app (Python's http.server, test/http/fixtures), the NSM
// simulator on a movable clock, the HTTP forwarder with an in-memory transaction log, and the TLS ingress
// on 127.0.0.1:0. Everything is torn down by stop(), even after a failed test.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink, type MemoryLogSink } from '../../src/http/log-sink.ts';
import { AttestedIdentity, type AttestedIdentityOptions } from '../../src/ingress/attested-identity.ts';
import { startTlsIngress, type TlsIngress, type TlsIngressOptions } from '../../src/ingress/tls-ingress.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import { silentLogger } from '../http/helpers.ts';

const APP = fileURLToPath(new URL('../http/fixtures/keepalive_app.py', import.meta.url));
export const VERIFIER = fileURLToPath(new URL('./verify_attested_cert.py', import.meta.url));

export interface AppRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

export interface PythonApp {
  port: number;
  seen: AppRequest[];
  stop(): Promise<void>;
}

export async function startPythonApp(): Promise<PythonApp> {
  const seen: AppRequest[] = [];
  const child: ChildProcess = spawn('/usr/bin/python3', [APP], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the python app exited (${String(code)}) before listening`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('LISTENING ')) resolve(Number(line.slice('LISTENING '.length)));
      else seen.push(JSON.parse(line) as AppRequest);
    });
  });
  return {
    port,
    seen,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

export interface IngressStack {
  app: PythonApp;
  sim: NsmSimulator;
  fwd: HttpForwarder;
  sink: MemoryLogSink;
  identity: AttestedIdentity;
  ingress: TlsIngress;
  port: number;
  /** Moves the clock the simulator and the identity share. */
  advance(ms: number): void;
  stop(): Promise<void>;
}

export async function startIngressStack(
  opts: { identity?: Partial<AttestedIdentityOptions>; ingress?: Partial<TlsIngressOptions>; forwarder?: Partial<HttpModeOptions> } = {},
): Promise<IngressStack> {
  let offset = 0;
  const now = (): number => Date.now() + offset;
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'ingress-nsm-'));
  const parts: Partial<IngressStack> = {};
  const stop = async (): Promise<void> => {
    await parts.ingress?.close();
    await parts.fwd?.close();
    await parts.app?.stop();
    await rm(stateDir, { recursive: true, force: true });
  };
  try {
    parts.app = await startPythonApp();
    parts.sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'ingress', config: '' }, now });
    parts.sink = createMemoryLogSink();
    parts.fwd = createHttpForwarder({ appPort: parts.app.port, logger: silentLogger, logSink: parts.sink, ...opts.forwarder });
    parts.identity = new AttestedIdentity({ nsm: parts.sim, now, ...opts.identity });
    const fwd = parts.fwd;
    parts.ingress = await startTlsIngress({
      listen: (o) => listenTcp({ host: '127.0.0.1', port: 0 }, o),
      identity: parts.identity,
      attach: (s, c) => fwd.attach(s, c),
      logger: silentLogger,
      ...opts.ingress,
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { ...(parts as IngressStack), port: parts.ingress.port!, advance: (ms) => void (offset += ms), stop };
}

export function run(cmd: string, args: string[], timeoutMs = 20_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The independent Python verifier (verify_attested_cert.py): its JSON line. */
export async function verifyWithPython(port: number, servername: string, rootPem: string, extra: { nonce?: string; path?: string; apiKey?: string } = {}): Promise<Record<string, unknown>> {
  const args = [VERIFIER, String(port), servername, rootPem, extra.nonce ?? '-', extra.path ?? '/'];
  if (extra.apiKey !== undefined) args.push(extra.apiKey);
  const r = await run('/usr/bin/python3', args);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { error: `verifier printed no JSON (exit ${r.code}): ${r.stderr.slice(-500)}` };
  }
}

/** 24 random bytes whose standard base64 has no '+' or '/' (an LDH label), as TLS-INGRESS.md R4 advises. */
export function sniNonce(): string {
  for (;;) {
    const b = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString('base64');
    if (!/[+/]/.test(b)) return b;
  }
}

/**
 * A TLS connection to the ingress on 127.0.0.1:`port` from `source` (port `sourcePort`), as the bridge's PROXY v2
 * header says; rejects when the agent closes it before the handshake ends (a per-client refusal).
 */
export async function tlsFromClient(port: number, source: string, sourcePort: number): Promise<tls.TLSSocket> {
  const raw = net.connect(port, '127.0.0.1');
  await new Promise((r) => raw.once('connect', r));
  raw.write(encodeProxyV2({ source: { address: source, port: sourcePort }, destination: { address: '10.0.0.1', port: 443 } }));
  return new Promise<tls.TLSSocket>((resolve, reject) => {
    const c = tls.connect({ socket: raw, servername: 'localhost', rejectUnauthorized: false });
    c.once('secureConnect', () => resolve(c));
    c.once('error', reject);
    c.once('close', () => reject(new Error('closed before the handshake')));
  });
}

/** Writes `bytes` (a string as latin1) on one TLS connection to the ingress and ends it; resolves with all the agent wrote, as latin1, once it closes. */
export function tlsExchange(port: number, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false }, () => t.end(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes));
    let buf = '';
    t.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    t.once('error', reject);
    t.once('close', () => resolve(buf));
  });
}

/**
 * Sends a request `head` that carries `Expect: 100-continue` on one TLS connection and waits, body unsent, for the
 * agent's first answer; sends `body` (then ends) only after a 100 Continue. Resolves with everything the agent wrote,
 * as latin1, once it closes the connection.
 */
export function tlsContinueExchange(port: number, head: string, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false }, () => t.write(head, 'latin1'));
    let buf = '';
    t.on('data', (d: Buffer) => {
      const first = buf === '';
      buf += d.toString('latin1');
      if (first && buf.startsWith('HTTP/1.1 100 ')) t.end(body, 'latin1'); // invited: the body, then our end
    });
    t.once('error', reject);
    t.once('close', () => resolve(buf));
  });
}
