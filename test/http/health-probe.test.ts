// The app health probe (stages/health.ts) over the lean client: what a probe sends, that it reuses its one
// connection, and the coded errors a slow or unwritable probe ends with.
import http from 'node:http';
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AppHealthMonitor } from '../../src/http/stages/health.ts';

let server: http.Server | undefined;
let monitor: AppHealthMonitor | undefined;

afterEach(async () => {
  await monitor?.close();
  monitor = undefined;
  server?.closeAllConnections();
  await new Promise((r) => (server === undefined ? r(undefined) : server.close(r)));
  server = undefined;
});

async function listen(handler: http.RequestListener): Promise<{ port: number; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>();
  server = http.createServer(handler);
  server.on('connection', (s: net.Socket) => sockets.add(s));
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, sockets };
}

describe('app health probe', () => {
  it('GETs the path with the app origin as Host, reads the whole body, and reuses its connection', async () => {
    const seen: { method?: string; url?: string; host?: string }[] = [];
    const { port, sockets } = await listen((req, res) => {
      seen.push({ method: req.method, url: req.url, host: req.headers.host });
      res.end('x'.repeat(100_000));
    });
    monitor = new AppHealthMonitor({ host: '127.0.0.1', port, path: '/healthz?deep=1' });
    expect(await monitor.check()).toMatchObject({ status: 'up', http_status: 200, probe: 'http GET /healthz?deep=1' });
    expect(await monitor.check()).toMatchObject({ status: 'up', http_status: 200 });
    expect(seen).toEqual([
      { method: 'GET', url: '/healthz?deep=1', host: `127.0.0.1:${port}` },
      { method: 'GET', url: '/healthz?deep=1', host: `127.0.0.1:${port}` },
    ]);
    expect(sockets.size).toBe(1);
  });

  it('is down with APP_PROBE_TIMEOUT when the app sends no head in time', async () => {
    const { port } = await listen(() => {});
    monitor = new AppHealthMonitor({ host: '127.0.0.1', port, path: '/healthz', timeoutMs: 100 });
    expect(await monitor.check()).toMatchObject({ status: 'down', error: 'APP_PROBE_TIMEOUT' });
  });

  it('is down with APP_PROBE_TIMEOUT when the body trickles in past the probe timeout', async () => {
    const { port } = await listen((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const tick = setInterval(() => res.write('.'), 20);
      res.on('close', () => clearInterval(tick));
    });
    monitor = new AppHealthMonitor({ host: '127.0.0.1', port, path: '/healthz', timeoutMs: 200 });
    expect(await monitor.check()).toMatchObject({ status: 'down', error: 'APP_PROBE_TIMEOUT' });
  });

  it('is down with HTTP_BAD_REQUEST for a path that cannot be sent, and the app sees nothing', async () => {
    let requests = 0;
    const { port } = await listen((_req, res) => {
      requests++;
      res.end();
    });
    monitor = new AppHealthMonitor({ host: '127.0.0.1', port, path: '/health z' });
    expect(await monitor.check()).toMatchObject({ status: 'down', error: 'HTTP_BAD_REQUEST' });
    expect(requests).toBe(0);
  });
});
