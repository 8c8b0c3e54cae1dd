// Against a server that advertises nothing (the compat profile an Enclavia enclave speaks), in raw mode: fetch
// uses Data like the reference client, falls back to a stream only for requests that do not fit a frame, and
// raw streams work as plain byte pipes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, connect, toNodeDuplex, type Client } from '../../src/client/node.ts';
import { patternBytes, sha256Hex, startStack, type Stack } from './stack.ts';

let stack: Stack;
let client: Client;

beforeAll(async () => {
  stack = await startStack({ mode: 'raw', features: [], limits: { maxInFlight: 4 } });
  client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxInFlight: 4 });
});

afterAll(async () => {
  await client?.close();
  await stack?.close();
});

async function statsOfLastSession(): Promise<NonNullable<Stack['sessions'][number]>['stats']> {
  const n = stack.sessions.length;
  await client.close();
  for (let i = 0; i < 100 && stack.sessions.length === n; i++) await new Promise((r) => setTimeout(r, 20));
  return stack.sessions[stack.sessions.length - 1]!.stats;
}

describe('compat profile (no features advertised)', () => {
  it('sees no features and uses Data for requests that fit, streams for those that do not', async () => {
    const c = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    expect(c.features).toEqual([]);
    expect(await (await c.fetch('/hello')).text()).toBe('hello');
    const body = patternBytes(100_000);
    const res = await c.fetch('/echo', { method: 'POST', body });
    expect(res.headers.get('x-body-length')).toBe('100000');
    const n = stack.sessions.length;
    await c.close();
    for (let i = 0; i < 100 && stack.sessions.length === n; i++) await new Promise((r) => setTimeout(r, 20));
    // The echo of 100 kB cannot come back in one Data frame; the request went as a stream so any size works.
    expect(stack.sessions[stack.sessions.length - 1]!.stats).toMatchObject({ data: 1, streams: 1 });
  });

  it('surfaces a response too large for a Data frame as CLIENT_REMOTE_ERROR and keeps the session', async () => {
    const err = (await client.fetch('/big?n=100000').catch((e: unknown) => e)) as ClientError;
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe('CLIENT_REMOTE_ERROR');
    expect(err.remoteMessage).toContain('response too large');
    expect(await (await client.fetch('/hello')).text()).toBe('hello');
    // The same request as a stream works.
    const res = await client.fetch('/big?n=100000', { transport: 'stream' });
    expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(sha256Hex(patternBytes(100_000)));
  });

  it('queues requests beyond the in-flight window instead of overrunning the agent', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, async () => (await client.fetch('/slow?ms=30')).text()));
    expect(results).toEqual(Array(20).fill('slow'));
  });

  it('refuses transport "data" for a request that cannot fit one frame', async () => {
    await expect(client.fetch('/echo', { method: 'POST', body: patternBytes(40_000), transport: 'data' })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
  });

  it('opens a raw stream: bytes in, the app answer out, EOF closes the readable', async () => {
    const s = await client.openStream('GET /hello HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n');
    const text = await new Response(s.readable).text();
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text.endsWith('hello')).toBe(true);
    s.close();
  });

  it('works as a Node duplex', async () => {
    const s = await client.openStream();
    const duplex = toNodeDuplex(s);
    const chunks: Buffer[] = [];
    duplex.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve) => duplex.on('end', () => resolve()));
    duplex.write('GET /hello HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n');
    await ended;
    expect(Buffer.concat(chunks).toString()).toContain('hello');
    duplex.destroy();
  });

  it('answers an upgrade that is refused with CLIENT_UPGRADE_FAILED and the status', async () => {
    const err = (await client.upgrade('/not-ws', { headers: { Upgrade: 'websocket', Connection: 'Upgrade' } }).catch((e: unknown) => e)) as ClientError;
    expect(err.code).toBe('CLIENT_UPGRADE_FAILED');
    expect(err.status).toBe(404);
  });

  it("keeps a refused upgrade's reason phrase (the app's bytes) out of the error message", async () => {
    const err = (await client.upgrade('/refused-with-reason', { headers: { Upgrade: 'websocket', Connection: 'Upgrade' } }).catch((e: unknown) => e)) as ClientError;
    expect([err.code, err.status]).toEqual(['CLIENT_UPGRADE_FAILED', 403]);
    expect(err.message).toBe('upgrade: expected status 101, found 403');
  });

  it('keeps the upgrade path out of the error message: its query may carry a token', async () => {
    const token = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc';
    const err = (await client.upgrade(`/not-ws?access_token=${token}`, { headers: { Upgrade: 'websocket', Connection: 'Upgrade' } }).catch((e: unknown) => e)) as ClientError;
    expect([err.code, err.status]).toEqual(['CLIENT_UPGRADE_FAILED', 404]);
    expect(err.message).toBe('upgrade: expected status 101, found 404');
    expect(err.message).not.toContain(token.slice(0, 8));
  });

  it('counted every request as Data or a stream on one session', async () => {
    const stats = await statsOfLastSession();
    expect(stats.data).toBeGreaterThanOrEqual(22);
    expect(stats.refused).toBe(0);
  });
});
