// Explicit mode's path from "host:port" to a connected upstream: the policy decides on the name or IP
// literal first (a name off the list is refused before any DNS query), the name is resolved through the host
// (non-global answers dropped), and the first address that connects wins.
import type { Duplex } from 'node:stream';
import { ipFamily } from './address-class.ts';
import { EgressError } from './errors.ts';
import { openFlow, type DialerConnect } from './flow-client.ts';
import type { EgressPolicy } from './policy.ts';
import { normalizeName } from './policy.ts';
import type { NameCache } from './name-cache.ts';
import { resolveAShared, type DnsTransport } from './resolver.ts';

export interface DialDeps {
  policy: EgressPolicy;
  dialer: DialerConnect;
  dns: DnsTransport;
  connectTimeoutMs: number;
  /** Resolved names, reused until their TTL (explicit mode). */
  names?: NameCache;
}

export interface Dialed {
  stream: Duplex;
  ip: string;
  /** The authorised name, "" for an IP entry. */
  name: string;
}

/** A refusal with what the decision record needs. */
export class EgressDenied extends EgressError {
  constructor(
    message: string,
    readonly ip: string | null,
  ) {
    super('EGRESS_DENIED', message);
  }
}

export async function authorizeAndDial(deps: DialDeps, host: string, port: number): Promise<Dialed> {
  const literal = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (ipFamily(literal) !== 0) {
    if (deps.policy.matchIp(literal, port) === null) throw new EgressDenied(`${literal} port ${port} is not on the allow-list`, literal);
    return { stream: await openFlow(deps.dialer, { ip: literal, port, timeoutMs: deps.connectTimeoutMs, name: '' }), ip: literal, name: '' };
  }
  const name = normalizeName(host);
  if (name === null) throw new EgressDenied(`${JSON.stringify(host.slice(0, 100))} is not a DNS name`, null);
  if (deps.policy.matchName(name, port) === null) throw new EgressDenied(`${name} port ${port} is not on the allow-list`, null);
  // Which non-global answers may be dialled depends on the port (an IP entry covers an address on its ports).
  const key = `${name}:${port}`;
  let resolved = deps.names?.get(key);
  if (resolved === undefined) {
    // A burst of connections to one name:port shares one host DNS exchange.
    resolved = await resolveAShared(deps, key, name, deps.dns, (ip) => deps.policy.resolvedAddressAllowed(ip, port));
    deps.names?.set(key, resolved);
  }
  if (resolved.allowed.length === 0) {
    if (resolved.refused.length > 0) throw new EgressDenied(`${name} resolves only to non-global addresses (${resolved.refused.join(', ')})`, resolved.refused[0]!);
    throw new EgressError('EGRESS_RESOLVER_ERROR', `${name} has no IPv4 address`);
  }
  let last: unknown;
  // One connect timeout for the name, not one per address: the app hears 504 after it, however many addresses failed.
  const deadline = performance.now() + deps.connectTimeoutMs;
  for (const { ip } of resolved.allowed) {
    const timeoutMs = Math.floor(deadline - performance.now());
    if (timeoutMs <= 0) throw new EgressError('EGRESS_TIMEOUT', `${name} port ${port}: no address connected within ${deps.connectTimeoutMs} ms`);
    try {
      return { stream: await openFlow(deps.dialer, { ip, port, timeoutMs, name }), ip, name };
    } catch (err) {
      // Refused or unreachable: try the next address; a dialer that is down or full fails them all the same way.
      last = err;
      if (err instanceof EgressError && (err.code === 'EGRESS_DIALER_UNREACHABLE' || err.code === 'EGRESS_DENIED' || err.code === 'EGRESS_DIALER_BUSY')) break;
    }
  }
  throw last;
}
