// `enclave-agent proxy` and time: a request head is bounded, a whole request is not (Node's default 300 s
// requestTimeout cut uploads that were still flowing), and an upload is cut only when the local client stops
// sending while the proxy waits for it — not while the enclave side is not taking more. The body's idle timer runs
// on fake setTimeout; the head's timeout is Node's own (checked in C++), so that one gets a small configured value.
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { ERROR_HEADER, startAttestedProxy, type AttestedProxy } from '../../src/host/attested-proxy.ts';

let proxy: AttestedProxy | null = null;
const sockets: net.Socket[] = [];

afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const s of sockets.splice(0)) s.destroy();
  await proxy?.close();
  proxy = null;
});

/** A connection to the proxy; `answer` resolves with everything it sent once it closed the connection. */
async function open(): Promise<{ socket: net.Socket; answer: Promise<string> }> {
  const socket = await new Promise<net.Socket>((resolve) => {
    const s = net.connect(proxy!.port, '127.0.0.1', () => resolve(s));
    s.on('error', () => {});
    sockets.push(s);
  });
  let out = '';
  socket.setEncoding('latin1');
  socket.on('data', (c: string) => (out += c));
  return { socket, answer: new Promise((resolve) => socket.on('close', () => resolve(out))) };
}

/**
 * A stand-in enclave whose app reads the upload piece by piece: `arrived(n)` resolves once n pieces reached it;
 * `hold` (when given) is awaited after the first piece, as if the enclave took no more for a while. The app
 * answers with the byte count once the body ended.
 */
function uploadApp(hold?: Promise<void>): { client: Client; arrived: (n: number) => Promise<void>; aborted: () => boolean } {
  let pieces = 0;
  let signal: AbortSignal | undefined;
  const waiting: { n: number; resolve: () => void }[] = [];
  const client = {
    attestation: { moduleId: 'i-test-enc' },
    fetch: async (_url: string, init: { body: AsyncIterable<Uint8Array>; signal: AbortSignal }) => {
      signal = init.signal;
      let bytes = 0;
      for await (const piece of init.body) {
        bytes += piece.byteLength;
        pieces++;
        for (const w of waiting.filter((x) => x.n <= pieces)) w.resolve();
        if (pieces === 1 && hold !== undefined) await hold;
      }
      return new Response(`got ${bytes} bytes`);
    },
    upgrade: () => Promise.reject(new Error('no upgrade here')),
    close: () => Promise.resolve(),
  } as unknown as Client;
  const arrived = (n: number): Promise<void> => (pieces >= n ? Promise.resolve() : new Promise((resolve) => waiting.push({ n, resolve })));
  return { client, arrived, aborted: () => signal?.aborted === true };
}

/** Until the proxy waits for the local client's next piece (its idle timer set): setImmediate is not faked. */
async function waiting(): Promise<void> {
  for (let turns = 0; vi.getTimerCount() === 0; turns++) {
    if (turns === 10_000) throw new Error('the proxy set no timer while waiting for the client');
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const IDLE = 10_000;
const HEAD = 'POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n';
const piece = (text: string): string => `${text.length.toString(16)}\r\n${text}\r\n`;

describe('attested proxy: timeouts', () => {
  it('bounds the request head (408 PROXY_REQUEST_TIMEOUT) but sets no deadline on a whole request', async () => {
    const created = vi.spyOn(http, 'createServer');
    proxy = await startAttestedProxy({ headersTimeoutMs: 200, connect: () => Promise.reject(new Error('must not connect')) });
    // Node's default of 300 s cut an upload still flowing after five minutes.
    expect((created.mock.results[0]!.value as http.Server).requestTimeout).toBe(0);
    const { socket, answer } = await open();
    socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n'); // and never the end of the head
    const got = await answer;
    expect(got).toMatch(/^HTTP\/1\.1 408 /);
    expect(got).toContain(`${ERROR_HEADER}: PROXY_REQUEST_TIMEOUT`);
  });

  it('does not cut an upload that keeps coming, however long it takes in all', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const app = uploadApp();
    proxy = await startAttestedProxy({ bodyIdleTimeoutMs: IDLE, connect: () => Promise.resolve(app.client) });
    const { socket, answer } = await open();
    socket.write(HEAD);
    for (let i = 1; i <= 20; i++) {
      socket.write(piece('abcd'));
      await app.arrived(i);
      await waiting();
      vi.advanceTimersByTime(IDLE - 1); // 20 × almost the idle limit: far past it in all
    }
    socket.end('0\r\n\r\n');
    const got = await answer;
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(got).toContain('got 80 bytes');
  });

  it('does not count the time the enclave side takes no more of the body', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let release!: () => void;
    const app = uploadApp(new Promise<void>((resolve) => (release = resolve)));
    proxy = await startAttestedProxy({ bodyIdleTimeoutMs: IDLE, connect: () => Promise.resolve(app.client) });
    const { socket, answer } = await open();
    socket.write(HEAD + piece('abcd'));
    await app.arrived(1);
    vi.advanceTimersByTime(5 * IDLE); // the app holds the first piece; the proxy is not waiting for the client
    socket.end(piece('efgh') + '0\r\n\r\n');
    release();
    const got = await answer;
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(got).toContain('got 8 bytes');
  });

  it('answers a stalled upload 408 PROXY_REQUEST_TIMEOUT, closes it and releases the enclave stream', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const app = uploadApp();
    proxy = await startAttestedProxy({ bodyIdleTimeoutMs: IDLE, connect: () => Promise.resolve(app.client) });
    const { socket, answer } = await open();
    socket.write(HEAD + piece('abcd')); // then nothing, the connection left open
    await app.arrived(1);
    await waiting();
    vi.advanceTimersByTime(IDLE);
    const got = await answer;
    expect(got).toMatch(/^HTTP\/1\.1 408 /);
    expect(got).toContain(`${ERROR_HEADER}: PROXY_REQUEST_TIMEOUT`);
    expect(app.aborted()).toBe(true);
  });
});
