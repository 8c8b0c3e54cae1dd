// The Node client's WebSocket refuses a message above MAX_BRIDGE_MESSAGE_BYTES from the (untrusted) bridge instead
// of buffering up to undici's default 128 MiB before the channel checks a byte.
import type { AddressInfo } from 'node:net';
import { WebSocket as UndiciWebSocket } from 'undici';
import { WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.ts';
import { BoundedWebSocket, ClientError, connect, MAX_BRIDGE_MESSAGE_BYTES } from '../../src/client/node.ts';

let server: WebSocketServer;
let url: string;
/** Size of the one message the server sends after the client's first message; the close code it then saw. */
let reply = 0;
const closes: number[] = [];

beforeAll(async () => {
  server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => server.once('listening', () => r()));
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  server.on('connection', (ws) => {
    ws.once('message', () => ws.send(Buffer.alloc(reply, 0x41)));
    ws.on('close', (code) => closes.push(code));
    ws.on('error', () => {});
  });
});

afterAll(async () => {
  for (const c of server.clients) c.terminate();
  await new Promise((r) => server.close(r));
});

/** Opens `WS`, sends one byte, and reports the first message's size (or null) and the close code. */
function receive(WS: new (url: string) => UndiciWebSocket, size: number): Promise<{ message: number | null; code: number }> {
  reply = size;
  return new Promise((resolve) => {
    const ws = new WS(url);
    ws.binaryType = 'arraybuffer';
    let message: number | null = null;
    ws.addEventListener('open', () => ws.send(Uint8Array.of(1)));
    ws.addEventListener('message', (e) => {
      message = (e.data as ArrayBuffer).byteLength;
      ws.close();
    });
    ws.addEventListener('close', (e) => resolve({ message, code: e.code }));
  });
}

describe('bridge message bound', () => {
  it('delivers a message of exactly the bound', async () => {
    expect(await receive(BoundedWebSocket, MAX_BRIDGE_MESSAGE_BYTES)).toMatchObject({ message: MAX_BRIDGE_MESSAGE_BYTES });
  });

  it('fails the connection on a message one byte over the bound, without delivering it (plain undici delivers it)', async () => {
    const r = await receive(BoundedWebSocket, MAX_BRIDGE_MESSAGE_BYTES + 1);
    expect(r.message).toBeNull();
    expect(r.code).not.toBe(1000);
    expect(await receive(UndiciWebSocket, MAX_BRIDGE_MESSAGE_BYTES + 1)).toMatchObject({ message: MAX_BRIDGE_MESSAGE_BYTES + 1 });
  });

  it('connect() uses the bounded WebSocket: a 4 MiB reply to the handshake fails it as a dropped connection', async () => {
    reply = 4 << 20;
    const err = await connect(url, { pcrs: { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) }, connectTimeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_CONNECT_FAILED');
  });
});

/** Runs `fn` with an unbounded undici WebSocket as globalThis.WebSocket, as on Node 22+ (or --experimental-websocket). */
async function withGlobalWebSocket<T>(fn: () => Promise<T>): Promise<T> {
  const g = globalThis as { WebSocket?: unknown };
  const had = Object.getOwnPropertyDescriptor(g, 'WebSocket');
  g.WebSocket = UndiciWebSocket;
  try {
    return await fn();
  } finally {
    if (had) Object.defineProperty(g, 'WebSocket', had);
    else delete g.WebSocket;
  }
}

describe('bridge message bound where Node has a global WebSocket', () => {
  it('connect() still refuses a 4 MiB reply unread (CLIENT_CONNECT_FAILED, close 1009), not CLIENT_PROTOCOL after buffering it', async () => {
    reply = 4 << 20;
    closes.length = 0;
    const err = await withGlobalWebSocket(() => connect(url, { pcrs: { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) }, connectTimeoutMs: 10_000 }).catch((e: unknown) => e));
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_CONNECT_FAILED');
    await expect.poll(() => closes).toContain(1009);
  });

  it('an explicit options.WebSocket still overrides the default', async () => {
    reply = 4 << 20;
    const err = await connect(url, { pcrs: { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) }, connectTimeoutMs: 10_000, WebSocket: UndiciWebSocket as never }).catch((e: unknown) => e);
    expect((err as ClientError).code).toBe('CLIENT_PROTOCOL'); // unbounded: the 4 MiB is read and fails decryption
  });

  it('enclave-agent attest still refuses a 4 MiB reply unread (a connect failure, exit 1)', async () => {
    reply = 4 << 20;
    closes.length = 0;
    const lines: string[] = [];
    const code = await withGlobalWebSocket(() =>
      runCli(['attest', url, '--pcrs', `PCR0=${'00'.repeat(48)},PCR1=${'00'.repeat(48)},PCR2=${'00'.repeat(48)}`, '--timeout', '10000'], { out: (l) => lines.push(l), err: (l) => lines.push(l), stdin: () => Promise.resolve(new Uint8Array()) }),
    );
    expect(code).toBe(1);
    expect(lines.join('\n')).toContain('CLIENT_CONNECT_FAILED');
    await expect.poll(() => closes).toContain(1009);
  });
});
