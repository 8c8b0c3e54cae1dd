// The DNS message parser on hostile input: what a query or a response from the network may carry and what the
// parser must refuse (EGRESS_BAD_DNS_MESSAGE) before anything downstream sees it.
import { describe, expect, it } from 'vitest';
import { buildQuery, buildResponse, parseQuery, parseResponse } from '../../src/egress/dns-message.ts';

/** A query header (id 0x1234, RD, one question) followed by `name` as raw wire bytes, type A, class IN. */
function rawQuery(name: number[]): Buffer {
  return Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, ...name, 0, 1, 0, 1]);
}
const label = (s: string): number[] => [s.length, ...Buffer.from(s, 'latin1')];

describe('DNS message: names', () => {
  it('reads a plain name and writes it back', () => {
    const q = parseQuery(buildQuery(7, 'api.example.com', 1));
    expect(q.question.name).toBe('api.example.com');
    expect(parseResponse(buildResponse(q, 0, [])).question!.name).toBe('api.example.com');
  });

  it('refuses a wire label holding a "." byte: "a."+"com" would read as a..com, "example"+"com." as example.com.', () => {
    for (const name of [[...label('a.'), ...label('com'), 0], [...label('example'), ...label('com.'), 0], [...label('.'), 0]]) {
      expect(() => parseQuery(rawQuery(name)), JSON.stringify(name)).toThrow(expect.objectContaining({ code: 'EGRESS_BAD_DNS_MESSAGE' }));
    }
  });

  it('accepts a name of 255 octets on the wire (253 characters), the RFC 1035 limit', () => {
    const name = ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(61)];
    expect(parseQuery(rawQuery([...name.flatMap(label), 0])).question.name).toBe(name.join('.'));
  });

  it('stops walking a name at 255 octets: a run of 1-byte labels is refused for its length, not walked to its end', () => {
    // 200 one-byte labels and no end: refused at the limit, before "runs past the end"
    const run = Array.from({ length: 200 }, () => label('a')).flat();
    const msg = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, ...run]);
    expect(() => parseQuery(msg)).toThrow(/longer than 255 octets/);
  });

  it('refuses a ~64 KiB run of 1-byte labels looped by a backward pointer for its length, before any pointer is followed', () => {
    // the costly shape: every jump would re-walk the whole run (64 jumps × ~32,000 labels) before any limit applied
    const msg: number[] = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    while (msg.length < 65_531) msg.push(1, 0x61);
    msg.push(0xc0, 12, 0, 1, 0, 1);
    expect(() => parseQuery(Buffer.from(msg))).toThrow(/longer than 255 octets/);
    // a response's answers (from the host's resolvers) go through the same walk
    const res = Buffer.from(msg);
    res.writeUInt16BE(0x8180, 2);
    expect(() => parseResponse(res)).toThrow(/longer than 255 octets/);
  });
});
