// One client (the bridge's PROXY v2 source address; an IPv6 /64 counts as one) holds at most
// limits.max_sessions_per_client TLS ingress connections, as it holds at most that many Noise sessions: past it a
// connection is closed right after its PROXY header, before any TLS, and a freed connection is taken again.
// Without it one address could hold every connection slot (max_sessions) with idle keep-alive connections and
// refuse everyone else. The same limit with session threads: test/runtime/tls-per-client.test.ts.
import type tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryLog, type MemoryLog } from '../faults/stack.ts';
import { startIngressStack, tlsFromClient, type IngressStack } from './helpers.ts';

let s: IngressStack;
let log: MemoryLog;
const open: tls.TLSSocket[] = [];

beforeAll(async () => {
  log = memoryLog();
  s = await startIngressStack({ ingress: { acceptProxyProtocol: true, maxConnectionsPerClient: 2, logger: log.logger, refusalLogIntervalMs: 600_000 } });
}, 30_000);

afterAll(async () => {
  for (const t of open) t.destroy();
  await s?.stop();
});

/** A TLS connection from `source` as the bridge's PROXY v2 header says; rejects when the agent closes it first. */
async function from(source: string): Promise<tls.TLSSocket> {
  const t = await tlsFromClient(s.port, source, 40000 + open.length);
  open.push(t);
  return t;
}

describe('TLS ingress: connections per client (limits.max_sessions_per_client)', () => {
  it('refuses one more from the same address (or /64) before any TLS, serves other clients, and admits again once one closes', async () => {
    const first = await from('198.51.100.7');
    await from('198.51.100.7');
    await expect(from('198.51.100.7')).rejects.toThrow();
    // Another address is its own client; two IPv6 addresses of one /64 are one client.
    await from('203.0.113.9');
    await from('2001:db8:1:2::1');
    await from('2001:db8:1:2::2');
    await expect(from('2001:db8:1:2::3')).rejects.toThrow();
    expect(s.app.seen).toEqual([]);
    first.destroy();
    await expect.poll(async () => from('198.51.100.7').then(() => true, () => false), { timeout: 5_000 }).toBe(true);
    // Logged as every refusal is: one line per interval with counts by cause (written here by the close).
    await s.ingress.close();
    const lines = log.records().filter((r) => r.msg === 'connections refused (TLS ingress)');
    expect(lines).toHaveLength(1);
    expect((lines[0]!.counts as Record<string, number>)['connections-per-client']).toBeGreaterThanOrEqual(2);
  });
});
