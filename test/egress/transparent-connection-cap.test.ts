// [egress] max_proxy_connections bounds the transparent listener too, in one count with the explicit proxy: each
// served connection may wait up to 10 s for its TLS SNI (sni_check). One over the bound is reset at once — no
// HTTP to answer with — recorded as EGRESS_PROXY_BUSY with its original destination and counted `busy`; once a
// served connection closes, the next is served again.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ConnectionSlots } from '../../src/egress/connection-slots.ts';
import { DecisionLog, egressCounters, type EgressDecision } from '../../src/egress/decision-log.ts';
import { startExplicitProxy, type ExplicitProxy } from '../../src/egress/explicit-proxy.ts';
import { FlowTracker } from '../../src/egress/flow-tracker.ts';
import { PinTable } from '../../src/egress/pin-table.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';
import { startTransparentListener, type TransparentListener } from '../../src/egress/transparent-listener.ts';
import { publicIp } from './helpers.ts';

const DST = { address: publicIp(9), port: 443, family: 4 as const };
const decisions: EgressDecision[] = [];
const log = new DecisionLog({ onDecision: (d) => decisions.push(d) });
const slots = new ConnectionSlots(2, log);
const notDialled = (): Promise<never> => Promise.reject(new Error('not dialled'));
let dstReads = 0;
let transparent: TransparentListener;
let explicit: ExplicitProxy;

/** Connects and writes `first` (nothing when ''); resolves once connected. */
function open(port: number, first = ''): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      if (first !== '') s.write(first);
      resolve(s);
    });
    s.on('error', reject);
  });
}

/** What a connection read before it closed, writing `first` once connected (a reset may come before that). */
function readToClose(port: number, first = ''): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      if (first !== '') s.write(first);
    });
    s.on('error', () => {});
    s.on('data', (c: Buffer) => (got += c.toString('latin1')));
    s.on('close', () => resolve(got));
  });
}

beforeAll(async () => {
  const policy = new EgressPolicy(['ok.test:443']);
  const pins = new PinTable();
  pins.pin('ok.test', DST.address, 60);
  const flows = new FlowTracker(log);
  transparent = await startTransparentListener({ port: 0, policy, pins, dialer: notDialled, connectTimeoutMs: 1_000, sniCheck: true, log, flows, originalDst: () => (dstReads++, DST), slots });
  explicit = await startExplicitProxy({ port: 0, policy, dialer: notDialled, dns: notDialled, connectTimeoutMs: 1_000, log, flows, sniCheck: false, slots });
});
afterAll(async () => {
  await transparent?.close();
  await explicit?.close();
});

describe('transparent listener: connections served at once', () => {
  it('resets one over the shared bound at once, recorded EGRESS_PROXY_BUSY and counted busy; serves again after a close', async () => {
    // One connection holding half a head on the explicit proxy, one waiting for its SNI on the transparent listener.
    const held = [await open(explicit.port, 'CONNECT ok.test:443 HTTP/1.1\r\n')];
    try {
      await vi.waitFor(() => expect(slots.setup).toBe(1), { timeout: 5_000, interval: 10 });
      held.push(await open(transparent.port));
      await vi.waitFor(() => expect(dstReads).toBe(1), { timeout: 5_000, interval: 10 });
      const busyBefore = egressCounters.busy;
      const seen = decisions.length;

      expect(await readToClose(transparent.port)).toBe('');
      expect(decisions.slice(seen)).toEqual([
        expect.objectContaining({ allowed: false, via: 'transparent', ip: DST.address, port: DST.port, busy: true, code: 'EGRESS_PROXY_BUSY', reason: expect.stringContaining('[egress] max_proxy_connections') }),
      ]);
      expect(egressCounters.busy).toBe(busyBefore + 1);

      held.shift()!.destroy(); // the explicit one: its slot serves the transparent listener
      await vi.waitFor(() => expect(slots.setup).toBe(1), { timeout: 5_000, interval: 10 });
      // Served: its bytes are read and refused by sni_check (not TLS), not by the bound.
      expect(await readToClose(transparent.port, 'GET / HTTP/1.0\r\n\r\n')).toBe('');
      expect(decisions.at(-1)).toMatchObject({ allowed: false, via: 'transparent', reason: 'no TLS SNI (sni_check)' });
      expect(decisions.at(-1)!.busy).not.toBe(true);
      expect(egressCounters.busy).toBe(busyBefore + 1);
    } finally {
      for (const s of held) s.destroy();
    }
  });
});
