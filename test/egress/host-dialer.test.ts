// The host dialer and the flow protocol: exact frame bytes, what it dials and refuses, DNS forwarding, and
// malformed frames (each closes its own stream; the dialer goes on serving).
import dgram from 'node:dgram';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { command as bridgeCommand, parseBridgeArgs } from '../../src/cli/bridge.ts';
import { CliUsageError } from '../../src/cli/types.ts';
import { buildQuery, parseResponse } from '../../src/egress/dns-message.ts';
import { dnsExchange, openFlow } from '../../src/egress/flow-client.ts';
import { decodeRequestBody, decodeRequestHeader, encodeRequest, encodeResponse, Status } from '../../src/egress/flow-frame.ts';
import { maxWaitingStreams, startEgressDialer, UPSTREAM_KEEPALIVE_MS, type EgressDialer, type EgressDialerListen } from '../../src/host/egress-dialer.ts';
import type { ConnectionInfo } from '../../src/transport/types.ts';
import { exchange, startExchangeServer, startTestDns, type ExchangeServer, type TestDns } from './helpers.ts';
import { vsockStandIn } from '../host/vsock-stand-in.ts';

let dns: TestDns;
let echo: ExchangeServer;
let strict: EgressDialer; // global addresses only
let lenient: EgressDialer; // 127.0.0.2 allowed

const tcp = (port: number) => (): Promise<Duplex> =>
  new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
    s.once('error', reject);
  });

beforeAll(async () => {
  dns = await startTestDns({ 'ok.test': ['127.0.0.2'] });
  echo = await startExchangeServer('127.0.0.2', (b) => Buffer.concat([b, b]));
  strict = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dns.port }] });
  lenient = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dns.port }], allowNonGlobal: ['127.0.0.2/32'] });
});
afterAll(async () => {
  await strict?.close();
  await lenient?.close();
  await echo?.close();
  await dns?.close();
});

describe('flow frames', () => {
  it('encodes CONNECT 1.2.3.4:443 for api.example.com byte for byte and decodes it back', () => {
    const req = { op: 'connect' as const, ip: '1.2.3.4', port: 443, timeoutMs: 10_000, name: 'api.example.com' };
    const bytes = encodeRequest(req);
    expect(bytes.toString('hex')).toBe('45475231' + '01' + '01' + '001b' + '04' + '01020304' + '01bb' + '00002710' + '0f' + Buffer.from('api.example.com').toString('hex'));
    const { op, len } = decodeRequestHeader(bytes.subarray(0, 8));
    expect(decodeRequestBody(op, bytes.subarray(8, 8 + len))).toEqual(req);
  });

  it('round-trips an IPv6 CONNECT and a response header', () => {
    const req = { op: 'connect' as const, ip: '2001:db8::1', port: 8443, timeoutMs: 1, name: '' };
    const bytes = encodeRequest(req);
    expect(decodeRequestBody(1, bytes.subarray(8))).toEqual(req);
    expect(encodeResponse({ status: Status.CONNECT_FAILED, errno: 111, body: 'x' }).toString('hex')).toBe('45475231' + '01' + '02' + '0000006f' + '0001' + '78');
  });
});

describe('host dialer', () => {
  it('dials the IP it is told (when allowed) and copies bytes both ways with half-close', async () => {
    const flow = await openFlow(tcp(lenient.port!), { ip: '127.0.0.2', port: echo.port, timeoutMs: 2_000, name: 'ok.test' });
    const out = Buffer.alloc(70 * 1024, 7);
    const back = await exchange(flow as net.Socket, out);
    expect(back.equals(Buffer.concat([out, out]))).toBe(true);
  });

  it('turns TCP keep-alive on for the upstream connection (a vanished upstream cannot hold a flow slot forever)', async () => {
    const flow = await openFlow(tcp(lenient.port!), { ip: '127.0.0.2', port: echo.port, timeoutMs: 2_000, name: 'ok.test' });
    // iproute2's ss shows the socket's timer: "keepalive" only with SO_KEEPALIVE set; the dialer's socket is the
    // one connected to the echo server (destination 127.0.0.2:port)
    const { execFileSync } = await import('node:child_process');
    const out = execFileSync('ss', ['-tnoH', 'state', 'established', 'dst', `127.0.0.2:${echo.port}`], { encoding: 'utf8' });
    expect(out).toMatch(/timer:\(keepalive,/);
    const secs = Number(/timer:\(keepalive,(\d+(?:\.\d+)?)(min|sec)/.exec(out)![1]) * (/timer:\(keepalive,[\d.]+min/.test(out) ? 60 : 1);
    expect(secs).toBeGreaterThan(50);
    expect(secs).toBeLessThanOrEqual(UPSTREAM_KEEPALIVE_MS / 1000);
    flow.destroy();
  });

  it('refuses a non-global address unless configured (HOST_POLICY_DENY)', async () => {
    await expect(openFlow(tcp(strict.port!), { ip: '127.0.0.2', port: echo.port, timeoutMs: 2_000, name: 'ok.test' })).rejects.toMatchObject({ code: 'EGRESS_DENIED' });
    await expect(openFlow(tcp(lenient.port!), { ip: '169.254.169.254', port: 80, timeoutMs: 2_000, name: '' })).rejects.toMatchObject({ code: 'EGRESS_DENIED' });
    // The metadata service inside IPv6 forms that reach it (NAT64, 6to4, IPv4-compatible, -translated): failed
    // before the fix, which unwrapped ::ffff: only.
    for (const ip of ['64:ff9b::a9fe:a9fe', '2002:a9fe:a9fe::1', '::a9fe:a9fe', '::ffff:0:a9fe:a9fe']) {
      await expect(openFlow(tcp(lenient.port!), { ip, port: 80, timeoutMs: 2_000, name: '' }), ip).rejects.toMatchObject({ code: 'EGRESS_DENIED', message: expect.stringMatching(/not a global address/) });
    }
    // The agent's classification (address-class.ts): benchmarking, documentation and the IPv6 special-purpose
    // blocks are refused too, and site-local fec0::/10 (each failed before its fix: dialled as global).
    for (const ip of ['198.18.0.1', '192.0.2.1', '198.51.100.1', '203.0.113.1', '2001:db8::1', '100::1', '2001:2::1', '3fff::1', 'fec0::1', 'feff:ffff::1']) {
      await expect(openFlow(tcp(lenient.port!), { ip, port: 80, timeoutMs: 2_000, name: '' }), ip).rejects.toMatchObject({ code: 'EGRESS_DENIED', message: expect.stringMatching(/not a global address/) });
    }
  });

  it('reports a refused connect with its errno', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen({ host: '127.0.0.2', port: 0 }, () => r()));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r));
    await expect(openFlow(tcp(lenient.port!), { ip: '127.0.0.2', port, timeoutMs: 2_000, name: '' })).rejects.toMatchObject({ code: 'EGRESS_CONNECT_FAILED', message: expect.stringMatching(/ECONNREFUSED.*errno 111/) });
  });

  it('forwards a DNS query to its resolvers and returns the raw answer; a dead resolver is RESOLVER_ERROR', async () => {
    const answer = parseResponse(await dnsExchange(tcp(strict.port!), buildQuery(0x1234, 'ok.test', 1), 2_000));
    expect(answer.id).toBe(0x1234);
    expect(answer.answers).toEqual([{ name: 'ok.test', type: 1, ttl: 60, address: '127.0.0.2' }]);
    const dead = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: 9 }] });
    try {
      await expect(dnsExchange(tcp(dead.port!), buildQuery(1, 'ok.test', 1), 1_000)).rejects.toMatchObject({ code: 'EGRESS_RESOLVER_ERROR' });
    } finally {
      await dead.close();
    }
  });

  it('serves at most maxFlows at once: one more CONNECT or DNS query is answered BUSY, and served once a flow closes', async () => {
    const capped = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dns.port }], allowNonGlobal: ['127.0.0.2/32'], maxFlows: 2 });
    try {
      const req = { ip: '127.0.0.2', port: echo.port, timeoutMs: 2_000, name: 'ok.test' };
      const a = await openFlow(tcp(capped.port!), req);
      const b = await openFlow(tcp(capped.port!), req);
      await expect(openFlow(tcp(capped.port!), req)).rejects.toMatchObject({ code: 'EGRESS_DIALER_BUSY', message: expect.stringContaining('maximum of 2 flows') });
      await expect(dnsExchange(tcp(capped.port!), buildQuery(2, 'ok.test', 1), 2_000)).rejects.toMatchObject({ code: 'EGRESS_DIALER_BUSY' });
      expect(capped.refusedBusy).toBe(2);
      expect(capped.activeFlows).toBe(2);
      a.destroy();
      await waitUntil(() => capped.activeFlows === 1);
      const c = await openFlow(tcp(capped.port!), req);
      expect((await exchange(c as net.Socket, Buffer.from('ping'))).toString()).toBe('pingping');
      b.destroy();
    } finally {
      await capped.close();
    }
    await expect(startEgressDialer({ listen: { kind: 'tcp', port: 0 }, maxFlows: 0 })).rejects.toMatchObject({ code: 'EGRESS_SETUP_FAILED' });
  });

  it('refuses an --allow-nonglobal prefix with a second "/" rather than dialling the wider one it starts with', async () => {
    // "::/0/128" read as ::/0 would let the dialer reach every non-global address, IPv4 ones included.
    for (const p of ['::/0/128', '10.0.0.0/8/32']) {
      await expect(startEgressDialer({ listen: { kind: 'tcp', port: 0 }, allowNonGlobal: [p] }), p).rejects.toMatchObject({ code: 'EGRESS_SETUP_FAILED', message: expect.stringContaining(p) });
    }
  });

  it('counts a DNS query against maxFlows until its resolvers are done with it, even when the enclave closed its stream', async () => {
    // A stream closed right after its request freed its slot at once while the forward ran on (a socket and
    // timers per resolver): opened and closed in a loop, queries in flight were unbounded.
    const heard: Buffer[] = [];
    const silent = dgram.createSocket('udp4');
    silent.on('message', (m: Buffer) => heard.push(m));
    await new Promise<void>((r) => silent.bind({ address: '127.0.0.1', port: 0 }, () => r()));
    const capped = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: silent.address().port }], maxFlows: 2 });
    try {
      for (const id of [1, 2]) {
        const s = await tcp(capped.port!)();
        s.on('error', () => {});
        s.write(encodeRequest({ op: 'dns', query: buildQuery(id, 'ok.test', 1) }));
        await waitUntil(() => heard.length === id);
        (s as net.Socket).resetAndDestroy(); // gone at once, not a half-close the dialer would answer into
        await new Promise((r) => s.once('close', r));
      }
      await expect(dnsExchange(tcp(capped.port!), buildQuery(3, 'ok.test', 1), 2_000)).rejects.toMatchObject({ code: 'EGRESS_DIALER_BUSY' });
      expect(heard).toHaveLength(2);
      // Once the two forwards gave up on the silent resolver, queries are served again.
      await waitUntil(() => heard.length === 2 && capped.refusedBusy === 1);
      let code = 'EGRESS_DIALER_BUSY';
      while (code === 'EGRESS_DIALER_BUSY') {
        code = await dnsExchange(tcp(capped.port!), buildQuery(4, 'ok.test', 1), 5_000).then(
          () => 'ok',
          (err: { code: string }) => err.code,
        );
        if (code === 'EGRESS_DIALER_BUSY') await new Promise((r) => setTimeout(r, 200));
      }
      expect(code).toBe('EGRESS_RESOLVER_ERROR');
    } finally {
      await capped.close();
      silent.close();
    }
  });

  it('holds at most maxWaitingStreams streams without a request, closing the oldest, and keeps serving', async () => {
    // Failed before the fix: silent streams were not counted, each held until the header timeout.
    const capped = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dns.port }], maxFlows: 2 });
    const cap = maxWaitingStreams(2);
    const socks: net.Socket[] = [];
    const closed = new Set<number>();
    try {
      for (let i = 0; i < cap + 10; i++) {
        const s = net.connect({ host: '127.0.0.1', port: capped.port! });
        s.on('error', () => {});
        s.on('close', () => closed.add(i));
        s.resume();
        socks.push(s);
        await new Promise((r) => s.once('connect', r));
      }
      await waitUntil(() => closed.size >= 10);
      await new Promise((r) => setTimeout(r, 50)); // nothing else is closed
      expect([...closed].sort((a, b) => a - b)).toEqual(Array.from({ length: 10 }, (_, i) => i));
      expect(capped.closedWaiting).toBe(10);
      // the newest silent stream is still served when its request comes
      const newest = socks.at(-1)!;
      const got: Buffer[] = [];
      newest.on('data', (c: Buffer) => got.push(c));
      newest.write(encodeRequest({ op: 'dns', query: buildQuery(8, 'ok.test', 1) }));
      await waitUntil(() => Buffer.concat(got).length > 12);
      expect(Buffer.concat(got).subarray(0, 4).toString('latin1')).toBe('EGR1');
    } finally {
      for (const s of socks) s.destroy();
      await capped.close();
    }
  });

  it('passes an upstream reset mid-flow on as a reset: the enclave gets the bytes sent before it, then ECONNRESET', async () => {
    // the upstream sends a partial response, and resets once the enclave side shows it has read it
    const partial = 'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial-body';
    const upstream = net.createServer((s) => {
      s.on('error', () => {});
      s.write(partial);
      s.once('data', () => s.resetAndDestroy());
    });
    await new Promise<void>((r) => upstream.listen({ host: '127.0.0.2', port: 0 }, () => r()));
    try {
      const flow = await openFlow(tcp(lenient.port!), { ip: '127.0.0.2', port: (upstream.address() as net.AddressInfo).port, timeoutMs: 2_000, name: 'ok.test' });
      const got: Buffer[] = [];
      let ended = false;
      let error: NodeJS.ErrnoException | null = null;
      flow.on('end', () => {
        ended = true;
        flow.end(); // as an app would, having read to the end
      });
      flow.on('error', (e: NodeJS.ErrnoException) => (error = e));
      flow.on('data', (c: Buffer) => {
        got.push(c);
        if (Buffer.concat(got).toString('latin1') === partial) flow.write('next');
      });
      await new Promise((r) => flow.once('close', r));
      expect(Buffer.concat(got).toString('latin1')).toBe(partial); // nothing injected after the upstream's bytes
      expect(ended).toBe(false); // no clean FIN: the app must not take a cut response for a whole one
      expect(error).toMatchObject({ code: 'ECONNRESET' });
    } finally {
      await new Promise((r) => upstream.close(r));
    }
  });

  const valid = encodeRequest({ op: 'connect', ip: '127.0.0.2', port: 80, timeoutMs: 100, name: 'x' });
  const dnsFrame = (query: Buffer): Buffer => encodeRequest({ op: 'dns', query });
  const withFlags = (q: Buffer, flags: number): Buffer => {
    const c = Buffer.from(q);
    c.writeUInt16BE(c.readUInt16BE(2) | flags, 2);
    return c;
  };
  const withClass = (q: Buffer, cls: number): Buffer => {
    const c = Buffer.from(q);
    c.writeUInt16BE(cls, c.length - 2);
    return c;
  };
  const withQdcount = (q: Buffer, n: number): Buffer => {
    const c = Buffer.from(q);
    c.writeUInt16BE(n, 4);
    return c;
  };
  const withLen = (b: Buffer, len: number): Buffer => {
    const c = Buffer.from(b);
    c.writeUInt16BE(len, 6);
    return c;
  };
  it.each([
    ['bad magic', Buffer.concat([Buffer.from('EGR2'), valid.subarray(4)])],
    ['bad version', Buffer.concat([valid.subarray(0, 4), Buffer.from([2]), valid.subarray(5)])],
    ['unknown op', Buffer.concat([valid.subarray(0, 5), Buffer.from([9]), valid.subarray(6)])],
    ['CONNECT body over 1024 bytes', withLen(valid.subarray(0, 8), 2000)],
    ['a name with a non-printable byte', Buffer.concat([withLen(valid.subarray(0, 8), valid.length - 8), valid.subarray(8, -1), Buffer.from([0x7f])])],
    ['address family 5', Buffer.concat([valid.subarray(0, 8), Buffer.from([5]), valid.subarray(9)])],
    ['a body cut short by EOF', valid.subarray(0, 12)],
    ['a DNS query shorter than a header', Buffer.from('45475231010200050000000000', 'hex')],
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n')],
    // The DNS op carries a standard query (the enclave only ever builds one); anything else would reach the
    // parent's resolvers from the parent's address: a dynamic UPDATE, a NOTIFY, a forged response.
    ['a DNS UPDATE (opcode 5)', dnsFrame(withFlags(buildQuery(11, 'ok.test', 1), 5 << 11))],
    ['a DNS NOTIFY (opcode 4)', dnsFrame(withFlags(buildQuery(12, 'ok.test', 1), 4 << 11))],
    ['a DNS response (QR set) in place of a query', dnsFrame(withFlags(buildQuery(13, 'ok.test', 1), 0x8000))],
    ['a DNS message with two questions', dnsFrame(withQdcount(buildQuery(14, 'ok.test', 1), 2))],
    // A zone transfer is not a lookup: the parent's resolvers may allow one from the parent's own address.
    ['a zone transfer (AXFR)', dnsFrame(buildQuery(15, 'ok.test', 252))],
    ['an incremental zone transfer (IXFR)', dnsFrame(buildQuery(16, 'ok.test', 251))],
    ['a query of class CHAOS', dnsFrame(withClass(buildQuery(17, 'ok.test', 16), 3))],
  ])('closes the stream on %s without answering, and keeps serving', async (_what, bytes) => {
    const asked = dns.queries.length;
    const s = net.connect({ host: '127.0.0.1', port: strict.port! });
    const got: Buffer[] = [];
    s.on('data', (c: Buffer) => got.push(c));
    s.on('error', () => {});
    s.end(bytes);
    await new Promise((r) => s.once('close', r));
    expect(Buffer.concat(got).length).toBe(0);
    expect(dns.queries.length).toBe(asked); // nothing reached the resolver
    const answer = parseResponse(await dnsExchange(tcp(strict.port!), buildQuery(7, 'ok.test', 1), 2_000));
    expect(answer.answers).toHaveLength(1);
  });
});

describe('host dialer over vsock: only the agent it serves', () => {
  // Every enclave on the instance reaches the parent's vsock port; the dialer would dial for any of them, the
  // --allow-nonglobal private ranges included. A stand-in listener hands the dialer unix-socket connections
  // labelled with the peer CID the native vsock listener reports: the dialer's own code path from there on.
  const standIn = vsockStandIn(8001);
  afterAll(() => standIn.cleanup());

  it("closes a stream from another CID (or an unreadable one) unanswered, dials nothing for it, counts it; serves the agent's", async () => {
    const dialed: net.Socket[] = [];
    const upstream = net.createServer((s) => {
      dialed.push(s);
      s.on('error', () => {});
      s.end('upstream');
    });
    await new Promise<void>((r) => upstream.listen({ host: '127.0.0.2', port: 0 }, () => r()));
    const upstreamPort = (upstream.address() as net.AddressInfo).port;
    const warnings: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line) as Record<string, unknown>) });
    const dialer = await startEgressDialer({ listen: { kind: 'vsock', port: 8001, agentCid: 16 }, listenWith: standIn.listenWith, allowNonGlobal: ['127.0.0.2/32'], resolvers: [{ host: '127.0.0.1', port: dns.port }], logger });
    /** The enclave's end of a stream the listener reported from `info` (a DialerConnect). */
    const peer = (info: ConnectionInfo) => (): Promise<Duplex> => standIn.peer(info);
    /** Sends a valid CONNECT to the allowed private upstream and collects what comes back until the dialer closes. */
    const askUntilClosed = async (info: ConnectionInfo): Promise<number> => {
      const s = (await peer(info)()) as net.Socket;
      return new Promise((resolve) => {
        let n = 0;
        s.on('data', (b: Buffer) => (n += b.length));
        s.once('close', () => resolve(n));
        s.write(encodeRequest({ op: 'connect', ip: '127.0.0.2', port: upstreamPort, timeoutMs: 2_000, name: 'ok.test' }));
      });
    };
    try {
      for (const info of [
        { remote: 'vsock:17:1024', transport: 'vsock', peerCid: 17 }, // another enclave
        { remote: 'vsock:17:1025', transport: 'vsock', peerCid: 17 }, // the same one again
        { remote: 'vsock:3:1024', transport: 'vsock', peerCid: 3 }, // the parent itself
        { remote: 'vsock:?', transport: 'vsock' }, // the peer address could not be read
      ] as const) {
        expect([info.remote, await askUntilClosed(info)]).toEqual([info.remote, 0]);
      }
      await expect(dnsExchange(peer({ remote: 'vsock:18:1024', transport: 'vsock', peerCid: 18 }), buildQuery(3, 'ok.test', 1), 2_000)).rejects.toThrow();
      expect(dialer.foreignPeers).toBe(5);
      expect(dialed).toHaveLength(0);
      // warn once per refused CID, with the CID, never the request
      const refusals = warnings.filter((w) => /CID other than the agent/.test(String(w.msg)));
      expect(refusals.map((w) => w.peerCid)).toEqual([17, 3, null, 18]);
      expect(refusals.every((w) => w.servedCid === 16)).toBe(true);
      expect(JSON.stringify(warnings)).not.toMatch(/ok\.test|127\.0\.0\.2/);

      const flow = await openFlow(peer({ remote: 'vsock:16:1024', transport: 'vsock', peerCid: 16 }), { ip: '127.0.0.2', port: upstreamPort, timeoutMs: 2_000, name: 'ok.test' });
      const got: Buffer[] = [];
      flow.on('data', (b: Buffer) => got.push(b));
      await new Promise((r) => flow.once('end', r));
      expect(Buffer.concat(got).toString()).toBe('upstream');
      expect(dialed).toHaveLength(1);
      const answer = parseResponse(await dnsExchange(peer({ remote: 'vsock:16:1025', transport: 'vsock', peerCid: 16 }), buildQuery(4, 'ok.test', 1), 2_000));
      expect(answer.answers).toHaveLength(1);
      expect(dialer.foreignPeers).toBe(5);
      flow.destroy();
    } finally {
      await dialer.close();
      await new Promise((r) => upstream.close(r));
    }
  });

  it('without the CID of the agent it serves, it refuses to start (it would dial for every enclave)', async () => {
    const before = standIn.listened;
    for (const agentCid of [undefined, -1, 1.5, 0xffffffff]) {
      const listen = { kind: 'vsock', port: 8001, agentCid } as unknown as EgressDialerListen;
      await expect(startEgressDialer({ listen, listenWith: standIn.listenWith }), String(agentCid)).rejects.toMatchObject({ code: 'EGRESS_SETUP_FAILED', message: expect.stringContaining("agent's enclave CID") });
    }
    expect(standIn.listened).toBe(before);
  });
});

describe('bridge --egress', () => {
  it('parses where the dialer listens, its resolvers and allowed prefixes', () => {
    const o = parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--egress', 'unix:/run/egress.sock', '--egress-resolver', '10.0.0.2', '--egress-allow-nonglobal', '10.1.0.0/16']);
    expect(o.egress).toEqual({ listen: { kind: 'unix', path: '/run/egress.sock' }, allowNonGlobal: ['10.1.0.0/16'], resolvers: [{ host: '10.0.0.2', port: 53 }] });
    expect(parseBridgeArgs(['--enclave-cid', '16', '--egress', 'vsock']).egress?.listen).toEqual({ kind: 'vsock', port: 8001, agentCid: 16 });
    expect(parseBridgeArgs(['--agent', 'vsock:21:5000', '--egress', 'vsock:9001']).egress?.listen).toEqual({ kind: 'vsock', port: 9001, agentCid: 21 });
    expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--egress-resolver', '1.1.1.1'])).toThrow(/need --egress/);
    expect(parseBridgeArgs(['--enclave-cid', '16', '--egress', 'vsock', '--egress-max-flows', '64']).egress?.maxFlows).toBe(64);
    expect(parseBridgeArgs(['--enclave-cid', '16', '--egress', 'vsock']).egress?.maxFlows).toBeUndefined();
    expect(() => parseBridgeArgs(['--enclave-cid', '16', '--egress', 'vsock', '--egress-max-flows', '0'])).toThrow(/--egress-max-flows/);
    expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--egress-max-flows', '8'])).toThrow(/need --egress/);
  });

  it('over vsock it needs a vsock agent (its CID is the only one served): with a tcp/unix agent it is refused', () => {
    for (const a of [['--agent', 'tcp:127.0.0.1:5000'], ['--agent', 'unix:/run/agent.sock']]) {
      for (const where of ['vsock', 'vsock:9001']) {
        expect(() => parseBridgeArgs([...a, '--egress', where]), `${a.join(' ')} ${where}`).toThrow(CliUsageError);
        expect(() => parseBridgeArgs([...a, '--egress', where])).toThrow(/--egress.*vsock agent.*tcp:127\.0\.0\.1:PORT or unix:\/path/);
      }
    }
    expect(parseBridgeArgs(['--agent', 'unix:/run/agent.sock', '--egress', 'tcp:127.0.0.1:8001']).egress?.listen).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 8001 });
    expect(bridgeCommand.help).toMatch(/--egress[\s\S]*only the agent's CID/);
  });

  it('over tcp listens on loopback only: any other host is refused naming --egress, before anything listens', async () => {
    // Anyone who reaches a non-loopback dialer port could have it dial any global address: an open proxy.
    for (const host of ['0.0.0.0', '[::]', '10.0.0.1', 'example.com']) {
      expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--egress', `tcp:${host}:8001`]), host).toThrow(CliUsageError);
      expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--egress', `tcp:${host}:8001`]), host).toThrow(/--egress.*loopback only/);
    }
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) {
      await expect(startEgressDialer({ listen: { kind: 'tcp', host, port: 0 } }), host).rejects.toMatchObject({ code: 'EGRESS_SETUP_FAILED', message: expect.stringContaining(host) });
    }
    for (const host of ['127.0.0.1', '[::1]', 'localhost']) {
      expect(parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--egress', `tcp:${host}:8001`]).egress?.listen, host).toMatchObject({ kind: 'tcp', port: 8001 });
    }
    const local = await startEgressDialer({ listen: { kind: 'tcp', host: '::1', port: 0 } });
    expect(local.port).toBeGreaterThan(0);
    await local.close();
    expect(bridgeCommand.help).toMatch(/--egress[\s\S]*tcp:127\.0\.0\.1:PORT \(loopback only\)/);
  });
});

async function waitUntil(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}
