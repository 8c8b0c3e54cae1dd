// Past twice [egress] max_proxy_connections plus max_flows (connections being set up, flows, and refused ones still
// being answered), Node closes new
// explicit-proxy connections at accept (server.maxConnections) and they never reach the proxy's handler: each is
// still recorded as EGRESS_PROXY_BUSY and counted `busy`, from the server's 'drop' event, without the client's address.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ConnectionSlots } from '../../src/egress/connection-slots.ts';
import { DecisionLog, egressCounters, type EgressDecision } from '../../src/egress/decision-log.ts';
import { startExplicitProxy, type ExplicitProxy } from '../../src/egress/explicit-proxy.ts';
import { FlowTracker } from '../../src/egress/flow-tracker.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';

const decisions: EgressDecision[] = [];
const log = new DecisionLog({ onDecision: (d) => decisions.push(d) });
const slots = new ConnectionSlots(1, log, 1);
const notDialled = (): Promise<never> => Promise.reject(new Error('not dialled'));
let proxy: ExplicitProxy;
const sockets: net.Socket[] = [];

/**
 * A connection that writes `first` once connected; `read` is what it read when it closes. `halfOpen`: it does not
 * end its side when the proxy ends its own, so a refused one keeps its server socket for the linger.
 */
function connect(first: string, halfOpen = false): { socket: net.Socket; read: Promise<string> } {
  const socket = net.connect({ host: '127.0.0.1', port: proxy.port, allowHalfOpen: halfOpen }, () => socket.write(first));
  sockets.push(socket);
  socket.on('error', () => {});
  let got = '';
  socket.on('data', (c: Buffer) => (got += c.toString('latin1')));
  return { socket, read: new Promise((resolve) => socket.on('close', () => resolve(got))) };
}

beforeAll(async () => {
  // The refused connection lingers for its answer longer than this test runs: no race with its release.
  proxy = await startExplicitProxy({ port: 0, policy: new EgressPolicy(['ok.test:443']), dialer: notDialled, dns: notDialled, connectTimeoutMs: 1_000, log, flows: new FlowTracker(log), sniCheck: false, slots, lingerTimeoutMs: 60_000, lingerTimeMs: 60_000 });
});
afterAll(async () => {
  for (const s of sockets) s.destroy();
  await proxy?.close();
});

describe('explicit proxy: connections Node closes at accept', () => {
  it('records and counts busy each connection past server.maxConnections (2 x 1 + 1 here)', { timeout: 15_000 }, async () => {
    const half = 'CONNECT ok.test:443 HTTP/1.1\r\n';
    connect(half); // served: holds the one slot with half a head
    await vi.waitFor(() => expect(slots.setup).toBe(1), { timeout: 5_000, interval: 10 });
    const refused = [connect(half, true), connect(half, true)]; // answered 503 and lingering: the second and third
    await vi.waitFor(() => expect(decisions).toHaveLength(2), { timeout: 5_000, interval: 10 });
    for (const d of decisions) expect(d).toMatchObject({ busy: true, code: 'EGRESS_PROXY_BUSY' });
    const busyBefore = egressCounters.busy;

    const dropped = connect(half);
    expect(await dropped.read).toBe('');
    await vi.waitFor(() => expect(decisions).toHaveLength(3), { timeout: 5_000, interval: 10 });
    expect(decisions[2]).toEqual(expect.objectContaining({ allowed: false, via: 'explicit', ip: null, port: 0, busy: true, code: 'EGRESS_PROXY_BUSY', reason: expect.stringContaining('3 connections open') }));
    expect(decisions[2]!.reason).toContain('closed at accept');
    expect(decisions[2]!.reason).not.toContain('127.0.0.1');
    expect(egressCounters.busy).toBe(busyBefore + 1);
    for (const r of refused) expect(r.socket.destroyed).toBe(false); // still there: they are what kept the fourth out
  });
});
