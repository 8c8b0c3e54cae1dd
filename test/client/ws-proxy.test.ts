// The bridge WebSocket goes through an undici dispatcher the user chose — connect()'s `dispatcher` option, else
// undici's global one (setGlobalDispatcher(new ProxyAgent(...))) — and keeps the 1 MiB message bound either way.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { getGlobalDispatcher, ProxyAgent, setGlobalDispatcher, WebSocket as UndiciWebSocket } from 'undici';
import { WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, connect } from '../../src/client/node.ts';
import { startStack, type Stack } from './stack.ts';

let stack: Stack;
let proxy: http.Server;
let proxyUrl: string;
/** host:port of every CONNECT tunnel the proxy opened. */
const tunnels: string[] = [];
let big: WebSocketServer;
let bigUrl: string;
const bigCloses: number[] = [];

beforeAll(async () => {
  stack = await startStack();
  proxy = http.createServer((_q, s) => s.end());
  proxy.on('connect', (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => {
    tunnels.push(req.url ?? '');
    const [h, p] = (req.url ?? '').split(':');
    const up = net.connect(Number(p), h!, () => {
      sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  // A hostile bridge: 4 MiB in one message after the handshake's first message.
  big = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => big.once('listening', () => r()));
  bigUrl = `ws://127.0.0.1:${(big.address() as AddressInfo).port}/`;
  big.on('connection', (ws) => {
    ws.once('message', () => ws.send(Buffer.alloc(4 << 20, 0x41)));
    ws.on('close', (code) => bigCloses.push(code));
    ws.on('error', () => {});
  });
});

afterAll(async () => {
  for (const c of big?.clients ?? []) c.terminate();
  await new Promise((r) => big?.close(r));
  proxy?.closeAllConnections();
  await new Promise((r) => proxy?.close(r));
  await stack?.close();
});

const bridgePort = (url: string): string => new URL(url).port;

describe('bridge WebSocket through a proxy', () => {
  it('connect({ dispatcher: ProxyAgent }) reaches the bridge through the proxy', async () => {
    const before = tunnels.length;
    const agent = new ProxyAgent(proxyUrl);
    const client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], dispatcher: agent });
    try {
      expect((await client.get('/hello')).status).toBeLessThan(600);
      expect(tunnels.slice(before).some((t) => t.endsWith(`:${bridgePort(stack.url)}`))).toBe(true);
    } finally {
      await client.close();
      await agent.close();
    }
  });

  it('without the option, a proxy installed with setGlobalDispatcher is used', async () => {
    const before = tunnels.length;
    const saved = getGlobalDispatcher();
    const agent = new ProxyAgent(proxyUrl);
    setGlobalDispatcher(agent);
    try {
      const client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
      await client.close();
      expect(tunnels.slice(before).some((t) => t.endsWith(`:${bridgePort(stack.url)}`))).toBe(true);
    } finally {
      setGlobalDispatcher(saved);
      await agent.close();
    }
  });

  it('keeps the 1 MiB bound through the proxy (a ProxyAgent alone would buffer 128 MiB)', async () => {
    const agent = new ProxyAgent(proxyUrl);
    bigCloses.length = 0;
    try {
      // Refused unread: a dropped connection (the 1009 close frame may not survive the tunnel's teardown).
      const err = await connect(bigUrl, { pcrs: stack.pins, dispatcher: agent, connectTimeoutMs: 10_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ClientError);
      expect((err as ClientError).code).toBe('CLIENT_CONNECT_FAILED');
      await expect.poll(() => bigCloses.length).toBe(1);
      // The control: undici's WebSocket on the ProxyAgent alone reads all 4 MiB and fails on its content.
      const Unbounded = class extends UndiciWebSocket {
        constructor(url: string) {
          super(url, { dispatcher: agent });
        }
      };
      const control = await connect(bigUrl, { pcrs: stack.pins, WebSocket: Unbounded as never, connectTimeoutMs: 10_000 }).catch((e: unknown) => e);
      expect((control as ClientError).code).toBe('CLIENT_PROTOCOL');
    } finally {
      await agent.close();
    }
  });

  it('rejects a dispatcher that is not one, or one given with options.WebSocket or an https:// URL', async () => {
    const pins = stack.pins;
    const agent = new ProxyAgent(proxyUrl);
    try {
      for (const options of [{ dispatcher: {} }, { dispatcher: agent, WebSocket: class {} }]) {
        const err = await connect(stack.url, { pcrs: pins, ...(options as object) }).catch((e: unknown) => e);
        expect((err as ClientError).code).toBe('CLIENT_BAD_OPTIONS');
        expect((err as ClientError).message).toContain('dispatcher');
      }
      const err = await connect('https://127.0.0.1:1/', { pcrs: pins, dispatcher: agent }).catch((e: unknown) => e);
      expect((err as ClientError).code).toBe('CLIENT_BAD_OPTIONS');
      expect((err as ClientError).message).toContain('dispatcher');
    } finally {
      await agent.close();
    }
  });
});
