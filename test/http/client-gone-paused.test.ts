// A client that leaves while its answer is pending must not keep its request running at the app until the app
// timeout. On the keep-alive fast path, after a `Connection: close` request the connection takes nothing more;
// it used to stop reading then, and a paused socket whose buffer is full stops reading altogether: a reset went
// unseen. What follows the last request is now read and dropped, so the reset is seen and the app request aborted.
import type net from 'node:net';
import type { ServerResponse } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { attachFront, silentLogger, startApp, tcpTo, type TestApp } from './helpers.ts';

/** Holds every request; notes the ones whose connection the agent closed before they were answered. */
let app: TestApp;
const held: ServerResponse[] = [];
let arrived: string[] = [];
let aborted: string[] = [];

beforeAll(async () => {
  app = await startApp((req, res) => {
    arrived.push(req.url ?? '');
    req.resume();
    res.once('close', () => {
      if (!res.writableEnded) aborted.push(req.url ?? '');
    });
    held.push(res);
  });
});
afterAll(async () => {
  await app.close();
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const res of held.splice(0)) res.destroy();
  arrived = [];
  aborted = [];
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Waits (bounded) until `cond` holds; the assertions that follow say what was expected. */
async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(20);
}

/** A fast-path connection to a forwarder whose app timeout (60 s) is far past the test's waits. */
async function connect(): Promise<{ client: net.Socket; server: () => net.Socket | undefined }> {
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), appStartupGraceMs: 0, upstreamTimeoutMs: 60_000 });
  cleanups.push(() => fwd.close());
  let server: net.Socket | undefined;
  const port = await attachFront({ attach: (s, ctx) => ((server = s), fwd.attach(s, ctx)) }, cleanups);
  return { client: await tcpTo(port, cleanups), server: () => server };
}

describe('keep-alive fast path: a client gone while its answer is pending', () => {
  it('a reset after a Connection: close request and more bytes aborts the app request', async () => {
    const { client, server } = await connect();
    client.write('GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await until(() => arrived.length >= 1);
    // More than the socket's buffer: paused, it would stop reading with these waiting.
    const extra = 512 * 1024;
    client.write(Buffer.alloc(extra, 0x41));
    const sent = Buffer.byteLength('GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n') + extra;
    // Before the fix: the socket's buffer full (reading stopped); now: everything read and dropped.
    await until(() => (server()?.readableLength ?? 0) > 0 || server()?.bytesRead === sent);
    client.resetAndDestroy();
    await until(() => aborted.length >= 1);
    expect(aborted).toEqual(['/last']);
    expect(arrived).toEqual(['/last']);
  });

  it('a reset right after a Connection: close request aborts the app request', async () => {
    const { client } = await connect();
    client.write('GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await until(() => arrived.length >= 1);
    client.resetAndDestroy();
    await until(() => aborted.length >= 1);
    expect(aborted).toEqual(['/last']);
  });
});
