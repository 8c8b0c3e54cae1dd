// [limits] linger_timeout_ms / linger_time_ms reach the two refusals that close lingering besides the paths in
// linger-config.test.ts: the local API's answer past [api] max_connections, and the explicit egress proxy's
// answers (here a 400). closeLingering is wrapped to see the bounds each call gets, by the port the refused
// connection came to. Before, the API's refusal lingered a fixed 2 s / 30 s and the egress proxy's a fixed 2 s
// timer (no closeLingering at all), whatever the keys said.
import net from 'node:net';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type * as LingeringClose from '../../src/transport/lingering-close.ts';
import type { LingerLimits } from '../../src/transport/lingering-close.ts';
import { startAgentStack, type AgentStack } from '../faults/stack.ts';

const seen = vi.hoisted(() => [] as { port: number | undefined; limits: LingerLimits }[]);
vi.mock('../../src/transport/lingering-close.ts', async (importOriginal) => {
  const real = await importOriginal<typeof LingeringClose>();
  return {
    ...real,
    closeLingering: (socket: Parameters<typeof real.closeLingering>[0], limits: LingerLimits): void => {
      seen.push({ port: (socket as net.Socket).localPort, limits });
      real.closeLingering(socket, limits);
    },
  };
});

const CONFIGURED: LingerLimits = { flushTimeoutMs: 1234, lingerTimeoutMs: 1234, lingerTimeMs: 5678 };
let app: http.Server;
let stack: AgentStack;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  app = http.createServer((_req, res) => res.end('{}'));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  stack = await startAgentStack({
    appPort: (app.address() as AddressInfo).port,
    limits: { linger_timeout_ms: 1234, linger_time_ms: 5678, workers: 1 },
    extra: { api: { port: 0, max_connections: 1 } },
    // The deny-all proxy of a disabled [egress]: nothing is dialled here.
    egress: { dialer: () => Promise.reject(new Error('no host in this test')), proxyPort: 0, always: true },
  });
}, 30_000);

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await stack?.close();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

function open(port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1' });
  sockets.push(s);
  s.on('error', () => {});
  return new Promise((resolve) => s.once('connect', () => resolve(s)));
}

/** Writes `request` on a new connection to `port` and resolves with what was read once the agent ended it. */
async function refused(port: number, request: string): Promise<string> {
  const s = await open(port);
  let got = '';
  s.on('data', (c: Buffer) => (got += c.toString('latin1')));
  const ended = new Promise<void>((resolve) => s.once('end', resolve));
  s.write(request);
  await ended;
  return got;
}

const limitsFor = (port: number): LingerLimits[] => seen.filter((s) => s.port === port).map((s) => s.limits);

describe('[limits] linger_timeout_ms and linger_time_ms, for refusals', () => {
  it("the local API's refusal past max_connections lingers within the configured bounds", async () => {
    const port = stack.runtime.apiPort!;
    await open(port); // holds the one connection
    const answer = await refused(port, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toContain('API_TOO_MANY_CONNECTIONS');
    expect(limitsFor(port)).toEqual([CONFIGURED]);
  });

  it("the egress proxy's refusal lingers within the configured bounds", async () => {
    const port = Number(new URL(stack.runtime.egress!.proxyUrl).port);
    const answer = await refused(port, 'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'); // origin-form: 400
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(limitsFor(port)).toEqual([CONFIGURED]);
  });
});
