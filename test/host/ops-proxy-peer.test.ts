// The bridge's ops port against an ops peer that misbehaves (a wrong --ops-agent target, a broken agent): its
// answers are re-served with writeHead, which throws on some of them; one bad answer must cost that exchange
// only, never the bridge process (an uncaught throw there takes every client's WebSocket down with it).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOpsProxy, type OpsProxy } from '../../src/host/ops-proxy.ts';

/** What the fake agent answers next, as raw HTTP/1.1 bytes (or, as a function, does with the socket itself). */
let answer: string | ((s: net.Socket, head: string) => void) = '';
/** While set, the fake agent holds its answers until it is called. */
let held: (() => void)[] | null = null;
/** Requests for /health the fake agent received; the most it held unanswered at once. */
let healthRequests = 0;
let maxHeld = 0;
let agent: net.Server;
let proxy: OpsProxy;

beforeAll(async () => {
  agent = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', (head: Buffer) => {
      if (head.toString('latin1').startsWith('GET /health ')) healthRequests++;
      const reply = answer;
      if (typeof reply === 'function') reply(s, head.toString('latin1'));
      else if (held === null) s.end(reply);
      else held.push(() => s.end(reply));
    });
  });
  await new Promise<void>((resolve) => agent.listen(0, '127.0.0.1', resolve));
  const port = (agent.address() as net.AddressInfo).port;
  // The clock channel's first try meets the same fake; its retry is pushed past the test.
  proxy = await startOpsProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port }, clockRetryMs: 600_000 });
});

afterAll(async () => {
  await proxy?.close();
  await new Promise<void>((resolve) => agent?.close(() => resolve()));
});

const http = (status: string, body = 'ok'): string => `HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`;

describe('ops proxy: a misbehaving ops peer', () => {
  it('a status writeHead refuses (099) is a 503 naming BRIDGE_OPS_FAILED, and the port keeps serving', async () => {
    answer = http('099 Odd');
    const health = await fetch(`${proxy.url}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'unhealthy', error: 'BRIDGE_OPS_FAILED' });
    const metrics = await fetch(`${proxy.url}/metrics`);
    expect(metrics.status).toBe(503);
    expect(await metrics.text()).toContain('BRIDGE_OPS_FAILED');

    answer = http('200 OK', 'fine');
    const ok = await fetch(`${proxy.url}/metrics`);
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('fine');
  });

  it('concurrent requests share one fetch: 50 clients at once never hold more than one agent stream for /health', async () => {
    answer = http('200 OK', '{"status":"ok"}');
    held = [];
    const before = healthRequests;
    let done = false;
    const all = Promise.all(Array.from({ length: 50 }, () => fetch(`${proxy.url}/health`).then(async (r) => [r.status, await r.text()]))).finally(() => (done = true));
    // The agent answers in rounds: whatever it holds is let go every few ms, while the clients keep arriving.
    while (!done) {
      await new Promise((r) => setTimeout(r, 5));
      maxHeld = Math.max(maxHeld, held.length);
      for (const release of held.splice(0)) release();
    }
    held = null;
    expect(await all).toEqual(Array.from({ length: 50 }, () => [200, '{"status":"ok"}']));
    expect(maxHeld).toBe(1);
    expect(healthRequests - before).toBeLessThan(50);
    // After the answer, the next request asks the agent again (nothing is kept past the fetch).
    const n = healthRequests;
    expect((await fetch(`${proxy.url}/health`)).status).toBe(200);
    expect(healthRequests).toBe(n + 1);
  });

  it('an answer that never completes (a 101, a trickled body) fails that fetch, and later requests ask the agent again', async () => {
    // Node hands a 101 to no one without an 'upgrade' listener and drops the socket: the shared fetch stayed
    // pending for good, and every later /health and /metrics request joined it and hung (failed before).
    answer = 'HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: Upgrade\r\n\r\n';
    const health = await fetch(`${proxy.url}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'unhealthy', error: 'BRIDGE_OPS_FAILED' });
    answer = http('200 OK', '{"status":"ok"}');
    const ok = await fetch(`${proxy.url}/health`);
    expect(ok.status).toBe(200);

    // A body trickled a byte at a time never trips the socket's idle timeout: the whole answer has a deadline.
    const slow = await startOpsProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: (agent.address() as net.AddressInfo).port }, timeoutMs: 500, clockRetryMs: 600_000 });
    const timers: NodeJS.Timeout[] = [];
    try {
      answer = (s, head) => {
        if (!head.startsWith('GET /metrics ')) return void s.end(); // the clock channel's first try
        s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n');
        const t = setInterval(() => s.write('x'), 50);
        timers.push(t);
        s.on('close', () => clearInterval(t));
      };
      const trickled = await fetch(`${slow.url}/metrics`);
      expect(trickled.status).toBe(503);
      expect(await trickled.text()).toContain('BRIDGE_OPS_TIMEOUT');
    } finally {
      for (const t of timers) clearInterval(t);
      await slow.close();
    }
  }, 20_000);
});

describe('ops proxy: an ops peer that refuses the clock channel', () => {
  it('closes each refused attempt before the next, so retries hold no stream open', async () => {
    // The peer answers the Upgrade with a 200 it keeps alive. The refused stream stayed open (until the peer
    // closed it) while the proxy retried on a new one: failed before, with one more held stream per retry.
    const open = new Set<net.Socket>();
    let attempts = 0;
    const peer = net.createServer((s) => {
      open.add(s);
      s.on('close', () => open.delete(s));
      s.on('error', () => {});
      s.on('data', () => {
        attempts++;
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nno');
      });
    });
    await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
    const p = await startOpsProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: (peer.address() as net.AddressInfo).port }, clockRetryMs: 10 });
    try {
      while (attempts < 4) await new Promise((r) => setTimeout(r, 10));
      // Each refused stream is closed by the proxy; at most the attempt in progress is open.
      await new Promise((r) => setTimeout(r, 50));
      expect(open.size).toBeLessThanOrEqual(1);
      expect(p.clockConnected).toBe(false);
    } finally {
      await p.close();
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => peer.close(() => resolve()));
    }
  });
});
