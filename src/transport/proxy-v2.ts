/**
 * PROXY protocol version 2 (HAProxy, "The PROXY protocol", section 2.2): the binary header a proxy writes at
 * the start of a stream to tell the receiver who the real client is.
 *
 *   signature[12] = 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A
 *   ver_cmd  u8     high nibble version (2), low nibble command (0 LOCAL, 1 PROXY)
 *   fam_prot u8     high nibble family (0 UNSPEC, 1 INET, 2 INET6, 3 UNIX), low nibble protocol (0, 1 STREAM, 2 DGRAM)
 *   len      u16be  bytes that follow: addresses, then TLVs
 *   INET : src[4]  dst[4]  sport u16be dport u16be   (12 bytes)
 *   INET6: src[16] dst[16] sport u16be dport u16be   (36 bytes)
 *   UNIX : src[108] dst[108]                          (216 bytes)
 *
 * The parser is incremental (returns null while more bytes are needed), rejects a foreign stream as soon as
 * one byte differs from the signature, bounds the header by `maxLength`, and skips TLVs.
 */
import type { Duplex } from 'node:stream';
import { AgentError } from '../errors.ts';
import { ipBytes } from '../util/ip-bytes.ts';

export type ProxyProtocolErrorCode =
  | 'PROXY_BAD_SIGNATURE'
  | 'PROXY_BAD_VERSION'
  | 'PROXY_BAD_COMMAND'
  | 'PROXY_BAD_FAMILY'
  | 'PROXY_TOO_LONG'
  | 'PROXY_TRUNCATED_ADDRESS'
  | 'PROXY_BAD_ADDRESS'
  | 'PROXY_TIMEOUT'
  | 'PROXY_STREAM_CLOSED';

export class ProxyProtocolError extends AgentError {
  declare readonly code: ProxyProtocolErrorCode;
  constructor(code: ProxyProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export interface ProxyEndpoint {
  address: string;
  port: number;
}

export interface ProxyAddress extends ProxyEndpoint {
  family: 'IPv4' | 'IPv6';
}

export interface ProxyParseResult {
  /** Header bytes, TLVs included: the stream's payload starts at this offset. */
  consumed: number;
  /** LOCAL: a health check or a proxy-originated connection; use the real endpoints. */
  command: 'LOCAL' | 'PROXY';
  /** Present for PROXY over TCP/IPv4 or TCP/IPv6; absent for LOCAL, UNSPEC and UNIX. */
  source?: ProxyAddress;
  destination?: ProxyAddress;
}

export interface ProxyParseOptions {
  /** Largest accepted header, signature to last TLV byte. Default 4096. */
  maxLength?: number;
}

export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const FIXED = 16;
const DEFAULT_MAX_LENGTH = 4096;
const CMD_LOCAL = 0x0;
const CMD_PROXY = 0x1;
const FAM_UNSPEC = 0x0;
const FAM_INET = 0x1;
const FAM_INET6 = 0x2;
const FAM_UNIX = 0x3;
const PROTO_UNSPEC = 0x0;
const PROTO_STREAM = 0x1;
const ADDR_LEN: Record<number, number> = { [FAM_INET]: 12, [FAM_INET6]: 36, [FAM_UNIX]: 216 };

const hex2 = (n: number): string => '0x' + n.toString(16).padStart(2, '0');

// ---------------------------------------------------------------------------------------------------------------
// Parsing

/**
 * Parses a PROXY v2 header at the start of `buf`.
 * Returns null when `buf` is a valid prefix that needs more bytes; throws ProxyProtocolError as soon as the
 * bytes cannot become a valid header.
 */
export function parseProxyV2(buf: Uint8Array, opts: ProxyParseOptions = {}): ProxyParseResult | null {
  const maxLength = opts.maxLength ?? DEFAULT_MAX_LENGTH;
  const sigLen = Math.min(buf.length, PROXY_V2_SIGNATURE.length);
  for (let i = 0; i < sigLen; i++) {
    if (buf[i] !== PROXY_V2_SIGNATURE[i]) {
      throw new ProxyProtocolError('PROXY_BAD_SIGNATURE', `expected the PROXY v2 signature, byte ${i} is ${hex2(buf[i]!)} instead of ${hex2(PROXY_V2_SIGNATURE[i]!)}`);
    }
  }
  if (buf.length < 13) return null;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) throw new ProxyProtocolError('PROXY_BAD_VERSION', `expected PROXY protocol version 2, found version ${verCmd >> 4}`);
  const command = verCmd & 0x0f;
  if (command !== CMD_LOCAL && command !== CMD_PROXY) {
    throw new ProxyProtocolError('PROXY_BAD_COMMAND', `expected command LOCAL (0) or PROXY (1), found ${command}`);
  }
  if (buf.length < 14) return null;
  const famProto = buf[13]!;
  const family = famProto >> 4;
  const proto = famProto & 0x0f;
  // LOCAL: the receiver must ignore the address block whatever it says; only check the nibbles are defined.
  if (family > FAM_UNIX || proto > 2) {
    throw new ProxyProtocolError('PROXY_BAD_FAMILY', `undefined address family/protocol byte ${hex2(famProto)}`);
  }
  if (command === CMD_PROXY && family !== FAM_UNSPEC && proto !== PROTO_STREAM) {
    throw new ProxyProtocolError('PROXY_BAD_FAMILY', `expected a stream protocol, found family/protocol ${hex2(famProto)}`);
  }
  if (command === CMD_PROXY && family === FAM_UNSPEC && proto !== PROTO_UNSPEC) {
    throw new ProxyProtocolError('PROXY_BAD_FAMILY', `family UNSPEC with protocol ${proto}`);
  }
  if (buf.length < FIXED) return null;
  const len = (buf[14]! << 8) | buf[15]!;
  const total = FIXED + len;
  if (total > maxLength) throw new ProxyProtocolError('PROXY_TOO_LONG', `header of ${total} bytes exceeds the ${maxLength}-byte limit`);
  const addrLen = command === CMD_PROXY ? (ADDR_LEN[family] ?? 0) : 0;
  if (len < addrLen) {
    throw new ProxyProtocolError('PROXY_TRUNCATED_ADDRESS', `family ${family} needs ${addrLen} address bytes, length field says ${len}`);
  }
  if (buf.length < total) return null;
  // TLVs (bytes addrLen..len) are skipped: nothing in them changes who the client is for us.
  if (command === CMD_LOCAL) return { consumed: total, command: 'LOCAL' };
  if (family === FAM_INET) {
    return {
      consumed: total,
      command: 'PROXY',
      source: { address: formatIPv4(buf, 16), port: readU16(buf, 24), family: 'IPv4' },
      destination: { address: formatIPv4(buf, 20), port: readU16(buf, 26), family: 'IPv4' },
    };
  }
  if (family === FAM_INET6) {
    return {
      consumed: total,
      command: 'PROXY',
      source: { address: formatIPv6(buf, 16), port: readU16(buf, 48), family: 'IPv6' },
      destination: { address: formatIPv6(buf, 32), port: readU16(buf, 50), family: 'IPv6' },
    };
  }
  return { consumed: total, command: 'PROXY' }; // UNSPEC or UNIX: no IP endpoints to report
}

const readU16 = (b: Uint8Array, o: number): number => (b[o]! << 8) | b[o + 1]!;

function formatIPv4(b: Uint8Array, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

/**
 * RFC 5952 text: lower-case hex, longest run (≥ 2) of zero groups compressed to "::", first such run on ties;
 * IPv4-mapped addresses as "::ffff:a.b.c.d" (the form Node reports for remoteAddress).
 */
function formatIPv6(b: Uint8Array, o: number): string {
  let mapped = true;
  for (let i = 0; i < 12; i++) if (b[o + i] !== (i < 10 ? 0 : 0xff)) mapped = false;
  if (mapped) return '::ffff:' + formatIPv4(b, o + 12);
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(readU16(b, o + i * 2));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

/**
 * Encodes a PROXY v2 header for a TCP connection (PROXY command), or a LOCAL header when `info` is null.
 * Addresses are IPv4 or IPv6 text; IPv4-mapped IPv6 ("::ffff:1.2.3.4") is sent as IPv4 when both ends are, and an
 * IPv4 end is mapped into IPv6 when the other end is IPv6 (the header has one family for both).
 */
export function encodeProxyV2(info: { source: ProxyEndpoint; destination: ProxyEndpoint } | null): Uint8Array {
  if (info === null) {
    const out = new Uint8Array(FIXED);
    out.set(PROXY_V2_SIGNATURE, 0);
    out[12] = 0x20 | CMD_LOCAL;
    out[13] = 0x00;
    return out; // length 0
  }
  let src = parseIp(info.source.address);
  let dst = parseIp(info.destination.address);
  checkPort(info.source.port);
  checkPort(info.destination.port);
  if (src.length !== dst.length) {
    if (src.length === 4) src = mapV4(src);
    else dst = mapV4(dst);
  }
  const v4 = src.length === 4;
  const addrLen = v4 ? 12 : 36;
  const out = new Uint8Array(FIXED + addrLen);
  out.set(PROXY_V2_SIGNATURE, 0);
  out[12] = 0x20 | CMD_PROXY;
  out[13] = ((v4 ? FAM_INET : FAM_INET6) << 4) | PROTO_STREAM;
  out[14] = 0;
  out[15] = addrLen;
  out.set(src, 16);
  out.set(dst, 16 + src.length);
  const p = 16 + src.length * 2;
  out[p] = info.source.port >> 8;
  out[p + 1] = info.source.port & 0xff;
  out[p + 2] = info.destination.port >> 8;
  out[p + 3] = info.destination.port & 0xff;
  return out;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new ProxyProtocolError('PROXY_BAD_ADDRESS', `expected a port in 0..65535, found ${port}`);
  }
}

function mapV4(v4: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

/** 4 bytes for IPv4 text (and IPv4-mapped IPv6), 16 for IPv6 text. A zone id ("%eth0") is dropped. */
function parseIp(text: string): Uint8Array {
  const bytes = ipBytes(text);
  if (!bytes) throw new ProxyProtocolError('PROXY_BAD_ADDRESS', `expected an IPv4 or IPv6 address, found ${JSON.stringify(text.slice(0, 64))}`);
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a header off a stream

/**
 * Reads exactly one PROXY v2 header from `stream` and hands back the bytes read past it.
 * Rejects with ProxyProtocolError on an invalid header (at the first wrong byte), on `timeoutMs` elapsing, or when
 * the stream ends or fails first. It never destroys the stream: that is the caller's decision. On success the
 * stream is left paused with no listeners of ours, so the caller can feed `rest` to its reader and then attach
 * its own 'data'/'readable' listener.
 */
export function readProxyHeader(
  stream: Duplex,
  timeoutMs: number,
  opts: ProxyParseOptions = {},
): Promise<{ header: ProxyParseResult; rest: Uint8Array }> {
  return new Promise((resolve, reject) => {
    let buf = new Uint8Array(0);
    let done = false;
    const finish = (err: Error | null, value?: { header: ProxyParseResult; rest: Uint8Array }): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      if (err) reject(err);
      else resolve(value!);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (!done && (chunk = stream.read() as Buffer | null) !== null) {
        const next = new Uint8Array(buf.length + chunk.length);
        next.set(buf, 0);
        next.set(chunk, buf.length);
        buf = next;
        let header: ProxyParseResult | null;
        try {
          header = parseProxyV2(buf, opts);
        } catch (err) {
          finish(err as Error);
          return;
        }
        if (header) finish(null, { header, rest: buf.subarray(header.consumed) });
      }
    };
    const onEnd = (): void =>
      finish(new ProxyProtocolError('PROXY_STREAM_CLOSED', `stream ended after ${buf.length} bytes, before a complete PROXY v2 header`));
    const onError = (err: Error): void =>
      finish(new ProxyProtocolError('PROXY_STREAM_CLOSED', `stream failed before a complete PROXY v2 header: ${err.message}`, { cause: err }));
    const timer = setTimeout(
      () => finish(new ProxyProtocolError('PROXY_TIMEOUT', `no complete PROXY v2 header within ${timeoutMs} ms (${buf.length} bytes received)`)),
      timeoutMs,
    );
    if (stream.destroyed || stream.readableEnded) {
      onEnd();
      return;
    }
    stream.on('readable', onReadable);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
  });
}
