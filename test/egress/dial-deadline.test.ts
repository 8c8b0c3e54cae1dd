// A name with several addresses gets one connect timeout in all, not one per address: an app behind the explicit
// proxy hears 504 after connect_timeout_ms however many addresses do not answer. And a host dialer that never
// answers a CONNECT is a timeout too (504), not a bad gateway.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { authorizeAndDial } from '../../src/egress/dial.ts';
import { EgressError } from '../../src/egress/errors.ts';
import { decodeRequestBody, decodeRequestHeader, encodeResponse, REQUEST_HEADER_BYTES, Status } from '../../src/egress/flow-frame.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';
import { startEgress } from '../../src/egress/service.ts';
import { configFromObject } from '../../src/config.ts';
import { connectVia, publicIp } from './helpers.ts';

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** A fake host dialer: records each CONNECT's timeout and answers TIMEOUT once it has passed (or never, with `silent`). */
async function fakeDialer(silent = false): Promise<{ port: number; timeouts: number[] }> {
  const timeouts: number[] = [];
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length < REQUEST_HEADER_BYTES) return;
      const { op, len } = decodeRequestHeader(buf.subarray(0, REQUEST_HEADER_BYTES));
      if (buf.length < REQUEST_HEADER_BYTES + len) return;
      const req = decodeRequestBody(op, buf.subarray(REQUEST_HEADER_BYTES, REQUEST_HEADER_BYTES + len));
      if (req.op !== 'connect') return;
      timeouts.push(req.timeoutMs);
      if (!silent) setTimeout(() => s.end(encodeResponse({ status: Status.TIMEOUT, body: 'timeout' })), req.timeoutMs);
    });
    s.on('close', () => s.destroy());
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  return { port: (server.address() as net.AddressInfo).port, timeouts };
}

/** A DNS answer for the query's name with `ips` (A, TTL 60). */
function answer(query: Buffer, ips: string[]): Buffer {
  let p = 12;
  while (query[p]! > 0) p += 1 + query[p]!;
  const head = Buffer.from(query.subarray(0, 12));
  head.writeUInt16BE(0x8180, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(ips.length, 6);
  const rrs = ips.map((ip) => Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...ip.split('.').map(Number)]));
  return Buffer.concat([head, query.subarray(12, p + 5), ...rrs]);
}

describe('egress connect timeout', () => {
  it('is one budget for every address of a name, not one each', async () => {
    const dialer = await fakeDialer();
    const err = await authorizeAndDial(
      {
        policy: new EgressPolicy(['many.test:443']),
        dialer: () => new Promise((resolve, reject) => {
          const s = net.connect({ host: '127.0.0.1', port: dialer.port }, () => resolve(s)).once('error', reject);
        }),
        dns: (q) => Promise.resolve(answer(q, [publicIp(1), publicIp(2), publicIp(3)])),
        connectTimeoutMs: 300,
      },
      'many.test',
      443,
    ).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EgressError);
    expect((err as EgressError).code).toBe('EGRESS_TIMEOUT');
    expect(dialer.timeouts.length).toBeGreaterThan(0);
    // What the dialer was allowed to spend, in all: the name's one timeout (before: 3 × 300 ms).
    expect(dialer.timeouts.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(300);
  });

  it('answers 504 when the host dialer never answers a CONNECT', async () => {
    const dialer = await fakeDialer(true);
    const config = configFromObject({ egress: { enabled: true, destinations: [`${publicIp(9)}:443`], connect_timeout_ms: 100 } });
    const egress = await startEgress({ egress: config.egress, proxyPort: 0, dialer: () => new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: dialer.port }, () => resolve(s)).once('error', reject);
    }) });
    try {
      const { status, head } = await connectVia(Number(new URL(egress.proxyUrl).port), `${publicIp(9)}:443`);
      expect(dialer.timeouts).toEqual([100]);
      expect(status).toBe(504);
      expect(head).toContain('Gateway Timeout');
    } finally {
      await egress.close();
    }
  }, 20_000);
});
