// IP address text to bytes, strictly (no leading zeros in IPv4, no stray characters): the PROXY v2 header's
// addresses (transport/proxy-v2.ts), egress flow frames (egress/flow-frame.ts) and the per-client keys of the
// fresh-nonce budget (ingress/nonce-budget.ts) and of the session limit (responder/session.ts) read addresses the
// same way.

/** 4 bytes for IPv4 text (and IPv4-mapped IPv6), 16 for IPv6 text, null for anything else. A zone id ("%eth0") is dropped. */
export function ipBytes(text: string): Uint8Array | null {
  const v4 = parseIPv4(text);
  if (v4) return v4;
  const v6 = parseIPv6(text.replace(/%.*$/, ''));
  if (!v6) return null;
  const mapped = v6.subarray(0, 12).every((b, i) => b === (i < 10 ? 0 : 0xff));
  return mapped ? v6.slice(12) : v6;
}

/** The 4 bytes of dotted-decimal IPv4 text, or null. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** The 16 bytes of IPv6 text ("::" and a dotted IPv4 tail allowed; no zone id), or null. */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45) return null;
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parseGroups = (s: string, allowV4Tail: boolean): number[] | null => {
    if (s === '') return [];
    const parts = s.split(':');
    const out: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (allowV4Tail && i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIPv4(p);
        if (!v4) return null;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  let groups: number[];
  if (halves.length === 2) {
    const head = parseGroups(halves[0]!, false);
    const tail = parseGroups(halves[1]!, true);
    if (!head || !tail || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    const all = parseGroups(text, true);
    if (!all || all.length !== 8) return null;
    groups = all;
  }
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

/**
 * The key a source address is counted under per client: the address (IPv4-mapped IPv6 as IPv4), or its /64 for
 * IPv6 — one IPv6 client commonly holds a whole /64, and would otherwise get a separate allowance per address.
 */
export function clientKey(address: string): string {
  const b = ipBytes(address);
  if (b === null) return address;
  if (b.length === 4) return b.join('.');
  return `${[0, 2, 4, 6].map((i) => ((b[i]! << 8) | b[i + 1]!).toString(16)).join(':')}::/64`;
}
