// The transparent listener's decisions without iptables: the original destination is injected (in an enclave it
// comes from SO_ORIGINAL_DST after REDIRECT; transparent.test.ts covers that path as root). Pins decide which
// addresses a name reached; sni_check holds a TLS flow to the names its address was resolved for.
// Pins authorise global addresses only, so the server stands at PUBLIC_IP: a shim in front of the real host
// dialer (a NAT, as far as the enclave can tell) dials 127.0.0.2 when told PUBLIC_IP.
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecisionLog, type EgressDecision } from '../../src/egress/decision-log.ts';
import { FlowTracker } from '../../src/egress/flow-tracker.ts';
import type { OriginalDst } from '../../src/egress/original-dst.ts';
import { PinTable } from '../../src/egress/pin-table.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';
import { startTransparentListener, type TransparentListener } from '../../src/egress/transparent-listener.ts';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { connectStream } from '../../src/transport/connect.ts';
import { selfSignedCert } from '../host/self-signed.ts';
import { publicIp, startFlowNat } from './helpers.ts';

const PUBLIC_IP = publicIp(7);
const SERVER_IP = '127.0.0.2';
let dialer: EgressDialer;
let nat: net.Server;
let server: tls.Server;
let port: number;
let bytesAtServer = 0;
const decisions: EgressDecision[] = [];
const listeners: TransparentListener[] = [];
let dst: OriginalDst;

async function listener(sniCheck: boolean, destinations: string[]): Promise<number> {
  const pins = new PinTable();
  pins.pin('ok.test', PUBLIC_IP, 60);
  pins.pin('ok.test', SERVER_IP, 60); // a non-global answer: a pin alone never authorises it
  const log = new DecisionLog({ onDecision: (d) => decisions.push(d) });
  const l = await startTransparentListener({
    port: 0,
    policy: new EgressPolicy(destinations),
    pins,
    dialer: () => connectStream({ kind: 'tcp', host: '127.0.0.1', port: (nat.address() as net.AddressInfo).port }),
    connectTimeoutMs: 2_000,
    sniCheck,
    log,
    flows: new FlowTracker(log),
    originalDst: () => dst,
  });
  listeners.push(l);
  return l.port;
}

/** What a client read through the listener ('' when cut). */
function through(listenPort: number, servername: string | null): Promise<string> {
  return new Promise((resolve) => {
    const raw = net.connect({ host: '127.0.0.1', port: listenPort });
    raw.on('error', () => resolve(''));
    if (servername === null) {
      let got = '';
      raw.on('data', (c: Buffer) => (got += c.toString()));
      raw.on('close', () => resolve(got));
      raw.write('GET / HTTP/1.0\r\n\r\n');
      return;
    }
    const t = tls.connect({ socket: raw, servername, rejectUnauthorized: false });
    let got = '';
    t.on('data', (c: Buffer) => (got += c.toString()));
    t.on('end', () => resolve(got));
    t.on('close', () => resolve(got));
    t.on('error', () => {});
  });
}

beforeAll(async () => {
  const { cert, key } = await selfSignedCert('ok.test');
  server = tls.createServer({ cert, key }, (s) => {
    s.on('error', () => {});
    s.end('hello over tls\n');
  });
  server.on('connection', (raw: net.Socket) => raw.on('data', (c: Buffer) => (bytesAtServer += c.length)));
  await new Promise<void>((r) => server.listen({ host: '127.0.0.2', port: 0 }, () => r()));
  port = (server.address() as net.AddressInfo).port;
  dialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, allowNonGlobal: ['127.0.0.0/8'], resolvers: [] });
  nat = await startFlowNat({ host: '127.0.0.1', port: 0 }, { host: '127.0.0.1', port: dialer.port! }, { [PUBLIC_IP]: SERVER_IP });
});
afterAll(async () => {
  for (const l of listeners) await l.close();
  nat?.close();
  await dialer?.close();
  server?.close();
});

describe('transparent listener', () => {
  it('allows an address pinned for an allowed name on its port, and nothing else', async () => {
    const p = await listener(false, [`ok.test:${port}`, `127.0.0.9:${port}`]);
    dst = { address: PUBLIC_IP, port, family: 4 };
    expect(await through(p, 'ok.test')).toBe('hello over tls\n');
    const before = bytesAtServer;
    dst = { address: publicIp(8), port, family: 4 }; // never resolved through the stub
    expect(await through(p, 'ok.test')).toBe('');
    dst = { address: PUBLIC_IP, port: port + 1, family: 4 }; // pinned, but not on that port
    expect(await through(p, 'ok.test')).toBe('');
    dst = { address: '::1', port, family: 6 };
    expect(await through(p, 'ok.test')).toBe('');
    expect(bytesAtServer).toBe(before);
    expect(decisions.filter((d) => !d.allowed).map((d) => d.reason)).toEqual([
      'address not on the allow-list nor resolved for an allowed name',
      'port not allowed for the names this address was resolved for',
      'IPv6 egress is off',
    ]);
  });

  it('allows a pinned non-global address only where an IP entry covers its port (a pin alone never does)', async () => {
    // ok.test is pinned to 127.0.0.2 too; the IP entry gives that address port 1 only. Failed before the fix:
    // any IP entry naming the address made the pin good on every port of the name's entry.
    const p = await listener(false, [`ok.test:${port}`, `${SERVER_IP}:1`]);
    const before = bytesAtServer;
    const seen = decisions.length;
    dst = { address: SERVER_IP, port, family: 4 };
    expect(await through(p, 'ok.test')).toBe('');
    expect(bytesAtServer).toBe(before);
    expect(decisions.slice(seen)).toEqual([expect.objectContaining({ allowed: false, ip: SERVER_IP, port })]);
    const q = await listener(false, [`ok.test:${port}`, `${SERVER_IP}:${port}`]);
    expect(await through(q, 'ok.test')).toBe('hello over tls\n'); // the IP entry on this port allows it
  });

  it('with sni_check, passes TLS naming a pinned name and cuts another name, no SNI, and non-TLS', async () => {
    const p = await listener(true, [`ok.test:${port}`, `front.test:${port}`]);
    dst = { address: PUBLIC_IP, port, family: 4 };
    expect(await through(p, 'ok.test')).toBe('hello over tls\n');
    const before = bytesAtServer;
    expect(await through(p, 'front.test')).toBe(''); // allowed name, but this address was not resolved for it
    expect(await through(p, '')).toBe('');
    expect(await through(p, null)).toBe('');
    expect(bytesAtServer).toBe(before);
  });
});
