// [egress] max_proxy_connections: the explicit proxy serves that many app connections at once (each may hold a
// request head of up to 64 KiB); one more is answered 503 EGRESS_PROXY_BUSY before a byte of it is read, recorded
// and counted `busy`; once a served connection closes, the next is served again.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { egressCounters } from '../../src/egress/decision-log.ts';
import { rawRequest, startStack, startTestDns, type Stack, type TestDns } from './helpers.ts';

let dns: TestDns;
let stack: Stack;
const proxyPort = (): number => Number(new URL(stack.egress.proxyUrl).port);

/** A connection that sends half a request head and waits: the proxy holds it in its head read. */
function holdOpen(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.write('CONNECT denied.test:443 HTTP/1.1\r\n');
      resolve(s);
    });
    s.on('error', reject);
  });
}

beforeAll(async () => {
  dns = await startTestDns({});
  stack = await startStack(['ok.test:443'], dns.port, { max_proxy_connections: 2 });
});
afterAll(async () => {
  await stack?.close();
  await dns?.close();
});

describe('explicit proxy: connections served at once', () => {
  it('defaults to 1024 and refuses a value under 1, naming the key', () => {
    expect(configFromObject({ egress: { enabled: true } }).egress.max_proxy_connections).toBe(1024);
    expect(() => configFromObject({ egress: { enabled: true, max_proxy_connections: 0 } })).toThrow(/egress\.max_proxy_connections/);
  });

  it('answers one over the cap 503 EGRESS_PROXY_BUSY, counted busy, and serves again once one closes', async () => {
    const held = [await holdOpen(proxyPort()), await holdOpen(proxyPort())];
    try {
      const busyBefore = egressCounters.busy;
      const refused = await rawRequest(proxyPort(), 'CONNECT denied.test:443 HTTP/1.1\r\nhost: denied.test:443\r\n\r\n');
      expect(refused.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
      expect(refused).toContain('[egress] max_proxy_connections');
      expect(egressCounters.busy).toBe(busyBefore + 1);
      expect(stack.decisions.at(-1)).toMatchObject({ allowed: false, via: 'explicit', busy: true, code: 'EGRESS_PROXY_BUSY' });
      expect(stack.records.at(-1)).toMatchObject({ type: 'egress', allowed: false, busy: true, code: 'EGRESS_PROXY_BUSY', reason: expect.stringContaining('2 connections being set up') });

      held.shift()!.destroy();
      // Served again (the policy answers it) once the proxy has seen the close.
      await vi.waitFor(
        async () => {
          const res = await rawRequest(proxyPort(), 'CONNECT denied.test:443 HTTP/1.1\r\nhost: denied.test:443\r\n\r\n');
          expect(res.split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden');
        },
        { timeout: 5_000, interval: 50 },
      );
    } finally {
      for (const s of held) s.destroy();
    }
  });
});
