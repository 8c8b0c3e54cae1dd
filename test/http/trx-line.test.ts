import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { recordLine } from '../../src/http/log-sink.ts';
import { createHeaderMasker, trxLine, trxRecord } from '../../src/http/stages/trx-log.ts';
import type { TrxRecordInput } from '../../src/http/stages/trx-log.ts';

const names = fc.oneof(
  fc.constantFrom('Host', 'host', 'User-Agent', 'user-agent', 'Set-Cookie', 'Authorization', 'Cookie', 'X-Api-Key', 'X-Trace-Id', 'x-ok', 'X-OK', 'Content-Type'),
  fc.constantFrom('constructor', '__proto__', 'toString', '0', '1', '42', '007', 'hasOwnProperty'),
  fc.string({ minLength: 1, maxLength: 12 }),
);
const values = fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.constantFrom('a"b\\c', '\u0000\u001f', '\ud800', 'x'.repeat(600), '\ud83d\ude00'.repeat(300)));
const headers = fc.array(fc.tuple(names, values), { maxLength: 80 }).map((pairs) => pairs.flat());

const input = fc.record<TrxRecordInput>({
  txid: fc.uuid(),
  startedAt: fc.integer({ min: 0, max: 4_000_000_000_000 }),
  elapsedMs: fc.oneof(fc.double({ min: 0, max: 1e6, noNaN: true }), fc.constant(Number.NaN)),
  sessionId: fc.string({ maxLength: 16 }),
  type: fc.constantFrom('HTTP', 'WebSocket', 'TCP'),
  method: fc.constantFrom('GET', 'POST', '', 'M"'),
  url: fc.oneof(fc.constantFrom('/', '/a?b=1&c', '/x#frag', '/é?q="'), fc.string({ maxLength: 30 })),
  status: fc.oneof(fc.constantFrom(0, 200, 404, 502), fc.integer({ min: 100, max: 999 })),
  bytesIn: fc.nat(),
  bytesOut: fc.nat(),
  remoteIp: fc.option(fc.constantFrom('127.0.0.1', '::1'), { nil: undefined }),
  requestHeaders: headers,
  responseHeaders: headers,
  decryptedFields: fc.nat({ max: 100 }),
  error: fc.option(fc.constantFrom('CLIENT_GONE', 'HTTP_APP_UNREACHABLE', 'x"\n'), { nil: undefined }),
  abandonedRequests: fc.option(fc.oneof(fc.integer({ min: 2, max: 10_000 }), fc.constant(Number.NaN)), { nil: undefined }),
  abandonedOutcomes: fc.option(
    fc.array(fc.record({ status: fc.constantFrom(0, 400, 408, 413), error: fc.option(fc.constantFrom('CLIENT_GONE', 'DRAINING', 'HTTP_BAD_REQUEST', 'OTHER', 'x"\n'), { nil: undefined }), requests: fc.nat() }), { maxLength: 14 }),
    { nil: undefined },
  ),
});

describe('transaction record lines', () => {
  it('writes the exact line recordLine gives for the record object, masking included', () => {
    const mask = createHeaderMasker(['x-ok', 'x-trace-*', 'cookie']);
    fc.assert(
      fc.property(input, (i) => {
        expect(trxLine(i, mask)).toBe(recordLine(trxRecord(i, mask)));
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps credentials masked and repeated headers as arrays in the direct line', () => {
    const mask = createHeaderMasker(['authorization', 'x-ok']);
    const line = trxLine(
      {
        txid: 't',
        startedAt: 0,
        elapsedMs: 1.23456,
        sessionId: 's',
        type: 'HTTP',
        method: 'GET',
        url: '/p?token=secret',
        status: 200,
        bytesIn: 0,
        bytesOut: 2,
        remoteIp: undefined,
        requestHeaders: ['Host', 'h', 'Authorization', 'Bearer secret', 'X-Ok', '1', 'x-ok', '2', 'X-Other', 'hidden'],
        responseHeaders: ['Set-Cookie', 'a=secret', 'Set-Cookie', 'b=secret'],
        decryptedFields: 0,
        error: undefined,
      },
      mask,
    );
    expect(line).not.toContain('secret');
    expect(line).not.toContain('hidden');
    const rec = JSON.parse(line) as Record<string, unknown>;
    expect(rec.request_headers).toEqual({ host: 'h', authorization: '***', 'x-ok': ['1', '2'], 'x-other': '***' });
    expect(rec.response_headers).toEqual({ 'set-cookie': ['***', '***'] });
    expect(rec.path).toBe('/p?token=***');
    expect(rec.elapsed_ms).toBe(1.235);
  });
});
