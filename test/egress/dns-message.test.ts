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
});
