// Lingering close on TLS ingress connections (src/transport/lingering-close.ts through the keep-alive fast path):
// a slow TLS client that sends more after `Connection: close` still gets its whole answer, and a drain still
// ends within its bounds while connections linger.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { AttestedIdentity } from '../../src/ingress/attested-identity.ts';
import { startTlsIngress, type TlsIngress } from '../../src/ingress/tls-ingress.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import { ResponseReader, silentLogger, startApp, type TestApp } from '../http/helpers.ts';

const BIG = Buffer.alloc(1024 * 1024, 0x6c);
/** Requests to /slow wait here until the test releases them. */
const held: (() => void)[] = [];
let app: TestApp;
let sim: NsmSimulator;
let stateDir: string;

beforeAll(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'ingress-linger-'));
  app = await startApp((req, res) => {
    req.resume();
    req.on('end', () => {
      const answer = req.url === '/big' ? BIG : Buffer.from(req.url ?? '');
      const send = (): void => void res.writeHead(200, { 'content-length': answer.length }).end(answer);
      if (req.url === '/slow') held.push(send);
      else send();
    });
  });
  sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'linger', config: '' } });
}, 30_000);

afterAll(async () => {
  for (const release of held.splice(0)) release();
  await app?.close();
  await rm(stateDir, { recursive: true, force: true });
});

interface Stack {
  fwd: HttpForwarder;
  ingress: TlsIngress;
  port: number;
  /** The agent's side (TLS) of each served connection. */
  served: Duplex[];
}

const stacks: Stack[] = [];
const clients: tls.TLSSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  for (const s of stacks.splice(0)) {
    await s.ingress.close();
    await s.fwd.close();
  }
});

async function startStack(opts: Partial<HttpModeOptions>): Promise<Stack> {
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, ...opts });
  const served: Duplex[] = [];
  const ingress = await startTlsIngress({
    listen: (o) => listenTcp({ host: '127.0.0.1', port: 0 }, o),
    identity: new AttestedIdentity({ nsm: sim }),
    attach: (sock, ctx) => {
      served.push(sock);
      return fwd.attach(sock, ctx);
    },
    logger: silentLogger,
  });
  const stack = { fwd, ingress, port: ingress.port!, served };
  stacks.push(stack);
  return stack;
}

/** `allowHalfOpen`: the client does not close its side when the agent closes (it never sends FIN). */
function connect(port: number, allowHalfOpen = false): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, allowHalfOpen } as tls.ConnectionOptions);
    clients.push(t);
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const closed = (d: Duplex): Promise<void> => new Promise((r) => (d.destroyed ? r() : d.once('close', () => r())));

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe('TLS ingress: lingering close', { timeout: 20_000 }, () => {
  it('a slow TLS client that sends more after `Connection: close` gets its whole answer', async () => {
    const s = await startStack({});
    const t = await connect(s.port);
    t.on('error', () => {});
    const reader = new ResponseReader(t);
    t.pause();
    t.write('GET /big HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    await until(() => s.served[0]?.writableFinished === true, 'the answer to be handed to the kernel');
    t.write('GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await sleep(50);
    t.resume();
    const res = await reader.next();
    expect(res.status).toBe(200);
    expect(res.body.equals(BIG)).toBe(true);
    await reader.waitEnd();
    await closed(s.served[0]!);
    // Its slot: freed as the connection's last part closes (an in-process relay side may close a tick later).
    await until(() => s.fwd.connectionCount === 0, 'its slot freed');
  });

  it('drain ends once a connection answered during it has lingered (a client that never closes)', async () => {
    const s = await startStack({ lingerTimeoutMs: 200, lingerTimeMs: 60_000 });
    const t = await connect(s.port, true);
    t.on('error', () => {});
    const reader = new ResponseReader(t);
    t.write('GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await until(() => held.length === 1, 'the request at the app');
    // Far longer than the test may run: the linger timeout ends the connection, not the drain timeout.
    const drained = s.ingress.drain(60_000);
    held.shift()!();
    const res = await reader.next();
    expect(res.headers.connection).toBe('close');
    expect(res.body.toString()).toBe('/slow');
    await reader.waitEnd();
    await drained;
    expect(s.served[0]!.destroyed).toBe(true);
  });

  it('drain ends at its timeout when a connection would linger longer; the connection is cut', async () => {
    const s = await startStack({ lingerTimeoutMs: 60_000, lingerTimeMs: 60_000 });
    const t = await connect(s.port, true);
    t.on('error', () => {});
    const reader = new ResponseReader(t);
    t.write('GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n');
    expect((await reader.next()).body.toString()).toBe('/one');
    await s.ingress.drain(300);
    await closed(s.served[0]!);
    // Its slot: freed as the connection's last part closes (an in-process relay side may close a tick later).
    await until(() => s.fwd.connectionCount === 0, 'its slot freed');
    await reader.waitEnd();
  });
});
