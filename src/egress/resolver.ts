// Name → IPv4 addresses for egress, through the host's resolvers (the flow protocol's DNS op). Addresses the
// caller's `keep` refuses (loopback, private, link-local incl. 169.254.169.254, ... unless an IP/CIDR entry
// covers them on the port dialled: EgressPolicy.resolvedAddressAllowed) are set apart here, so DNS rebinding
// never yields a dialable address.
import { randomInt } from 'node:crypto';
import { buildQuery, parseResponse, QTYPE, RCODE } from './dns-message.ts';
import { EgressError } from './errors.ts';

export type DnsTransport = (query: Buffer) => Promise<Buffer>;

/**
 * Host DNS exchanges in flight at once, process-wide (explicit mode and the DNS stub together). Each is a stream
 * to the host dialer, which serves a bounded number of streams: past this, a query is refused at once
 * (EGRESS_DIALER_BUSY: the stub answers SERVFAIL, the proxy 503) rather than starving the app's flows.
 */
export const MAX_DNS_IN_FLIGHT = 64;
let dnsInFlight = 0;

/** One host DNS exchange, or EGRESS_DIALER_BUSY when MAX_DNS_IN_FLIGHT are already out. */
async function gated(dns: DnsTransport, query: Buffer): Promise<Buffer> {
  if (dnsInFlight >= MAX_DNS_IN_FLIGHT) throw new EgressError('EGRESS_DIALER_BUSY', `${MAX_DNS_IN_FLIGHT} host DNS queries are in flight already`);
  dnsInFlight++;
  try {
    return await dns(query);
  } finally {
    dnsInFlight--;
  }
}

export interface Resolved {
  /** Addresses the policy lets a name entry reach, with their TTLs. */
  allowed: { ip: string; ttl: number }[];
  /** Addresses the resolver returned that the policy refuses (non-global). */
  refused: string[];
}

export async function resolveA(name: string, dns: DnsTransport, keep: (ip: string) => boolean): Promise<Resolved> {
  const id = randomInt(0, 0x10000);
  const res = parseResponse(await gated(dns, buildQuery(id, name, QTYPE.A)));
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

/** Resolutions in flight, per owner (a proxy's or a stub's options) and key. */
const inFlight = new WeakMap<object, Map<string, Promise<Resolved>>>();

/**
 * resolveA shared by concurrent callers with the same `owner` and `key`: a burst of lookups for one name makes
 * one host DNS exchange, and every caller gets its answer (and its failure).
 */
export function resolveAShared(owner: object, key: string, name: string, dns: DnsTransport, keep: (ip: string) => boolean): Promise<Resolved> {
  let byKey = inFlight.get(owner);
  if (byKey === undefined) inFlight.set(owner, (byKey = new Map()));
  let p = byKey.get(key);
  if (p === undefined) {
    p = resolveA(name, dns, keep).finally(() => byKey.delete(key));
    byKey.set(key, p);
  }
  return p;
}
