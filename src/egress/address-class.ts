// Which IP addresses are not on the public internet. A name on the allow-list that resolves into one of these
// ranges is refused (DNS rebinding to 127.0.0.1 or the metadata service 169.254.169.254), unless an IP or
// CIDR entry of the policy names the address itself. net.BlockList does the prefix arithmetic.
// The lists are every block the IANA IPv4 and IPv6 Special-Purpose Address Registries mark "Globally Reachable:
// False" (multicast too), less the globally reachable blocks assigned inside them (GLOBAL_INSIDE_*), plus the
// deprecated IPv6 site-local block (not in those registries, but never a public address).
import net from 'node:net';
import { parseIPv6 } from '../util/ip-bytes.ts';

const NON_GLOBAL_V4: readonly [string, number][] = [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // RFC 1918
  ['100.64.0.0', 10], // CGNAT (RFC 6598)
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, incl. 169.254.169.254 (instance metadata)
  ['172.16.0.0', 12], // RFC 1918
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation (TEST-NET-1)
  ['192.168.0.0', 16], // RFC 1918
  ['198.18.0.0', 15], // benchmarking (RFC 2544)
  ['198.51.100.0', 24], // documentation (TEST-NET-2)
  ['203.0.113.0', 24], // documentation (TEST-NET-3)
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, incl. limited broadcast 255.255.255.255
];
const NON_GLOBAL_V6: readonly [string, number][] = [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only (RFC 6666)
  ['100:0:0:1::', 64], // dummy prefix (RFC 9780)
  ['2001::', 23], // IETF protocol assignments, incl. Teredo, benchmarking 2001:2::/48, ORCHID
  ['2001:db8::', 32], // documentation
  ['3fff::', 20], // documentation (RFC 9637)
  ['5f00::', 16], // SRv6 SIDs (RFC 9602)
  ['fc00::', 7], // ULA
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local, deprecated (RFC 3879) but still routed inside some private networks
  ['ff00::', 8], // multicast
];
/** Assignments inside the blocks above that the registries mark globally reachable. */
const GLOBAL_INSIDE_V4: readonly [string, number][] = [
  ['192.0.0.9', 32], // PCP anycast
  ['192.0.0.10', 32], // TURN anycast
];
const GLOBAL_INSIDE_V6: readonly [string, number][] = [
  ['2001:1::1', 128], // PCP anycast
  ['2001:1::2', 128], // TURN anycast
  ['2001:1::3', 128], // DNS-SD SRP anycast
  ['2001:3::', 32], // AMT
  ['2001:4:112::', 48], // AS112-v6
  ['2001:20::', 28], // ORCHIDv2
  ['2001:30::', 28], // drone remote ID
];

function blockList(v4: readonly [string, number][], v6: readonly [string, number][]): net.BlockList {
  const list = new net.BlockList();
  for (const [a, p] of v4) list.addSubnet(a, p, 'ipv4');
  for (const [a, p] of v6) list.addSubnet(a, p, 'ipv6');
  return list;
}
const nonGlobal = blockList(NON_GLOBAL_V4, NON_GLOBAL_V6);
const globalInside = blockList(GLOBAL_INSIDE_V4, GLOBAL_INSIDE_V6);

/** In a non-global block, and not in a globally reachable assignment inside it. */
function inNonGlobalBlock(ip: string, family: 'ipv4' | 'ipv6'): boolean {
  return nonGlobal.check(ip, family) && !globalInside.check(ip, family);
}

/** 4 or 6 for an IP literal (IPv6 without brackets), 0 otherwise. */
export function ipFamily(text: string): 0 | 4 | 6 {
  return net.isIP(text) as 0 | 4 | 6;
}

/**
 * The IPv4 address inside an IPv4-mapped IPv6 address ("::ffff:1.2.3.4", "::ffff:7f00:1"), else the input.
 * (No "::ffff:0:0/96" rule in the lists: BlockList matches every IPv4 address against it.)
 */
export function unmapIpv4(ip: string): string {
  const canon = net.isIPv6(ip) ? new net.SocketAddress({ address: ip, family: 'ipv6' }).address : ip;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(canon);
  return m ? m[1]! : ip;
}

/**
 * The IPv4 address an IPv6 address carries in a form that reaches it (else null): IPv4-mapped ::ffff:0:0/96,
 * IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96, NAT64 64:ff9b::/96 (a NAT64 gateway dials it: AWS's
 * reaches VPC IPv4) and 6to4 2002::/16 (bits 16..47).
 */
export function embeddedIpv4(ip: string): string | null {
  if (!net.isIPv6(ip)) return null;
  const b = parseIPv6(ip.replace(/%.*$/, ''));
  if (b === null) return null;
  const zero = (from: number, to: number): boolean => b.subarray(from, to).every((x) => x === 0);
  const v4 = (at: number): string => [...b.subarray(at, at + 4)].join('.');
  if (zero(0, 10) && ((b[10] === 0xff && b[11] === 0xff) || (b[10] === 0 && b[11] === 0))) return v4(12); // ::ffff:a.b.c.d, ::a.b.c.d
  if (zero(0, 8) && b[8] === 0xff && b[9] === 0xff && b[10] === 0 && b[11] === 0) return v4(12); // ::ffff:0:a.b.c.d
  if (b[0] === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(4, 12)) return v4(12); // 64:ff9b::a.b.c.d
  if (b[0] === 0x20 && b[1] === 0x02) return v4(2); // 2002:aabb:ccdd::
  return null;
}

/**
 * True for loopback, RFC 1918, link-local, CGNAT, ULA, multicast, documentation, benchmarking and the other
 * special-purpose ranges that are not globally reachable, and for an IPv6 address that embeds such an IPv4
 * address (embeddedIpv4).
 */
export function isNonGlobal(ip: string): boolean {
  const v = unmapIpv4(ip);
  const family = ipFamily(v);
  if (family === 0) return true; // not an address at all: never "global"
  if (inNonGlobalBlock(v, family === 4 ? 'ipv4' : 'ipv6')) return true;
  const inner = family === 6 ? embeddedIpv4(v) : null;
  return inner !== null && inNonGlobalBlock(inner, 'ipv4');
}

/** A BlockList of extra prefixes ("198.18.0.0/15", "10.1.2.3"), for the host dialer's --allow-nonglobal. */
export function prefixList(prefixes: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const p of prefixes) {
    const parts = p.split('/');
    // One "/" at most: "::/0/128" read as ::/0 would open every non-global address (IPv4 ones too).
    if (parts.length > 2) throw new TypeError(`expected an IP address or CIDR, found ${JSON.stringify(p)}`);
    const [addr, len] = parts;
    const family = ipFamily(addr ?? '');
    if (family === 0) throw new TypeError(`expected an IP address or CIDR, found ${JSON.stringify(p)}`);
    const max = family === 4 ? 32 : 128;
    const bits = len === undefined ? max : Number(len);
    if (!/^\d+$/.test(len ?? String(max)) || bits > max) throw new TypeError(`expected a prefix length 0..${max}, found ${JSON.stringify(p)}`);
    list.addSubnet(addr!, bits, family === 4 ? 'ipv4' : 'ipv6');
  }
  return list;
}

/** BlockList.check with the family worked out (false for anything that is not an IP literal). */
export function inList(list: net.BlockList, ip: string): boolean {
  const v = unmapIpv4(ip);
  const family = ipFamily(v);
  return family !== 0 && list.check(v, family === 4 ? 'ipv4' : 'ipv6');
}
