// The built-in demo app of `enclave-agent start`: greeting, exact echo, health, 404, 413.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_HEADER, isDemoApp, startDemoApp, type DemoApp, type EchoReply } from '../../src/runtime/demo-app.ts';

let app: DemoApp;
beforeAll(async () => {
  app = await startDemoApp({ port: 0, name: 'demo-test', maxBodyBytes: 1024 });
});
afterAll(() => app.close());

/** Sends raw bytes, returns the raw response (the server closes: Connection: close). */
function raw(request: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: app.port });
    let out = '';
    s.on('data', (c) => (out += c.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.end(request);
  });
}

function body(response: string): unknown {
  return JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
}

describe('demo app', () => {
  it('GET / answers a JSON greeting naming the app, marked as the demo', async () => {
    const res = await fetch(`http://127.0.0.1:${app.port}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get(DEMO_HEADER)).toBe('1');
    expect(await res.json()).toMatchObject({ message: expect.stringContaining('demo-test') });
  });

  it('/echo describes exactly what arrived: method, path with query, headers in order with repeats, body', async () => {
    const res = await raw('PUT /echo?q=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello');
    const echo = body(res) as EchoReply;
    expect(echo).toEqual({ method: 'PUT', path: '/echo?q=1', headers: { host: 'h', 'x-a': ['1', '2'], 'content-length': '5', connection: 'close' }, body: 'hello' });
  });

  it('/echo returns bytes that are not UTF-8 as base64 and body null', async () => {
    const head = Buffer.from('POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\n');
    const echo = body(await raw(Buffer.concat([head, Buffer.from([0xff, 0x00, 0xfe])]))) as EchoReply;
    expect(echo.body).toBeNull();
    expect(echo.bodyBase64).toBe(Buffer.from([0xff, 0x00, 0xfe]).toString('base64'));
  });

  it('/echo answers 413 above the body cap', async () => {
    const res = await fetch(`http://127.0.0.1:${app.port}/echo`, { method: 'POST', body: 'x'.repeat(2048) });
    expect(res.status).toBe(413);
  });

  it('GET /health is 200 and unknown routes are 404 with the route list', async () => {
    expect((await fetch(`http://127.0.0.1:${app.port}/health`)).status).toBe(200);
    const res = await fetch(`http://127.0.0.1:${app.port}/nope`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ routes: ['GET /', 'POST /echo', 'GET /fetch?url=', 'GET /health'] });
  });

  it('isDemoApp tells the demo from another server and from a closed port', async () => {
    expect(await isDemoApp(app.port)).toBe(true);
    const other = net.createServer((s) => s.resume().end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const port = (other.address() as net.AddressInfo).port;
    expect(await isDemoApp(port)).toBe(false);
    await new Promise<void>((r) => other.close(() => r()));
    expect(await isDemoApp(port)).toBe(false);
  });

  it('close() releases the port even with a keep-alive connection open', async () => {
    const d = await startDemoApp({ port: 0 });
    const s = net.connect({ host: '127.0.0.1', port: d.port });
    await new Promise((r) => s.once('connect', r));
    s.write('GET /health HTTP/1.1\r\nHost: h\r\n\r\n');
    await new Promise((r) => s.once('data', r));
    await d.close();
    const again = await startDemoApp({ port: d.port });
    expect(again.port).toBe(d.port);
    await again.close();
    s.destroy();
  });
});
