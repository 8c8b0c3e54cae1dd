// The parent instance's own interface addresses. A flow the dialer opens to one of them reaches the parent's own
// services (anything bound to 0.0.0.0 or ::: the bridge's ports, an SSH daemon, a metadata proxy) from inside the
// instance, past its security groups — global or not, it is no destination for an enclave. Read from the
// interfaces, at most every few seconds (an address can be added while the bridge runs: a new ENI, IPv6).
import net from 'node:net';
import os from 'node:os';
import { unmapIpv4 } from '../egress/address-class.ts';

const REFRESH_MS = 5_000;

let cache: { readAt: number; addresses: Set<string> } | null = null;

/** One spelling per address: IPv4-mapped as IPv4, IPv6 compressed as the socket layer writes it. */
function canonical(ip: string): string {
  const v = unmapIpv4(ip.split('%')[0]!);
  return net.isIPv6(v) ? new net.SocketAddress({ address: v, family: 'ipv6' }).address : v;
}

/** True when `ip` is an address of one of this host's interfaces. */
export function isOwnAddress(ip: string): boolean {
  const now = Date.now();
  if (cache === null || now - cache.readAt >= REFRESH_MS) {
    const addresses = new Set<string>();
    for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) addresses.add(canonical(a.address));
    cache = { readAt: now, addresses };
  }
  return cache.addresses.has(canonical(ip)); // the set holds interface addresses only: nothing else matches
}
