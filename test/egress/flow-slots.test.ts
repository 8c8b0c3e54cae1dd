// [egress] max_proxy_connections bounds the connections being set up (head, dial, SNI); [egress] max_flows bounds,
// on its own, the flows whose upstream is open. Long-lived flows (a database pool) no longer count against the
// set-up bound, and connections still being set up do not count against the flows: with max_proxy_connections = 2,
// three open flows leave both set-up slots free; the one over max_flows is refused EGRESS_PROXY_BUSY naming
// max_flows, its upstream closed; after a flow closes the next is served. The same on the transparent listener.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { ConnectionSlots } from '../../src/egress/connection-slots.ts';
import { DecisionLog, egressCounters, type EgressDecision } from '../../src/egress/decision-log.ts';
import { FlowTracker } from '../../src/egress/flow-tracker.ts';
import { PinTable } from '../../src/egress/pin-table.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';
import { startTransparentListener, type TransparentListener } from '../../src/egress/transparent-listener.ts';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { connectStream } from '../../src/transport/connect.ts';
import { connectVia, exchange, rawRequest, startStack, startTestDns, type Stack, type TestDns } from './helpers.ts';

const SERVER_IP = '127.0.0.2';

/** An upstream that holds every connection open until its client half-closes, then echoes what it got, reversed. */
async function startUpstream(): Promise<{ port: number; accepted: () => number; open: () => number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => {});
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => s.end(Buffer.concat(chunks).reverse()));
  });
  await new Promise<void>((r) => server.listen({ host: SERVER_IP, port: 0 }, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    open: () => sockets.size,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A connection that sends half a request head and waits: held in set-up. */
function holdHead(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.write('CONNECT ok.test:443 HTTP/1.1\r\n');
      resolve(s);
    });
    s.on('error', reject);
  });
}

describe('[egress] max_flows', () => {
  it('defaults to 1024 and refuses a value under 1, naming the key', () => {
    expect(configFromObject({ egress: { enabled: true } }).egress.max_flows).toBe(1024);
    expect(() => configFromObject({ egress: { enabled: true, max_flows: 0 } })).toThrow(/egress\.max_flows/);
  });
});

describe('explicit proxy: set-up connections and open flows are bounded apart', () => {
  let dns: TestDns;
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let stack: Stack;
  const proxyPort = (): number => Number(new URL(stack.egress.proxyUrl).port);
  const target = (): string => `${SERVER_IP}:${up.port}`;

  beforeAll(async () => {
    dns = await startTestDns({});
    up = await startUpstream();
    stack = await startStack([`${SERVER_IP}:${up.port}`], dns.port, { max_proxy_connections: 2, max_flows: 3 });
  });
  afterAll(async () => {
    await stack?.close();
    await up?.close();
    await dns?.close();
  });

  it('three long-lived flows leave both set-up slots free; a fourth flow is refused naming max_flows, then served once one closes', async () => {
    const sockets: net.Socket[] = [];
    try {
      // Failed before the fix: the third CONNECT was answered 503 (the two open flows held both slots).
      const flows = [];
      for (let i = 0; i < 3; i++) {
        const f = await connectVia(proxyPort(), target());
        sockets.push(f.socket);
        expect(f.status).toBe(200);
        flows.push(f);
      }
      await vi.waitFor(() => expect(up.open()).toBe(3), { timeout: 5_000, interval: 10 });

      // The set-up bound is whole: two connections holding half a head are served, a third is refused.
      sockets.push(await holdHead(proxyPort()), await holdHead(proxyPort()));
      const refusedSetup = await rawRequest(proxyPort(), `CONNECT ${target()} HTTP/1.1\r\n\r\n`);
      expect(refusedSetup.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
      expect(refusedSetup).toContain('[egress] max_proxy_connections');
      for (const s of sockets.splice(3)) s.destroy();
      // A set-up slot is free again once a refused destination is answered 403 (it takes no flow slot).
      await vi.waitFor(async () => expect((await rawRequest(proxyPort(), 'CONNECT 127.0.0.3:1 HTTP/1.1\r\n\r\n')).split('\r\n')[0]).toBe('HTTP/1.1 403 Forbidden'), { timeout: 5_000, interval: 20 });

      // The flow bound: a fourth flow is dialled, then refused; its upstream connection is closed.
      const busyBefore = egressCounters.busy;
      const acceptedBefore = up.accepted();
      const fourth = await rawRequest(proxyPort(), `CONNECT ${target()} HTTP/1.1\r\n\r\n`);
      expect(fourth.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
      expect(fourth).toContain('egress proxy: 3 flows open ([egress] max_flows)');
      expect(egressCounters.busy).toBe(busyBefore + 1);
      expect(stack.decisions.at(-1)).toMatchObject({ allowed: false, via: 'explicit', ip: SERVER_IP, port: up.port, busy: true, code: 'EGRESS_PROXY_BUSY' });
      expect(up.accepted()).toBe(acceptedBefore + 1);
      await vi.waitFor(() => expect(up.open()).toBe(3), { timeout: 5_000, interval: 10 });

      // The open flows still carry bytes both ways; one ends, and a new flow is served.
      const first = flows.shift()!;
      sockets.shift();
      expect((await exchange(first.socket, Buffer.from('abc'), first.rest)).toString()).toBe('cba');
      await vi.waitFor(
        async () => {
          const f = await connectVia(proxyPort(), target());
          sockets.push(f.socket);
          expect(f.status).toBe(200);
        },
        { timeout: 5_000, interval: 20 },
      );
    } finally {
      for (const s of sockets) s.destroy();
    }
  });
});

describe('transparent listener: set-up connections and open flows are bounded apart', () => {
  const decisions: EgressDecision[] = [];
  const log = new DecisionLog({ onDecision: (d) => decisions.push(d) });
  const slots = new ConnectionSlots(1, log, 1);
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let dialer: EgressDialer;
  let listener: TransparentListener;

  beforeAll(async () => {
    up = await startUpstream();
    dialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [], allowNonGlobal: [`${SERVER_IP}/32`] });
    const dst = { address: SERVER_IP, port: up.port, family: 4 as const };
    listener = await startTransparentListener({
      port: 0,
      policy: new EgressPolicy([`${SERVER_IP}:${up.port}`]),
      pins: new PinTable(),
      dialer: () => connectStream({ kind: 'tcp', host: '127.0.0.1', port: dialer.port! }),
      connectTimeoutMs: 2_000,
      sniCheck: false,
      log,
      flows: new FlowTracker(log),
      originalDst: () => dst,
      slots,
    });
  });
  afterAll(async () => {
    await listener?.close();
    await dialer?.close();
    await up?.close();
  });

  it('a relaying flow gives its set-up slot back; the one over max_flows is reset, recorded naming max_flows', async () => {
    const flow = net.connect({ host: '127.0.0.1', port: listener.port, allowHalfOpen: true });
    flow.on('error', () => {});
    try {
      await vi.waitFor(() => expect(slots.flows).toBe(1), { timeout: 5_000, interval: 10 });
      // Failed before the fix: the flow kept the only slot, so the next was refused at set-up (max_proxy_connections).
      await vi.waitFor(() => expect(slots.setup).toBe(0), { timeout: 5_000, interval: 10 });
      const seen = decisions.length;
      const second = net.connect({ host: '127.0.0.1', port: listener.port });
      second.on('error', () => {});
      await new Promise((r) => second.once('close', r));
      expect(decisions.slice(seen)).toEqual([
        expect.objectContaining({ allowed: false, via: 'transparent', ip: SERVER_IP, port: up.port, busy: true, code: 'EGRESS_PROXY_BUSY', reason: expect.stringContaining('[egress] max_flows') }),
      ]);
      await vi.waitFor(() => expect(up.open()).toBe(1), { timeout: 5_000, interval: 10 });
      // The first flow still relays.
      const got = new Promise<string>((resolve) => {
        let s = '';
        flow.on('data', (c: Buffer) => (s += c.toString()));
        flow.on('end', () => resolve(s));
      });
      flow.end('xyz');
      expect(await got).toBe('zyx');
    } finally {
      flow.destroy();
    }
  });
});
