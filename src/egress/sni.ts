// The server name a TLS ClientHello asks for (RFC 6066 server_name), read from the first TLS record of a
// flow and put back, so the bytes still reach the destination unchanged. Used by the optional
// [egress] sni_check: a flow authorised for one name must not carry a TLS session for another name that
// happens to share its IP (a CDN front).
import type { Duplex } from 'node:stream';
import { readBytes } from './read-bytes.ts';

export type SniResult = { kind: 'sni'; name: string } | { kind: 'no-sni' } | { kind: 'not-tls' };

/**
 * A ClientHello's server name as it may appear in a refusal's reason (the trx record and the warn log): the
 * app chose it, up to 64 KiB of any bytes. Cut to a DNS name's 253 characters, anything but name characters
 * shown as "?".
 */
export function sniForLog(name: string): string {
  return name.slice(0, 253).replace(/[^a-z0-9._-]/g, '?');
}

/** Parses a ClientHello handshake message body (after the 5-byte record header). */
export function sniFromClientHello(hs: Buffer): SniResult {
  const fail: SniResult = { kind: 'not-tls' };
  if (hs.length < 4 || hs[0] !== 1) return fail;
  let p = 4 + 2 + 32; // type, length(3), version, random
  const skip = (lenBytes: 1 | 2): boolean => {
    if (p + lenBytes > hs.length) return false;
    const n = lenBytes === 1 ? hs[p]! : hs.readUInt16BE(p);
    p += lenBytes + n;
    return p <= hs.length;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return fail; // session id, cipher suites, compression methods
  if (p === hs.length) return { kind: 'no-sni' };
  if (p + 2 > hs.length) return fail;
  const end = Math.min(hs.length, p + 2 + hs.readUInt16BE(p));
  p += 2;
  while (p + 4 <= end) {
    const type = hs.readUInt16BE(p);
    const len = hs.readUInt16BE(p + 2);
    const data = p + 4;
    if (data + len > end) return fail;
    if (type === 0) {
      // server_name_list: u16 length, then entries (type u8, u16 length, name); host_name is type 0
      let q = data + 2;
      while (q + 3 <= data + len) {
        const nameType = hs[q]!;
        const nameLen = hs.readUInt16BE(q + 1);
        if (q + 3 + nameLen > data + len) return fail;
        if (nameType === 0) return { kind: 'sni', name: hs.subarray(q + 3, q + 3 + nameLen).toString('latin1').toLowerCase() };
        q += 3 + nameLen;
      }
      return { kind: 'no-sni' };
    }
    p = data + len;
  }
  return { kind: 'no-sni' };
}

/**
 * Reads the first TLS record of `stream`, puts its bytes back, and returns the SNI it carries. A stream that
 * does not start with a TLS handshake record within `timeoutMs` is 'not-tls'.
 */
export async function peekSni(stream: Duplex, timeoutMs: number): Promise<SniResult> {
  let head: Buffer;
  try {
    head = await readBytes(stream, 5, timeoutMs, 'TLS record header');
  } catch {
    return { kind: 'not-tls' };
  }
  if (head[0] !== 0x16 || head[1] !== 3) {
    stream.unshift(head);
    return { kind: 'not-tls' };
  }
  const len = head.readUInt16BE(3);
  let body: Buffer;
  try {
    body = await readBytes(stream, len, timeoutMs, 'TLS ClientHello');
  } catch {
    return { kind: 'not-tls' };
  }
  stream.unshift(Buffer.concat([head, body]));
  return sniFromClientHello(body);
}
