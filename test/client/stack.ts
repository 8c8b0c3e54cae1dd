// The whole path on loopback, assembled from the real modules: a test app on 127.0.0.1:0 that counts what
// reaches it ⇐ the agent (startAgent + raw or HTTP forwarder, NSM simulator with a tmp stateDir) ⇐ the host
// bridge (WebSocket) ⇐ the SDK under test.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import pino from 'pino';
import { WebSocketServer } from 'ws';
import { createNsmSimulator, type NsmSimulator, type SimulatorIdentity } from '../../src/attestation/simulator.ts';
import type { PcrPins } from '../../src/attestation/verify.ts';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { startAgent, type Agent } from '../../src/responder/server.ts';
import type { SessionSummary } from '../../src/responder/session.ts';
import type { Limits } from '../../src/responder/limits.ts';

export const IDENTITY: SimulatorIdentity = { agentVersion: 'client-test', app: 'node test-app.js', config: 'mode = "test"' };

/** Deterministic bytes: byte i = (i * 31 + 7) & 0xff. */
export function patternBytes(n: number, offset = 0): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = ((offset + i) * 31 + 7) & 0xff;
  return out;
}

export function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Resolves once `done()` holds, or after `boundMs` (a bound on the wait, not a check). */
export function untilOr(done: () => boolean, boundMs: number): Promise<void> {
  return new Promise((resolve) => {
    const bound = setTimeout(finish, boundMs);
    const poll = setInterval(() => done() && finish(), 20);
    function finish(): void {
      clearTimeout(bound);
      clearInterval(poll);
      resolve();
    }
  });
}

export interface TestApp {
  readonly port: number;
  /** HTTP requests and upgrade requests that reached the app. */
  readonly requests: number;
  /** Raw header lists of the requests, in arrival order. */
  readonly seen: { method: string; url: string; rawHeaders: string[] }[];
  /** GET /big and /chunked responses and /upgrade-big streams whose last byte the app has written (handed to its socket). */
  readonly bigEnded: number;
  /** Lets every GET /gated waiting now send its second half. */
  openGate(): void;
  close(): Promise<void>;
}

/**
 * Routes: GET /hello → "hello"; POST|PUT /echo → the body back (same Content-Type); POST /json → {"got": body};
 * GET /big?n=N → N pattern bytes (Content-Length, written in 64 KiB pieces); GET /chunked?n=N → N pattern bytes
 * chunked; GET /gated?n=N → the first half of N pattern bytes (Content-Length), the rest after openGate();
 * GET /slow?ms=M → "slow" after M ms; GET /headers → the raw request headers as JSON; GET /empty → 204;
 * /ws → WebSocket echo (upgrade); /upgrade-big?n=N → 101 (Upgrade: x-bytes), then N pattern bytes and EOF.
 */
export async function startTestApp(): Promise<TestApp> {
  let requests = 0;
  let bigEnded = 0;
  const gated: (() => void)[] = [];
  const seen: TestApp['seen'] = [];
  const server = http.createServer((req, res) => {
    requests++;
    seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders.slice() });
    const url = new URL(req.url ?? '/', 'http://app');
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      switch (url.pathname) {
        case '/hello':
          res.setHeader('content-type', 'text/plain');
          res.end('hello');
          return;
        case '/echo':
          res.setHeader('content-type', req.headers['content-type'] ?? 'application/octet-stream');
          res.setHeader('x-body-length', String(body.length));
          res.end(body);
          return;
        case '/json': {
          let parsed: unknown;
          try {
            parsed = JSON.parse(body.toString('utf8'));
          } catch {
            res.statusCode = 400;
            res.end('not json');
            return;
          }
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify({ got: parsed, contentType: req.headers['content-type'] }));
          return;
        }
        case '/big':
        case '/chunked': {
          const n = Number(url.searchParams.get('n') ?? '0');
          if (url.pathname === '/big') res.setHeader('content-length', String(n));
          res.setHeader('content-type', 'application/octet-stream');
          writePattern(res, n, () => bigEnded++);
          return;
        }
        case '/gated': {
          const n = Number(url.searchParams.get('n') ?? '0');
          const half = Math.floor(n / 2);
          res.setHeader('content-length', String(n));
          res.setHeader('content-type', 'application/octet-stream');
          res.write(Buffer.from(patternBytes(half)));
          gated.push(() => res.end(Buffer.from(patternBytes(n - half, half))));
          return;
        }
        case '/slow':
          setTimeout(() => res.end('slow'), Number(url.searchParams.get('ms') ?? '100'));
          return;
        case '/headers':
          res.setHeader('content-type', 'application/json');
          res.end(JSON.stringify(req.rawHeaders));
          return;
        case '/empty':
          res.statusCode = 204;
          res.end();
          return;
        default:
          res.statusCode = 404;
          res.end('not found');
      }
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    requests++;
    seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders.slice() });
    const url = new URL(req.url ?? '/', 'http://app');
    if (url.pathname === '/upgrade-big') {
      socket.on('error', () => {}); // a client that gives up resets it mid-write
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-bytes\r\nConnection: Upgrade\r\n\r\n');
      writePattern(socket, Number(url.searchParams.get('n') ?? '0'), () => bigEnded++);
      return;
    }
    if (req.url === '/refused-with-reason') {
      // A refusal whose reason phrase carries app data: it must not reach the client's error message.
      socket.end('HTTP/1.1 403 card=4111111111111111\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    if (req.url !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get requests() {
      return requests;
    },
    get bigEnded() {
      return bigEnded;
    },
    seen,
    openGate() {
      for (const send of gated.splice(0)) send();
    },
    async close() {
      for (const c of wss.clients) c.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Writes N pattern bytes to `out` in 64 KiB pieces, minding its backpressure, then ends it; `ended` once written. */
function writePattern(out: Writable, n: number, ended: () => void): void {
  let off = 0;
  const pump = (): void => {
    while (off < n) {
      const piece = Buffer.from(patternBytes(Math.min(65536, n - off), off));
      off += piece.length;
      if (!out.write(piece)) {
        out.once('drain', pump);
        return;
      }
    }
    out.end(ended);
  };
  pump();
}

export interface StackOptions {
  /** 'raw' (bytes piped to the app) or 'http' (the agent's HTTP pipeline). Default 'http'. */
  mode?: 'raw' | 'http';
  /** Advertised features (default: the agent's default, ['bstr']; [] = a pure compat server). */
  features?: string[];
  limits?: Partial<Limits>;
  identity?: SimulatorIdentity;
}

export interface Stack {
  readonly app: TestApp;
  readonly sim: NsmSimulator;
  readonly bridge: Bridge;
  readonly agent: Agent;
  readonly url: string;
  /** PCR0/1/2 of the simulated enclave, as hex. */
  readonly pins: PcrPins;
  readonly sessions: SessionSummary[];
  /** Closes the agent (every session) and starts a new one on the same port. */
  restartAgent(opts?: { identity?: SimulatorIdentity }): Promise<void>;
  /** Stops the agent without starting it again. */
  stopAgent(): Promise<void>;
  close(): Promise<void>;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'client-stack-'));
  const app = await startTestApp();
  let sim = await createNsmSimulator({ stateDir, identity: opts.identity ?? IDENTITY });
  const sessions: SessionSummary[] = [];
  const mode = opts.mode ?? 'http';
  const silent = pino({ level: 'silent' });
  const begin = async (port: number): Promise<Agent> =>
    startAgent({
      nsm: sim,
      forwarder:
        mode === 'raw'
          ? createRawForwarder({ appPort: app.port, startupGraceMs: 0 })
          : createHttpForwarder({ appPort: app.port, trxLogging: false, logger: silent }),
      listen: { host: '127.0.0.1', port },
      ...(opts.features === undefined ? {} : { features: opts.features }),
      ...(opts.limits === undefined ? {} : { limits: opts.limits }),
      onSessionClosed: (s) => sessions.push(s),
    });
  let agent = await begin(0);
  const agentPort = agent.public.listener.port!;
  const bridge = await startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: agentPort }, logger: silent });
  let running = true;
  const pinsOf = (s: NsmSimulator): PcrPins => ({ PCR0: hex(s.pcrs[0]!), PCR1: hex(s.pcrs[1]!), PCR2: hex(s.pcrs[2]!) });
  return {
    app,
    get sim() {
      return sim;
    },
    bridge,
    get agent() {
      return agent;
    },
    url: bridge.url,
    pins: pinsOf(sim),
    sessions,
    async restartAgent(o = {}) {
      if (running) await agent.close();
      if (o.identity !== undefined) sim = await createNsmSimulator({ stateDir, identity: o.identity });
      agent = await begin(agentPort);
      running = true;
    },
    async stopAgent() {
      if (running) await agent.close();
      running = false;
    },
    async close() {
      await bridge.close();
      if (running) await agent.close();
      await app.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}
