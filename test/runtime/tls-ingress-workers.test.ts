// [limits] workers ≥ 2 with tls_termination = true: TLS ingress connections run on the session worker threads
// (the main thread keeps the listener and the attested identity and hands each connection over). The same
// behaviour with 1 thread and with 2: HTTPS served (by both workers: the operational log's 'TLS connection
// closed' lines carry the worker's number, joined to the transaction log by session id), the certificate's
// document verifies (an independent Python verifier) with user_data = the served SPKI, fresh-nonce SNIs and
// /.well-known/attestation share one process-wide budget, rotation under a moved clock reaches the workers, the
// connection limit is exact across threads, drain answers what is in flight; with [ingress.acme] too.
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { createHash, X509Certificate } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { createMemoryLogSink, type MemoryLogSink } from '../../src/http/log-sink.ts';
import { resolveLimits } from '../../src/responder/limits.ts';
import { SharedAdmission } from '../../src/responder/shared-admission.ts';
import { startAgentRuntime, type AgentRuntime } from '../../src/runtime/agent.ts';
import { nativeAvailable } from '../../src/transport/native.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { memoryLog, waitUntil, type MemoryLog } from '../faults/stack.ts';
import { sniNonce, verifyWithPython } from '../ingress/helpers.ts';
import { sessionThreadBuiltins } from './thread-modules.ts';

const native = nativeAvailable();

let app: http.Server;
let appPort: number;
/** Requests the app holds until released (drain test). */
const held: (() => void)[] = [];

beforeAll(async () => {
  app = http.createServer((req, res) => {
    const answer = (): void => {
      res.setHeader('content-type', 'text/plain');
      res.end(`ok ${req.url}`);
    };
    if (req.url?.startsWith('/slow') === true) held.push(answer);
    else answer();
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as AddressInfo).port;
});

afterAll(async () => {
  app.closeAllConnections();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

interface Stack {
  runtime: AgentRuntime;
  port: number;
  sim: NsmSimulator;
  log: MemoryLog;
  trx: MemoryLogSink;
  /** Moves the clock the identity and the simulator share (frozen otherwise: the nonce budget refills nothing). */
  advance(ms: number): void;
  now(): number;
  close(): Promise<void>;
}

let stack: Stack | undefined;
const sockets: tls.TLSSocket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const h of held.splice(0)) h();
  await stack?.close();
  stack = undefined;
});

async function startStack(workers: number, limits: Record<string, number> = {}, extra: Record<string, unknown> = {}, more: Partial<Parameters<typeof startAgentRuntime>[0]> = {}): Promise<Stack> {
  const stateDir = mkdtempSync(path.join(os.tmpdir(), 'tls-workers-'));
  const base = Date.now();
  let offset = 0;
  const now = (): number => base + offset;
  const sim = await createNsmSimulator({ stateDir: path.join(stateDir, 'nsm'), identity: { agentVersion: 'test', app: 'tls-workers', config: '' }, now });
  const log = memoryLog();
  const trx = createMemoryLogSink();
  const config = configFromObject({ mode: 'http', tls_termination: true, app: { port: appPort, startup_grace_ms: 0 }, api: { enabled: false }, limits: { workers, ...limits }, ...extra });
  let runtime: AgentRuntime;
  try {
    runtime = await startAgentRuntime({
      config,
      listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0 },
      nsm: sim,
      stateDir,
      logger: log.logger,
      trxSink: trx,
      processMetrics: false,
      ingress: { now },
      ...more,
    });
  } catch (err) {
    rmSync(stateDir, { recursive: true, force: true });
    throw err;
  }
  return {
    runtime,
    port: runtime.tlsPort!,
    sim,
    log,
    trx,
    advance: (ms) => void (offset += ms),
    now,
    async close() {
      await runtime.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** The certificate each connection was served, read at the end of its handshake. */
const certs = new WeakMap<tls.TLSSocket, X509Certificate>();
const certOf = (t: tls.TLSSocket): X509Certificate => certs.get(t)!;

/** A TLS handshake (no certificate check: the tests read it), tracked for clean-up, its certificate noted. */
function handshake(o: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ ...o, rejectUnauthorized: false });
    sockets.push(t);
    t.once('secureConnect', () => {
      certs.set(t, t.getPeerX509Certificate()!);
      resolve(t);
    });
    t.once('error', reject);
    t.once('close', () => reject(new Error('closed during the handshake')));
  });
}

function connect(port: number, servername = 'localhost'): Promise<tls.TLSSocket> {
  return handshake({ host: '127.0.0.1', port, servername });
}

/** A TLS connection behind the bridge's PROXY v2 header naming `source` as the client. */
function connectVia(port: number, source: string, servername = 'localhost'): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const raw = net.connect(port, '127.0.0.1', () => {
      raw.write(encodeProxyV2({ source: { address: source, port: 40000 }, destination: { address: '10.0.0.1', port: 443 } }));
      handshake({ socket: raw, servername }).then(resolve, reject);
    });
    raw.once('error', reject);
  });
}

/** One keep-alive GET on an open TLS connection: status and body. */
function get(t: tls.TLSSocket, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/content-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? NaN);
      if (buf.length < end + 4 + len) return;
      t.off('data', onData);
      resolve({ status: Number(buf.slice(9, 12)), body: buf.slice(end + 4, end + 4 + len) });
    };
    t.on('data', onData);
    t.once('error', reject);
    t.write(`GET ${target} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  });
}

/** Whether a handshake is refused (the agent closes the connection before it completes). */
async function refused(port: number, servername = 'localhost'): Promise<boolean> {
  try {
    (await connect(port, servername)).destroy();
    return false;
  } catch {
    return true;
  }
}

/** This process's OS threads (worker threads are among them). */
const threads = (): number => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);

const spki = (x: X509Certificate): Buffer => Buffer.from(x.publicKey.export({ type: 'spki', format: 'der' }));

function documentOf(x: X509Certificate) {
  const label = x.subjectAltName!.split(', ').map((n) => n.replace(/^DNS:/, '').split('.')[0]!).sort((a, b) => b.length - a.length)[0]!;
  return parseAttestationDocument(new Uint8Array(Buffer.from(label, 'hex'))).document;
}

/**
 * The thread that served each request path (once its connection closed): the transaction record gives the path's
 * session id, the operational log's 'TLS connection closed' line for that session the worker (undefined: main).
 */
async function servedBy(s: Stack, paths: string[]): Promise<Map<string, number | undefined>> {
  const sessionOf = (p: string): string | undefined => s.trx.records.find((r) => r.path === p)?.session_id as string | undefined;
  const closedLine = (session: string | undefined) => s.log.records().find((r) => r.msg === 'TLS connection closed' && r.session === session);
  await waitUntil(() => paths.every((p) => closedLine(sessionOf(p)) !== undefined), 10_000, 'a closed line for every connection');
  return new Map(paths.map((p) => [p, closedLine(sessionOf(p))!.worker as number | undefined]));
}

/** The session threads started so far, in order (the main thread logs each one's start). */
function startedThreads(s: Stack): unknown[] {
  return s.log.records().filter((r) => r.msg === 'session thread started').map((r) => r.worker);
}

/**
 * Two connections, left open, after which (with 2 workers) both threads have started: they start on demand, the
 * second when a connection arrives while the first thread holds one. Both are on thread 1 (the second went there
 * while thread 2 started), so the next ones go to thread 2 first.
 */
async function onBothThreads(s: Stack, workers: number, open: () => Promise<tls.TLSSocket> = () => connect(s.port)): Promise<tls.TLSSocket[]> {
  const two = [await open(), await open()];
  if (workers > 1) await waitUntil(() => startedThreads(s).length === 2, 15_000, 'the second session thread');
  return two;
}

describe.each(native ? [1, 2] : [1])('TLS ingress with [limits] workers = %i', (workers) => {

  it('serves HTTPS on every worker; the document verifies independently and binds the served key', async () => {
    stack = await startStack(workers);
    const s = stack;
    // No session thread at boot: the first connection starts thread 1 and waits for it; the identity reaches each
    // thread as it starts (thread 2 serves connections below too).
    expect(startedThreads(s)).toEqual([]);
    const conns = [...(await onBothThreads(s, workers)), ...(await Promise.all(Array.from({ length: 4 }, () => connect(s.port))))];
    expect(startedThreads(s)).toEqual(workers > 1 ? [1, 2] : []);
    const paths = conns.map((_, i) => `/hello-${i}`);
    const replies = await Promise.all(conns.map((c, i) => get(c, paths[i]!)));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(replies[3]!.body).toBe('ok /hello-3');
    // A second request on the same connection (keep-alive) on the same thread.
    expect((await get(conns[0]!, '/again')).status).toBe(200);
    const leaf = certOf(conns[0]!);
    expect(Buffer.from(documentOf(leaf).userData!).equals(spki(leaf))).toBe(true);
    for (const c of conns) c.end();
    const by = await servedBy(s, paths);
    expect(new Set(by.values())).toEqual(workers > 1 ? new Set([1, 2]) : new Set([undefined]));

    const out = await verifyWithPython(s.port, 'localhost', s.sim.rootPath, { path: '/via-python' });
    expect(out.error).toBeUndefined();
    // The verifier checked user_data == the leaf's SPKI; it is the key every thread serves.
    expect(out).toMatchObject({ ok: true, status: 200 });
    expect(out.spki_sha256).toBe(createHash('sha256').update(spki(leaf)).digest('hex'));
    // Every worker serves the one boot key: the same SPKI on every connection.
    expect(new Set(conns.map((c) => spki(certOf(c)).toString('hex'))).size).toBe(1);
    // A scrape counts every request, whichever thread served it.
    const text = await (await fetch(`http://127.0.0.1:${s.runtime.opsPort!}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('enclave_agent_requests_total{mode="http",status_class="2xx"}'));
    expect(Number(line?.split(' ').pop())).toBe(8);
    // The key crossed threads in-process only: nothing logged it.
    expect(s.log.text()).not.toContain('PRIVATE KEY');
  }, 60_000);

  it('fresh-nonce SNIs and /.well-known?nonce= share one process-wide budget (20 with a frozen clock)', async () => {
    stack = await startStack(workers);
    const s = stack;
    const nonces = Array.from({ length: 26 }, () => sniNonce());
    await onBothThreads(s, workers);
    // All at once, each connection held open, so that they spread over the workers.
    const attempts = await Promise.allSettled(nonces.map((n) => connect(s.port, `${n}.attest.localhost`)));
    const ok = attempts.flatMap((a, i) => (a.status === 'fulfilled' ? [[a.value, nonces[i]!] as const] : []));
    expect(ok).toHaveLength(20);
    for (const [c, n] of ok) {
      const leaf = certOf(c);
      const doc = documentOf(leaf);
      expect(Buffer.from(doc.nonce!).equals(Buffer.from(n, 'base64'))).toBe(true);
      expect(Buffer.from(doc.userData!).equals(spki(leaf))).toBe(true);
    }
    // The same SNI again is the cached certificate: no budget spent, served.
    const again = await connect(s.port, `${ok[0]![1]}.attest.localhost`);
    expect(certOf(again).fingerprint256).toBe(certOf(ok[0]![0]).fingerprint256);
    // /.well-known without a nonce works (the budget is for client nonces), with one it is spent: 429.
    const plain = await connect(s.port);
    const wk = await get(plain, '/.well-known/attestation');
    expect(wk.status).toBe(200);
    const wkDoc = parseAttestationDocument(new Uint8Array(Buffer.from((JSON.parse(wk.body) as { attestation_doc: string }).attestation_doc, 'base64'))).document;
    expect(Buffer.from(wkDoc.userData!).equals(spki(certOf(plain)))).toBe(true);
    expect((await get(plain, `/.well-known/attestation?nonce=${Buffer.from('fresh-nonce').toString('base64url')}`)).status).toBe(429);
    // A second's refill (the shared clock moved): one more fresh-nonce certificate, on whichever thread.
    s.advance(1_000 / 20);
    const more = await connect(s.port, `${sniNonce()}.attest.localhost`);
    expect(documentOf(certOf(more)).nonce).toBeDefined();
    if (workers > 1) {
      const paths = ok.map((_, i) => `/n-${i}`);
      await Promise.all(ok.map(([c], i) => get(c, paths[i]!)));
      for (const [c] of ok) c.end();
      expect(new Set((await servedBy(s, paths)).values())).toEqual(new Set([1, 2]));
    }
  }, 60_000);

  it('the PROXY v2 client reaches the request and the per-client nonce budget (10 per client), whichever thread serves', async () => {
    stack = await startStack(workers, {}, { accept_proxy_protocol: true });
    const s = stack;
    await onBothThreads(s, workers, () => connectVia(s.port, '192.0.2.60'));
    const one = await Promise.allSettled(Array.from({ length: 13 }, () => connectVia(s.port, '203.0.113.7', `${sniNonce()}.attest.localhost`)));
    expect(one.filter((a) => a.status === 'fulfilled')).toHaveLength(10);
    // Another client still has its own budget (and the process-wide one has 10 left).
    const other = await connectVia(s.port, '203.0.113.8', `${sniNonce()}.attest.localhost`);
    expect((await get(other, '/from-other')).status).toBe(200);
    const conns = await Promise.all(Array.from({ length: 4 }, () => connectVia(s.port, '198.51.100.4')));
    const paths = conns.map((_, i) => `/via-${i}`);
    await Promise.all(conns.map((c, i) => get(c, paths[i]!)));
    for (const c of conns) c.end();
    expect(new Set((await servedBy(s, paths)).values())).toEqual(workers > 1 ? new Set([1, 2]) : new Set([undefined]));
    for (const p of paths) expect(s.trx.records.find((r) => r.path === p)?.remote_ip).toBe('198.51.100.4');
  }, 60_000);

  it('rotation under a moved clock reaches every worker: new handshakes get the new certificate', async () => {
    stack = await startStack(workers);
    const s = stack;
    const before = [...(await onBothThreads(s, workers)), ...(await Promise.all(Array.from({ length: 2 }, () => connect(s.port))))];
    const first = certOf(before[0]!);
    for (const c of before) expect(certOf(c).fingerprint256).toBe(first.fingerprint256);
    const signerNotAfter = new Date(new X509Certificate(documentOf(first).certificate).validTo).getTime();
    for (const c of before) c.destroy();
    // 9 minutes before the NSM certificate's expiry: due.
    s.advance(signerNotAfter - 9 * 60_000 - s.now());
    const after = await Promise.all(Array.from({ length: 4 }, () => connect(s.port)));
    const paths = after.map((_, i) => `/rotated-${i}`);
    await Promise.all(after.map((c, i) => get(c, paths[i]!)));
    for (const c of after) {
      const x = certOf(c);
      expect(x.fingerprint256).not.toBe(first.fingerprint256);
      expect(new Date(new X509Certificate(documentOf(x).certificate).validTo).getTime()).toBeGreaterThan(signerNotAfter);
      // The same boot key, bound by the new document.
      expect(spki(x).equals(spki(first))).toBe(true);
      expect(Buffer.from(documentOf(x).userData!).equals(spki(x))).toBe(true);
    }
    expect(new Set(after.map((c) => certOf(c).fingerprint256)).size).toBe(1);
    for (const c of after) c.end();
    expect(new Set((await servedBy(s, paths)).values())).toEqual(workers > 1 ? new Set([1, 2]) : new Set([undefined]));
  }, 60_000);

  it('max connections (limits.max_sessions) holds across threads: one more is refused, a freed slot is taken again', async () => {
    stack = await startStack(workers, { max_sessions: 4 });
    const s = stack;
    const conns = [...(await onBothThreads(s, workers)), ...(await Promise.all(Array.from({ length: 2 }, () => connect(s.port))))];
    const paths = conns.map((_, i) => `/limit-${i}`);
    for (let i = 0; i < 4; i++) expect((await get(conns[i]!, paths[i]!)).status).toBe(200);
    expect(await refused(s.port)).toBe(true);
    expect(await refused(s.port)).toBe(true);
    conns[0]!.end();
    // The slot comes back when the worker sees the close: until then a new handshake is refused.
    let again: tls.TLSSocket | undefined;
    async function retry(): Promise<void> {
      while (again === undefined) {
        try {
          again = await connect(s.port);
        } catch {
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    void retry();
    await waitUntil(() => again !== undefined, 10_000, 'a freed slot');
    expect((await get(again!, '/limit-again')).status).toBe(200);
    expect(await refused(s.port)).toBe(true);
    for (const c of conns.slice(1)) c.end();
    if (workers > 1) expect(new Set((await servedBy(s, paths)).values())).toEqual(new Set([1, 2]));
  }, 60_000);

  it('drain answers the requests in flight on every worker, refuses new connections, then completes', async () => {
    const threadsBefore = threads();
    stack = await startStack(workers);
    const s = stack;
    const conns = [...(await onBothThreads(s, workers)), ...(await Promise.all(Array.from({ length: 2 }, () => connect(s.port))))];
    const paths = conns.map((_, i) => `/slow-${i}`);
    const replies = conns.map((c, i) => get(c, paths[i]!));
    await waitUntil(() => held.length === 4, 10_000, 'four requests at the app');
    const closedConns = conns.map((c) => new Promise<void>((r) => c.once('close', () => r())));
    const drained = s.runtime.drain(10_000);
    expect(await refused(s.port)).toBe(true);
    for (const h of held.splice(0)) h();
    expect((await Promise.all(replies)).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    await drained;
    await Promise.all(closedConns);
    expect(new Set((await servedBy(s, paths)).values())).toEqual(workers > 1 ? new Set([1, 2]) : new Set([undefined]));
    await s.close();
    stack = undefined;
    // Nothing listens any more.
    const gone = await new Promise<string>((resolve) => {
      const c = net.connect(s.port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), resolve('connected')));
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(gone).toBe('ECONNREFUSED');
    // No thread left behind: the session workers (and anything they started) are gone.
    await waitUntil(() => threads() <= threadsBefore, 10_000, `the thread count back to ${threadsBefore} (now ${threads()})`);
  }, 60_000);
});

describe.runIf(native)('TLS ingress with [limits] workers = 2: a thread loads its TLS ingress before it takes a connection', () => {
  it('the first TLS connection, arriving before any thread started, is served by the thread it started', async () => {
    stack = await startStack(2);
    const s = stack;
    expect(startedThreads(s)).toEqual([]);
    // The thread imports node:tls and the ingress only with TLS ingress on (session-worker.ts), and reports ready
    // after that: the connection that started it waits for it, and then its handshake is served.
    const first = await connect(s.port);
    expect(await get(first, '/first')).toEqual({ status: 200, body: 'ok /first' });
    expect(startedThreads(s)).toEqual([1]);
    first.end();
    expect((await servedBy(s, ['/first'])).get('/first')).toBe(1);
    const loaded = await sessionThreadBuiltins();
    expect(loaded.get(1)).toContain('tls');
  }, 60_000);
});

describe.runIf(native)('TLS ingress with [limits] workers = 2 and [ingress.acme]', () => {
  // Issuance through pebble, tls-alpn-01 answered by a worker, renewal and expiry: test/ingress/acme.test.ts.
  it('runs on the workers too, with the attested certificate while the CA does not answer', async () => {
    // A CA nobody answers for: the ACME client retries in the background; the attested certificate serves meanwhile.
    const caPort = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    stack = await startStack(
      2,
      {},
      {
        ingress: { acme: { domain: 'shop.acme.test', directory: `https://127.0.0.1:${caPort}/dir` } },
        egress: { enabled: true, destinations: [`127.0.0.1/32:${caPort}`] },
      },
      { egress: { dialer: () => Promise.reject(new Error('no host in this test')), proxyPort: 0 } },
    );
    const s = stack;
    const conns = [...(await onBothThreads(s, 2)), ...(await Promise.all(Array.from({ length: 2 }, () => connect(s.port))))];
    const paths = conns.map((_, i) => `/acme-${i}`);
    expect((await Promise.all(conns.map((c, i) => get(c, paths[i]!)))).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    for (const c of conns) {
      const v = documentOf(certOf(c));
      expect(Buffer.from(v.userData!).equals(spki(certOf(c)))).toBe(true);
      c.end();
    }
    expect(new Set((await servedBy(s, paths)).values())).toEqual(new Set([1, 2]));
    // SNI = the domain without an ACME certificate yet: the attested one.
    const domain = await connect(s.port, 'shop.acme.test');
    expect(documentOf(certOf(domain)).userData).toBeDefined();
  }, 60_000);
});

describe('SharedAdmission.tls', () => {
  it('takes a connection and a handshake slot together, within both maxima, seen alike from every thread', () => {
    const main = SharedAdmission.create({ limits: resolveLimits({}), workers: 2, maxConcurrentDecrypts: 1, tls: { maxConnections: 3, maxPendingHandshakes: 2 } });
    const worker = SharedAdmission.attach(main.init);
    expect(main.tls.tryOpen()).toBe(true);
    expect(main.tls.tryOpen()).toBe(true);
    // Two handshakes pending: a third connection is refused, and takes no connection slot either.
    expect(main.tls.tryOpen()).toBe(false);
    expect(worker.tls.connections).toBe(2);
    worker.tls.handshakeEnded();
    worker.tls.handshakeEnded();
    expect(main.tls.tryOpen()).toBe(true);
    // Three connections open, their handshakes done: a fourth is refused until one closes.
    worker.tls.handshakeEnded();
    expect(main.tls.tryOpen()).toBe(false);
    expect(main.tls.handshakes).toBe(0);
    worker.tls.closed();
    expect(main.tls.tryOpen()).toBe(true);
    main.tls.refused();
    worker.tls.refused();
    expect(main.tls.refusedCount).toBe(2);
    // Without TLS on the workers nothing is admitted.
    const none = SharedAdmission.create({ limits: resolveLimits({}), workers: 2, maxConcurrentDecrypts: 1 });
    expect(none.tls.tryOpen()).toBe(false);
  });
});
