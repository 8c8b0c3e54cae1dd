// Transparent mode's listener on 127.0.0.1:transparent_port: iptables REDIRECTs the enclave's outbound TCP
// here; the original destination (SO_ORIGINAL_DST) decides:
//   an IP/CIDR entry covers ip:port                                   → allowed (name "")
//   the DNS stub pinned ip to an allowed name whose entry covers port → allowed under that name (global
//                                                                       addresses only: a non-global one needs
//                                                                       the IP entry on that port)
//   anything else (a raw IP, a name off the list, IPv6, a stale pin)  → reset
// With sni_check, a flow allowed by a name must open with a TLS ClientHello naming one of the names ip is
// pinned to (and allowed on that port). Each connection takes a setup slot shared with the explicit proxy until its
// bytes are relayed (connection-slots.ts: it may wait up to SNI_TIMEOUT_MS for the SNI), one over that bound reset at
// once; and a flow slot once its upstream is open, one over that bound reset (upstream closed).
import net from 'node:net';
import { isNonGlobal } from './address-class.ts';
import { ConnectionSlots, DEFAULT_MAX_PROXY_CONNECTIONS, type ConnectionSlot } from './connection-slots.ts';
import type { DecisionLog } from './decision-log.ts';
import { EgressError } from './errors.ts';
import { openFlow, type DialerConnect } from './flow-client.ts';
import type { FlowTracker } from './flow-tracker.ts';
import type { OriginalDst } from './original-dst.ts';
import type { PinTable } from './pin-table.ts';
import type { EgressPolicy } from './policy.ts';
import { peekSni, sniForLog } from './sni.ts';
import { allowHalfOpen } from './splice.ts';

const SNI_TIMEOUT_MS = 10_000;

export interface TransparentOptions {
  port: number;
  policy: EgressPolicy;
  pins: PinTable;
  dialer: DialerConnect;
  connectTimeoutMs: number;
  sniCheck: boolean;
  log: DecisionLog;
  flows: FlowTracker;
  originalDst: (socket: net.Socket) => OriginalDst;
  /** The bounds on app connections, shared with the explicit proxy (default: own, at their defaults). */
  slots?: ConnectionSlots;
}

export interface TransparentListener {
  readonly port: number;
  close(): Promise<void>;
}

/** The name a flow to ip:port is allowed under ("" for an IP entry), or null. */
export function authorizeFlow(policy: EgressPolicy, pins: PinTable, ip: string, port: number): { name: string; candidates: string[] } | null {
  if (policy.matchIp(ip, port) !== null) return { name: '', candidates: [] };
  if (isNonGlobal(ip)) return null;
  const names = pins.namesFor(ip).filter((n) => policy.matchName(n, port) !== null);
  return names.length === 0 ? null : { name: names[0]!, candidates: names };
}

export async function startTransparentListener(opts: TransparentOptions): Promise<TransparentListener> {
  const slots = opts.slots ?? new ConnectionSlots(DEFAULT_MAX_PROXY_CONNECTIONS, opts.log);
  const handle = async (socket: net.Socket, slot: ConnectionSlot): Promise<void> => {
    const startedAt = performance.now();
    allowHalfOpen(socket);
    socket.on('error', () => {});
    let dst: OriginalDst;
    try {
      dst = opts.originalDst(socket);
    } catch {
      socket.resetAndDestroy(); // connected to the port directly, not redirected
      return;
    }
    const deny = (reason: string, name = ''): void => {
      opts.log.record({ allowed: false, via: 'transparent', name, ip: dst.address, port: dst.port, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - startedAt, reason });
      socket.resetAndDestroy();
    };
    if (dst.family !== 4) return deny('IPv6 egress is off');
    const auth = authorizeFlow(opts.policy, opts.pins, dst.address, dst.port);
    if (auth === null) return deny(opts.pins.namesFor(dst.address).length > 0 ? 'port not allowed for the names this address was resolved for' : 'address not on the allow-list nor resolved for an allowed name');
    let name = auth.name;
    if (opts.sniCheck && name !== '') {
      const sni = await peekSni(socket, SNI_TIMEOUT_MS);
      if (sni.kind !== 'sni' || !auth.candidates.includes(sni.name)) return deny(sni.kind === 'sni' ? `TLS SNI ${sniForLog(sni.name)} was not resolved to this address` : 'no TLS SNI (sni_check)', name);
      name = sni.name;
    }
    let upstream;
    try {
      upstream = await openFlow(opts.dialer, { ip: dst.address, port: dst.port, timeoutMs: opts.connectTimeoutMs, name });
    } catch (err) {
      opts.log.record({ allowed: false, via: 'transparent', name, ip: dst.address, port: dst.port, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - startedAt, reason: err instanceof EgressError ? err.message : String(err), failed: !(err instanceof EgressError && err.code === 'EGRESS_DENIED'), busy: err instanceof EgressError && err.code === 'EGRESS_DIALER_BUSY' });
      socket.resetAndDestroy();
      return;
    }
    if (socket.destroyed) {
      upstream.destroy();
      return;
    }
    if (!slot.startFlow()) {
      upstream.destroy();
      slots.refuseFlow('transparent', name, { ip: dst.address, port: dst.port });
      socket.resetAndDestroy();
      return;
    }
    slot.relaying();
    await opts.flows.run(socket, upstream, { via: 'transparent', name, ip: dst.address, port: dst.port, startedAt });
  };

  /** No HTTP here to answer with: recorded (with its destination when it has one) and reset before a byte is read. */
  const refuseBusy = (socket: net.Socket): void => {
    socket.on('error', () => {});
    let dst: { ip: string; port: number } | null = null;
    try {
      const d = opts.originalDst(socket);
      dst = { ip: d.address, port: d.port };
    } catch {
      // connected to the port directly: recorded without a destination
    }
    slots.refuse('transparent', dst);
    socket.resetAndDestroy();
  };
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    const slot = slots.take(s);
    if (slot === null) return refuseBusy(s);
    void handle(s, slot).catch(() => s.destroy());
  });
  server.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new EgressError('EGRESS_SETUP_FAILED', `transparent egress: cannot listen on 127.0.0.1:${opts.port}: ${err.code ?? err.message}`)));
    server.listen({ host: '127.0.0.1', port: opts.port }, () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close();
        setImmediate(resolve);
      }),
  };
}
