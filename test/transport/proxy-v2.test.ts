import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeProxyV2, parseProxyV2, ProxyProtocolError, readProxyHeader } from '../../src/transport/proxy-v2.ts';
import { concatBytes, fromHex, toHex } from '../../src/util/bytes.ts';

const SIG = '0d0a0d0a000d0a515549540a';
// Built by hand from the spec layout (HAProxy proxy-protocol.txt §2.2): PROXY over TCP/IPv4,
// 192.168.0.1:56324 → 192.168.0.11:443.
const SPEC_V4 = SIG + '21' + '11' + '000c' + 'c0a80001' + 'c0a8000b' + 'dc04' + '01bb';
// PROXY over TCP/IPv6, [2001:db8::1]:1234 → [::1]:5000.
const SPEC_V6 = SIG + '21' + '21' + '0024' + '20010db8000000000000000000000001' + '00000000000000000000000000000001' + '04d2' + '1388';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ProxyProtocolError);
    return (err as ProxyProtocolError).code;
  }
  return undefined;
}

describe('encodeProxyV2', () => {
  it('produces the spec layout byte for byte for TCP over IPv4', () => {
    const out = encodeProxyV2({ source: { address: '192.168.0.1', port: 56324 }, destination: { address: '192.168.0.11', port: 443 } });
    expect(toHex(out)).toBe(SPEC_V4);
  });

  it('produces the spec layout byte for byte for TCP over IPv6', () => {
    const out = encodeProxyV2({ source: { address: '2001:db8::1', port: 1234 }, destination: { address: '::1', port: 5000 } });
    expect(toHex(out)).toBe(SPEC_V6);
  });

  it('encodes LOCAL as the 16-byte header with family UNSPEC and length 0', () => {
    expect(toHex(encodeProxyV2(null))).toBe(SIG + '20' + '00' + '0000');
  });

  it('sends IPv4-mapped IPv6 endpoints as IPv4 and maps a lone IPv4 end into IPv6', () => {
    const mapped = encodeProxyV2({ source: { address: '::ffff:127.0.0.1', port: 1 }, destination: { address: '::ffff:10.0.0.1', port: 2 } });
    expect(parseProxyV2(mapped)!.source).toEqual({ address: '127.0.0.1', port: 1, family: 'IPv4' });
    const mixed = parseProxyV2(encodeProxyV2({ source: { address: '10.1.2.3', port: 1 }, destination: { address: 'fe80::1%eth0', port: 2 } }))!;
    expect(mixed.source).toEqual({ address: '::ffff:10.1.2.3', port: 1, family: 'IPv6' });
    expect(mixed.destination).toEqual({ address: 'fe80::1', port: 2, family: 'IPv6' });
  });

  it('rejects addresses that are not IP literals and ports out of range', () => {
    const dst = { address: '127.0.0.1', port: 1 };
    expect(codeOf(() => encodeProxyV2({ source: { address: 'localhost', port: 1 }, destination: dst }))).toBe('PROXY_BAD_ADDRESS');
    expect(codeOf(() => encodeProxyV2({ source: { address: '1.2.3.256', port: 1 }, destination: dst }))).toBe('PROXY_BAD_ADDRESS');
    expect(codeOf(() => encodeProxyV2({ source: { address: '1::2::3', port: 1 }, destination: dst }))).toBe('PROXY_BAD_ADDRESS');
    expect(codeOf(() => encodeProxyV2({ source: { address: '1.2.3.4', port: 65536 }, destination: dst }))).toBe('PROXY_BAD_ADDRESS');
  });
});

describe('parseProxyV2', () => {
  it('parses the spec IPv4 and IPv6 headers', () => {
    expect(parseProxyV2(fromHex(SPEC_V4))).toEqual({
      consumed: 28,
      command: 'PROXY',
      source: { address: '192.168.0.1', port: 56324, family: 'IPv4' },
      destination: { address: '192.168.0.11', port: 443, family: 'IPv4' },
    });
    expect(parseProxyV2(fromHex(SPEC_V6))).toEqual({
      consumed: 52,
      command: 'PROXY',
      source: { address: '2001:db8::1', port: 1234, family: 'IPv6' },
      destination: { address: '::1', port: 5000, family: 'IPv6' },
    });
  });

  it('round-trips IPv4, IPv6 and LOCAL, reporting only the header as consumed', () => {
    const cases = [
      { source: { address: '1.2.3.4', port: 65535 }, destination: { address: '0.0.0.0', port: 0 } },
      { source: { address: '2001:db8:0:0:1:0:0:1', port: 443 }, destination: { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 8443 } },
      { source: { address: '::', port: 1 }, destination: { address: '1:0:0:1::', port: 2 } },
    ];
    for (const c of cases) {
      const payload = Uint8Array.of(1, 2, 3);
      const r = parseProxyV2(concatBytes(encodeProxyV2(c), payload))!;
      expect(r.command).toBe('PROXY');
      expect(r.consumed).toBe(encodeProxyV2(c).length);
      expect(r.source!.port).toBe(c.source.port);
      expect(r.destination!.port).toBe(c.destination.port);
    }
    expect(parseProxyV2(encodeProxyV2(cases[1]!))!.source!.address).toBe('2001:db8::1:0:0:1');
    expect(parseProxyV2(encodeProxyV2(cases[1]!))!.destination!.address).toBe('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
    expect(parseProxyV2(encodeProxyV2(cases[2]!))!.source!.address).toBe('::');
    expect(parseProxyV2(encodeProxyV2(cases[2]!))!.destination!.address).toBe('1:0:0:1::');
    expect(parseProxyV2(encodeProxyV2(null))).toEqual({ consumed: 16, command: 'LOCAL' });
  });

  it('answers "need more" (null) for every strict prefix of a valid header, never an error', () => {
    const withTlv = fromHex(SIG + '2111' + '0011' + 'c0a80001c0a8000bdc0401bb' + '010002' + '6832');
    for (const full of [fromHex(SPEC_V4), fromHex(SPEC_V6), encodeProxyV2(null), withTlv]) {
      for (let n = 0; n < full.length; n++) expect(parseProxyV2(full.subarray(0, n))).toBeNull();
      expect(parseProxyV2(full)!.consumed).toBe(full.length);
    }
  });

  it('rejects a foreign stream at its first byte, without waiting for 16 bytes', () => {
    expect(codeOf(() => parseProxyV2(Uint8Array.of(0x47)))).toBe('PROXY_BAD_SIGNATURE'); // "G" of "GET /"
    expect(codeOf(() => parseProxyV2(fromHex('0d0a0d0a00')))).toBeUndefined();
    expect(codeOf(() => parseProxyV2(fromHex('0d0a0d0a01')))).toBe('PROXY_BAD_SIGNATURE');
    // The v1 text header starts "PROXY TCP4": not v2.
    expect(codeOf(() => parseProxyV2(new TextEncoder().encode('PROXY TCP4 ')))).toBe('PROXY_BAD_SIGNATURE');
  });

  it('rejects a bad version, command or family as soon as that byte arrives', () => {
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '11')))).toBe('PROXY_BAD_VERSION');
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '22')))).toBe('PROXY_BAD_COMMAND');
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2141')))).toBe('PROXY_BAD_FAMILY'); // family 4
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2113')))).toBe('PROXY_BAD_FAMILY'); // protocol 3
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2112')))).toBe('PROXY_BAD_FAMILY'); // UDP over a stream
  });

  it('rejects a length field beyond maxLength before the bytes arrive', () => {
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2111' + 'ffff')))).toBe('PROXY_TOO_LONG');
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2111' + '0100'), { maxLength: 200 }))).toBe('PROXY_TOO_LONG');
    expect(parseProxyV2(fromHex(SIG + '2111' + '0100'), { maxLength: 16 + 256 })).toBeNull();
  });

  it('rejects a length too short for the family addresses', () => {
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2111' + '000b')))).toBe('PROXY_TRUNCATED_ADDRESS');
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2121' + '000c')))).toBe('PROXY_TRUNCATED_ADDRESS');
    expect(codeOf(() => parseProxyV2(fromHex(SIG + '2131' + '0010')))).toBe('PROXY_TRUNCATED_ADDRESS');
  });

  it('skips TLVs and leaves the payload after them', () => {
    // ALPN "h2" and a NOOP TLV of 3 bytes, then payload "hi".
    const tlvs = '010002' + '6832' + '040003' + '000000';
    const len = (12 + tlvs.length / 2).toString(16).padStart(4, '0');
    const buf = fromHex(SIG + '2111' + len + 'c0a80001c0a8000bdc0401bb' + tlvs + '6869');
    const r = parseProxyV2(buf)!;
    expect(r.consumed).toBe(buf.length - 2);
    expect(r.source).toEqual({ address: '192.168.0.1', port: 56324, family: 'IPv4' });
  });

  it('accepts LOCAL with any address block and UNSPEC/UNIX PROXY headers without IP endpoints', () => {
    expect(parseProxyV2(fromHex(SIG + '2011' + '000c' + '00'.repeat(12)))).toEqual({ consumed: 28, command: 'LOCAL' });
    expect(parseProxyV2(fromHex(SIG + '2100' + '0000'))).toEqual({ consumed: 16, command: 'PROXY' });
    expect(parseProxyV2(fromHex(SIG + '2131' + '00d8' + '00'.repeat(216)))).toEqual({ consumed: 232, command: 'PROXY' });
  });

  it('never throws anything but ProxyProtocolError on random input (property, fixed seed)', () => {
    const sig = fromHex(SIG);
    const arb = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Mostly-valid prefixes, so the checks after the signature are exercised too.
      fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 600 }), fc.uint8Array({ maxLength: 300 })).map(
        ([vc, fp, len, tail]) => concatBytes(sig, Uint8Array.of(vc, fp, len >> 8, len & 0xff), tail),
      ),
    );
    fc.assert(
      fc.property(arb, (bytes) => {
        try {
          const r = parseProxyV2(bytes, { maxLength: 400 });
          if (r !== null) expect(r.consumed).toBeLessThanOrEqual(bytes.length);
        } catch (err) {
          if (!(err instanceof ProxyProtocolError)) throw err;
        }
      }),
      { seed: 20250101, numRuns: 3000 },
    );
  });
});

describe('readProxyHeader', () => {
  it('reads a header delivered in pieces and returns the bytes after it, leaving the stream usable', async () => {
    const s = new PassThrough();
    const header = fromHex(SPEC_V4);
    const p = readProxyHeader(s, 1000);
    s.write(header.subarray(0, 5));
    await new Promise((r) => setTimeout(r, 5));
    s.write(concatBytes(header.subarray(5), Uint8Array.of(0xaa, 0xbb)));
    const { header: h, rest } = await p;
    expect(h.source!.address).toBe('192.168.0.1');
    expect([...rest]).toEqual([0xaa, 0xbb]);
    const later: number[] = [];
    s.on('data', (c: Buffer) => later.push(...c));
    s.write(Uint8Array.of(0xcc));
    await new Promise((r) => setTimeout(r, 5));
    expect(later).toEqual([0xcc]);
  });

  it('rejects at the first wrong byte, on timeout, and on EOF', async () => {
    const a = new PassThrough();
    const pa = readProxyHeader(a, 1000);
    a.write('GET / HTTP/1.1\r\n');
    await expect(pa).rejects.toMatchObject({ code: 'PROXY_BAD_SIGNATURE' });

    const b = new PassThrough();
    const pb = readProxyHeader(b, 30);
    b.write(fromHex(SIG));
    await expect(pb).rejects.toMatchObject({ code: 'PROXY_TIMEOUT' });

    const c = new PassThrough();
    const pc = readProxyHeader(c, 1000);
    c.end(fromHex(SIG + '21'));
    await expect(pc).rejects.toMatchObject({ code: 'PROXY_STREAM_CLOSED' });
  });
});
