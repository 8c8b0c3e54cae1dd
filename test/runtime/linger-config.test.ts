// [limits] linger_timeout_ms / linger_time_ms (src/transport/lingering-close.ts) reach every lingering close the
// runtime makes: a Noise session's graceful close, a TLS ingress connection closed by the keep-alive fast path,
// and one closed after the http.Server fallback served it. closeLingering is wrapped to see the bounds each call
// gets (failed before the fix: the keys were refused as unknown, and each path used the 5 s / 30 s defaults).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import type * as LingeringClose from '../../src/transport/lingering-close.ts';
import type { LingerLimits } from '../../src/transport/lingering-close.ts';
import { startAgentStack, type AgentStack } from '../faults/stack.ts';
import { connectClient } from '../responder/helpers.ts';

const seen = vi.hoisted(() => [] as LingerLimits[]);
vi.mock('../../src/transport/lingering-close.ts', async (importOriginal) => {
  const real = await importOriginal<typeof LingeringClose>();
  return {
    ...real,
    closeLingering: (socket: Parameters<typeof real.closeLingering>[0], limits: LingerLimits): void => {
      seen.push(limits);
      real.closeLingering(socket, limits);
    },
  };
});

const CONFIGURED = { lingerTimeoutMs: 1234, lingerTimeMs: 5678 };
let app: http.Server;
let stack: AgentStack;

beforeAll(async () => {
  app = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  // One thread: the wrapped module is this thread's (session threads load their own).
  stack = await startAgentStack({
    appPort: (app.address() as AddressInfo).port,
    limits: { linger_timeout_ms: 1234, linger_time_ms: 5678, workers: 1 },
    extra: { tls_termination: true },
  });
}, 30_000);

afterAll(async () => {
  await stack?.close();
  app.closeAllConnections();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

/** Sends `request` over TLS ingress and resolves with what came back once the agent closed the connection. */
function overTls(request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port: stack.runtime.tlsPort!, servername: 'localhost', rejectUnauthorized: false }, () => t.write(request));
    let got = '';
    t.on('data', (c: Buffer) => (got += c.toString('latin1')));
    t.on('end', () => {
      t.destroy();
      resolve(got);
    });
    t.on('error', reject);
  });
}

describe('[limits] linger_timeout_ms and linger_time_ms', () => {
  it('default to 5 s and 30 s; out of range, or a timeout past the total, is refused naming the key', () => {
    const l = configFromObject({}).limits;
    expect([l.linger_timeout_ms, l.linger_time_ms]).toEqual([5_000, 30_000]);
    expect(() => configFromObject({ limits: { linger_timeout_ms: 50 } })).toThrow(/limits\.linger_timeout_ms/);
    expect(() => configFromObject({ limits: { linger_time_ms: 3_600_001 } })).toThrow(/limits\.linger_time_ms/);
    expect(() => configFromObject({ limits: { linger_timeout_ms: 10_000, linger_time_ms: 5_000 } })).toThrow(/limits\.linger_timeout_ms: expected at most limits\.linger_time_ms \(5000\)/);
  });

  it('a Noise session closed after its final frame lingers within the configured bounds', async () => {
    const before = seen.length;
    const c = await connectClient(stack.port);
    c.send({ type: 'GetControlNonce' }); // refused on the public channel with a final frame: a graceful close
    await vi.waitFor(() => expect(seen.length).toBeGreaterThan(before), { timeout: 5_000, interval: 10 });
    expect(seen.slice(before)).toEqual([expect.objectContaining(CONFIGURED)]);
    c.close();
  });

  it('a TLS ingress connection closed by the fast path lingers within the configured bounds', async () => {
    const before = seen.length;
    expect(await overTls('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 200/);
    await vi.waitFor(() => expect(seen.length).toBeGreaterThan(before), { timeout: 5_000, interval: 10 });
    expect(seen.slice(before)).toEqual([expect.objectContaining(CONFIGURED)]);
  });

  it('a TLS ingress connection the http.Server fallback served (HTTP/1.0) lingers within the configured bounds', async () => {
    const before = seen.length;
    expect(await overTls('GET / HTTP/1.0\r\nHost: localhost\r\n\r\n')).toMatch(/^HTTP\/1\.1 200/);
    await vi.waitFor(() => expect(seen.length).toBeGreaterThan(before), { timeout: 5_000, interval: 10 });
    expect(seen.slice(before)).toEqual([expect.objectContaining(CONFIGURED)]);
  });
});
