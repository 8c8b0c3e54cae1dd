// Name → IPv4 addresses for egress, through the host's resolvers (the flow protocol's DNS op). Addresses the
// caller's `keep` refuses (loopback, private, link-local incl. 169.254.169.254, ... unless an IP/CIDR entry
// covers them on the port dialled: EgressPolicy.resolvedAddressAllowed) are set apart here, so DNS rebinding
// never yields a dialable address.
import { randomInt } from 'node:crypto';
import { buildQuery, parseResponse, QTYPE, RCODE } from './dns-message.ts';
import { EgressError } from './errors.ts';

export type DnsTransport = (query: Buffer) => Promise<Buffer>;

export interface Resolved {
  /** Addresses the policy lets a name entry reach, with their TTLs. */
  allowed: { ip: string; ttl: number }[];
  /** Addresses the resolver returned that the policy refuses (non-global). */
  refused: string[];
}

export async function resolveA(name: string, dns: DnsTransport, keep: (ip: string) => boolean): Promise<Resolved> {
  const id = randomInt(0, 0x10000);
  const res = parseResponse(await dns(buildQuery(id, name, QTYPE.A)));
  if (res.id !== id) throw new EgressError('EGRESS_RESOLVER_ERROR', `DNS answer id ${res.id} does not match the query's ${id}`);
  if (res.rcode !== RCODE.NOERROR) {
    const what = res.rcode === RCODE.NXDOMAIN ? 'NXDOMAIN' : `rcode ${res.rcode}`;
    throw new EgressError('EGRESS_RESOLVER_ERROR', `resolving ${name}: ${what}`);
  }
  const out: Resolved = { allowed: [], refused: [] };
  for (const a of res.answers) {
    if (a.type !== QTYPE.A || !('address' in a)) continue;
    if (keep(a.address)) out.allowed.push({ ip: a.address, ttl: a.ttl });
    else out.refused.push(a.address);
  }
  return out;
}
