// The egress allow-list (enclave.toml [egress] destinations), parsed once at boot. Default deny.
//
//   entry    = host [":" portspec]          no portspec = any port (Evervault's entries have none)
//   host     = "*"                           any name (names only; IP literals need an IP entry)
//            | "*." name                     one or more labels below name, never name itself
//            | name                          exact, case-insensitive, trailing dot ignored
//            | ipv4 ["/" len] | "[" ipv6 ["/" len] "]" | ipv6 ["/" len]   (bare IPv6 only without a port)
//   portspec = n | n "-" m | "*"
//
// Names are matched on label boundaries: "*.example.com" matches "a.example.com" and "a.b.example.com", not
// "example.com" nor "badexample.com" nor "example.com.evil.com".
import net from 'node:net';
import { ipFamily, isNonGlobal, unmapIpv4 } from './address-class.ts';
import { EgressError } from './errors.ts';

export interface PortRange {
  readonly from: number;
  readonly to: number;
}

export type Destination =
  | { readonly kind: 'any-name'; readonly text: string; readonly ports: PortRange }
  | { readonly kind: 'name'; readonly text: string; readonly name: string; readonly ports: PortRange }
  | { readonly kind: 'suffix'; readonly text: string; readonly suffix: string; readonly ports: PortRange }
  | { readonly kind: 'ip'; readonly text: string; readonly family: 4 | 6; readonly prefix: string; readonly ports: PortRange; readonly list: net.BlockList };

const ANY_PORT: PortRange = { from: 1, to: 65535 };
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Lower-case, one trailing dot removed; null when it is not a DNS name (labels of 1..63, ≤ 253 in all). */
export function normalizeName(text: string): string | null {
  const name = (text.endsWith('.') ? text.slice(0, -1) : text).toLowerCase();
  if (name.length === 0 || name.length > 253) return null;
  if (!name.split('.').every((l) => LABEL.test(l))) return null;
  if (ipFamily(name) !== 0) return null; // "1.2.3.4" is an address, not a name
  return name;
}

function bad(entry: string, why: string): never {
  throw new EgressError('EGRESS_BAD_DESTINATION', `egress.destinations: invalid entry ${JSON.stringify(entry)}: ${why}`);
}

function parsePorts(entry: string, spec: string | undefined): PortRange {
  if (spec === undefined || spec === '*') return ANY_PORT;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(spec);
  if (!m) bad(entry, `expected a port, a range N-M or *, found ${JSON.stringify(spec)}`);
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  if (from < 1 || to > 65535 || from > to) bad(entry, `expected ports in 1..65535 with N ≤ M, found ${spec}`);
  return { from, to };
}

function ipEntry(entry: string, addr: string, len: string | undefined, ports: PortRange): Destination {
  const family = ipFamily(addr);
  if (family === 0) bad(entry, `${JSON.stringify(addr)} is not an IP address`);
  const max = family === 4 ? 32 : 128;
  if (len !== undefined && !/^\d{1,3}$/.test(len)) bad(entry, `expected a prefix length 0..${max}, found ${JSON.stringify(len)}`);
  const bits = len === undefined ? max : Number(len);
  if (bits > max) bad(entry, `expected a prefix length 0..${max}, found ${bits}`);
  // Addresses are matched unmapped (ipMatches), so an IPv4-mapped entry is its IPv4 one, or it would never match.
  const v4 = family === 6 ? unmapIpv4(addr) : addr;
  if (v4 !== addr) {
    if (bits < 96) bad(entry, `an IPv4-mapped prefix shorter than /96 reaches past ::ffff:0:0/96; write an IPv4 entry (${v4}/…) or the IPv6 prefix itself`);
    return ipEntry(entry, v4, String(bits - 96), ports);
  }
  const list = new net.BlockList();
  list.addSubnet(addr, bits, family === 4 ? 'ipv4' : 'ipv6');
  return { kind: 'ip', text: entry, family, prefix: `${addr}/${bits}`, ports, list };
}

/** "addr" or "addr/len": one "/" at most, so "2001:db8::/32/64" fails rather than loading as the wider /32. */
function splitPrefix(entry: string, text: string): [string, string | undefined] {
  const parts = text.split('/');
  if (parts.length > 2) bad(entry, `expected at most one "/" (address/prefix length), found ${parts.length - 1}`);
  return [parts[0]!, parts[1]];
}

/** One entry; throws EGRESS_BAD_DESTINATION naming it. */
export function parseDestination(entry: string): Destination {
  const text = entry.trim();
  if (text === '') bad(entry, 'empty');
  // [IPv6] or [IPv6/len], optionally :ports
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracket) {
    const [addr, len] = splitPrefix(entry, bracket[1]!);
    if (ipFamily(addr) !== 6) bad(entry, 'brackets hold an IPv6 address');
    return ipEntry(entry, addr, len, parsePorts(entry, bracket[2]));
  }
  if ((text.match(/:/g) ?? []).length > 1) {
    const [addr, len] = splitPrefix(entry, text);
    return ipEntry(entry, addr, len, ANY_PORT); // bare IPv6 (a port needs brackets)
  }
  const colon = text.indexOf(':');
  const host = colon < 0 ? text : text.slice(0, colon);
  const ports = parsePorts(entry, colon < 0 ? undefined : text.slice(colon + 1));
  if (host === '*') return { kind: 'any-name', text: entry, ports };
  const slash = host.indexOf('/');
  if (slash >= 0 || /^[\d.]+$/.test(host)) return ipEntry(entry, slash < 0 ? host : host.slice(0, slash), slash < 0 ? undefined : host.slice(slash + 1), ports);
  if (host.startsWith('*.')) {
    const suffix = normalizeName(host.slice(2));
    if (suffix === null) bad(entry, `${JSON.stringify(host.slice(2))} after "*." is not a DNS name`);
    return { kind: 'suffix', text: entry, suffix, ports };
  }
  if (host.includes('*')) bad(entry, 'a wildcard is only "*" or a leading "*." before a name');
  const name = normalizeName(host);
  if (name === null) bad(entry, `${JSON.stringify(host)} is not a DNS name (labels of letters, digits, "-", "_"; 1..63 each, 253 in all)`);
  return { kind: 'name', text: entry, name, ports };
}

const inPorts = (r: PortRange, port: number): boolean => port >= r.from && port <= r.to;

/**
 * Transparent mode sends all TCP to port 53 to the DNS stub (src/egress/transparent-rules.ts), so an entry
 * that names port 53 (":53" or a range holding it; any-port entries are fine) could never be reached over TCP:
 * throws EGRESS_BAD_DESTINATION naming the first such entry.
 */
export function checkTransparentPorts(destinations: readonly Destination[]): void {
  for (const d of destinations) {
    const anyPort = d.ports.from === ANY_PORT.from && d.ports.to === ANY_PORT.to;
    if (!anyPort && inPorts(d.ports, 53)) {
      bad(d.text, 'in transparent mode TCP to port 53 goes to the DNS stub, so this entry could never be reached on 53; leave 53 out of its ports (two ranges around it, or "*") or use explicit mode');
    }
  }
}

function nameMatches(d: Destination, name: string): boolean {
  switch (d.kind) {
    case 'any-name':
      return true;
    case 'name':
      return d.name === name;
    case 'suffix':
      return name.length > d.suffix.length + 1 && name.endsWith(`.${d.suffix}`);
    case 'ip':
      return false;
  }
}

function ipMatches(d: Destination, ip: string): boolean {
  if (d.kind !== 'ip') return false;
  const v = unmapIpv4(ip);
  const family = ipFamily(v);
  return family === d.family && d.list.check(v, family === 4 ? 'ipv4' : 'ipv6');
}

export class EgressPolicy {
  readonly destinations: readonly Destination[];

  constructor(entries: readonly string[]) {
    this.destinations = entries.map(parseDestination);
  }

  /** The first name entry allowing `name` (normalized first) on `port`, else null. */
  matchName(name: string, port: number): Destination | null {
    const n = normalizeName(name);
    if (n === null) return null;
    return this.destinations.find((d) => nameMatches(d, n) && inPorts(d.ports, port)) ?? null;
  }

  /** True when some name entry allows `name` on any port (the DNS stub answers for it). */
  allowsNameOnSomePort(name: string): boolean {
    const n = normalizeName(name);
    return n !== null && this.destinations.some((d) => nameMatches(d, n));
  }

  /** The first IP/CIDR entry covering `ip` on `port`, else null. */
  matchIp(ip: string, port: number): Destination | null {
    return this.destinations.find((d) => inPorts(d.ports, port) && ipMatches(d, ip)) ?? null;
  }

  /**
   * May a name entry's resolved address be dialled on `port`? Global addresses yes; loopback, private,
   * link-local, CGNAT, ULA, multicast only when an IP/CIDR entry covers that address on that port (an entry
   * "10.0.0.5:5432" lets a name reach 10.0.0.5 on 5432, never on the name entry's other ports).
   */
  resolvedAddressAllowed(ip: string, port: number): boolean {
    if (ipFamily(unmapIpv4(ip)) === 0) return false;
    return !isNonGlobal(ip) || this.matchIp(ip, port) !== null;
  }

  /**
   * May the DNS stub hand `ip` to the app at all (it does not know the port the app will dial)? Global
   * addresses, and non-global ones some IP/CIDR entry covers on some port. Answering is not authorising: a
   * flow to a non-global address is then allowed only by an IP entry covering its port, never by a pin.
   */
  answerableAddress(ip: string): boolean {
    if (ipFamily(unmapIpv4(ip)) === 0) return false;
    return !isNonGlobal(ip) || this.destinations.some((d) => ipMatches(d, ip));
  }
}
