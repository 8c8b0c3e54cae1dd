import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import WebSocket from 'ws';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { MemoryLogSink } from '../../src/http/log-sink.ts';
import { ResponseReader, dataRequest, fakeContext, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
let wss: WebSocketServer | undefined;

afterEach(async () => {
  await fwd?.close();
  for (const c of wss?.clients ?? []) c.terminate();
  await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()));
  await app?.close();
  fwd = undefined;
  app = undefined;
  wss = undefined;
});

async function echoApp(): Promise<TestApp> {
  const a = await startApp((_req, res) => {
    res.statusCode = 426;
    res.end('upgrade required');
  });
  wss = new WebSocketServer({ noServer: true });
  a.server.on('upgrade', (req, socket, head) => {
    a.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    if (req.url === '/early-hints') socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n');
    if (req.url === '/refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nno');
      return;
    }
    if (req.url === '/refuse-chunked') {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n');
      return;
    }
    wss!.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  return a;
}

/** A `ws` client speaking over the forwarder's Duplex (as the session would carry a stream). */
function wsOver(duplex: Duplex, path = '/echo'): WebSocket {
  return new WebSocket(`ws://app.test${path}`, { createConnection: () => duplex as never });
}

describe('Upgrade (WebSocket) through HTTP mode', () => {
  it('echoes WebSocket messages end to end through a stream', async () => {
    app = await echoApp();
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink });
    const duplex = await fwd.connect(fakeContext({ kind: 'stream', client: { address: '203.0.113.9', port: 4000, family: 'IPv4' } }));
    const ws = wsOver(duplex);
    const upgradeHeaders = new Promise<Record<string, string | string[] | undefined>>((resolve) => ws.once('upgrade', (res) => resolve(res.headers)));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const messages: string[] = [];
    const got = new Promise<void>((resolve) =>
      ws.on('message', (m) => {
        messages.push(String(m));
        if (messages.length === 3) resolve();
      }),
    );
    ws.send('one');
    ws.send('two');
    ws.send(Buffer.alloc(100_000, 'x').toString());
    await got;
    expect(messages.slice(0, 2)).toEqual(['one', 'two']);
    expect(messages[2]).toHaveLength(100_000);
    const headers = await upgradeHeaders;
    expect(headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(app.seen[0]!.headers['x-forwarded-for']).toBe('203.0.113.9');
    expect(app.seen[0]!.headers['x-request-id']).toBe(headers['x-request-id']);
    ws.close();
    await new Promise<void>((r) => ws.once('close', () => r()));
    await waitFor(() => sink.records.length === 1);
    expect(sink.records[0]).toMatchObject({ type: 'WebSocket', status: 101, method: 'GET', path: '/echo', remote_ip: '203.0.113.9' });
    expect(sink.records[0]!.bytes_in as number).toBeGreaterThan(100_000);
    expect(sink.records[0]!.bytes_out as number).toBeGreaterThan(100_000);
  });

  it('relays a refused upgrade with Connection: close and never tunnels the bytes that follow', async () => {
    app = await echoApp();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write('GET /refuse HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    const res = await reader.next();
    expect(res.status).toBe(403);
    expect(res.headers.connection).toBe('close');
    expect(res.body.toString()).toBe('no');
    // Smuggling attempt: a second request on the refused connection must not reach the app.
    d.write('GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n');
    await reader.waitEnd();
    expect(app.seen.map((s) => s.url)).toEqual(['/refuse']);
  });

  it('keeps the framing of a refusal answered chunked (its bytes are relayed as they are)', async () => {
    app = await echoApp();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write('GET /refuse-chunked HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    const res = await reader.next();
    expect(res.status).toBe(403);
    expect(res.headers['transfer-encoding']).toBe('chunked');
    expect(res.body.toString()).toBe('nope!');
  });

  it('writes the bytes sent with the head only after the 101, and skips an interim 103 before it', async () => {
    app = await echoApp();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    // The head and a first (masked) text frame in one write: Node hands the frame over as the upgrade's `head`.
    const mask = Buffer.from([1, 2, 3, 4]);
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | 5]), mask, Buffer.from('hello').map((b, i) => b ^ mask[i % 4]!)]);
    d.write(Buffer.concat([Buffer.from(WS_HEAD('/early-hints')), frame]));
    const res = await reader.next();
    expect(res.status).toBe(101);
    expect(await reader.readBytes(7)).toEqual(Buffer.from([0x81, 5, ...Buffer.from('hello')]));
    d.destroy();
  });

  it('cuts a refused upgrade whose app keeps the connection open after its answer (after the timeout)', async () => {
    // Answers, then ignores the agent's half-close: the connection stays open from its side.
    const sockets: net.Socket[] = [];
    const held = net.createServer({ allowHalfOpen: true }, (s) => {
      sockets.push(s);
      s.on('error', () => {});
      s.once('data', () => s.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno'));
      s.resume();
    });
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    try {
      fwd = createHttpForwarder({ appPort: (held.address() as AddressInfo).port, logger: silentLogger, logSink: createMemoryLogSink(), upstreamTimeoutMs: 300 });
      const d = await fwd.connect(fakeContext({ kind: 'stream' }));
      const reader = new ResponseReader(d);
      d.write(WS_HEAD('/ws'));
      const res = await reader.next();
      expect(res.status).toBe(403);
      expect(res.body.toString()).toBe('no');
      await reader.waitEnd();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => held.close(() => r()));
    }
  });

  it('answers 502 to an app upgrade answer whose header lines carry a bare LF, a NUL or a control (no response splitting)', async () => {
    // What the app writes on an upgrade is relayed as a raw head: a bare LF inside a "value" would reach the
    // client as a header line of its own (a client reads LF as a line end), a NUL or control as is.
    const heads = [
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-A: a\nSet-Cookie: injected=1\r\n\r\n',
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-A: a\x00b\r\n\r\n',
      'HTTP/1.1 101 Switching\x01Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      'HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nX-A: a\rSet-Cookie: injected=1\r\n\r\nno',
    ];
    for (const head of heads) {
      const sockets: net.Socket[] = [];
      const raw = net.createServer((s) => {
        sockets.push(s);
        s.on('error', () => {});
        s.once('data', () => s.write(head));
      });
      await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
      try {
        fwd = createHttpForwarder({ appPort: (raw.address() as AddressInfo).port, logger: silentLogger, logSink: createMemoryLogSink() });
        const res = await dataRequest(fwd, WS_HEAD('/ws'), fakeContext({ kind: 'stream' }));
        expect(res.status).toBe(502);
        expect(JSON.parse(res.body.toString())).toMatchObject({ error: 'HTTP_APP_BAD_RESPONSE' });
        expect(res.rawHeaders.map((h) => h.toLowerCase())).not.toContain('set-cookie');
      } finally {
        await fwd?.close();
        fwd = undefined;
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => raw.close(() => r()));
      }
    }
  });

  it('refuses an upgrade request that declares a body (400), without contacting the app', async () => {
    app = await echoApp();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const res = await dataRequest(fwd, WS_HEAD('/echo', 'Content-Length: 5\r\n') + 'helloPOST /admin HTTP/1.1\r\nHost: a\r\n\r\n', fakeContext({ kind: 'stream' }));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body.toString())).toMatchObject({ error: 'HTTP_BAD_REQUEST' });
    expect(app.connections).toBe(0);
  });

  it('answers 502 JSON to an upgrade when the app is down', async () => {
    app = await echoApp();
    const port = app.port;
    await app.close();
    app = undefined;
    fwd = createHttpForwarder({ appPort: port, logger: silentLogger, logSink: createMemoryLogSink() });
    const res = await dataRequest(
      fwd,
      'GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      fakeContext({ kind: 'stream' }),
    );
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString())).toMatchObject({ error: 'HTTP_APP_UNREACHABLE' });
  });

  it('answers 504 to an upgrade the app never answers', async () => {
    const a = await startApp(() => {});
    app = a;
    const held: Duplex[] = [];
    a.server.on('upgrade', (_req, socket: Duplex) => {
      held.push(socket); // never answers
    });
    fwd = createHttpForwarder({ appPort: a.port, logger: silentLogger, logSink: createMemoryLogSink(), upstreamTimeoutMs: 200 });
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    d.write('GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    const res = await reader.next();
    expect(res.status).toBe(504);
    await reader.waitEnd();
    for (const s of held) s.destroy();
  });
});

function WS_HEAD(path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

export type { MemoryLogSink };
