// A request whose Transfer-Encoding lists a coding besides chunked (`gzip, chunked`): Node's parser takes
// it (the last coding is chunked) and hands over the body with only the chunked framing undone. Forwarded,
// the app got the still-gzipped bytes with no Transfer-Encoding and no Content-Encoding saying so: a body
// it reads as something else. RFC 9112 §6.1: a coding the server does not understand gets 501.
import { gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { dataRequest, fakeContext, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

function chunked(body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]);
}

describe('request transfer codings', () => {
  it('answers 501 to a transfer coding other than chunked, without forwarding the request', async () => {
    app = await startApp((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    for (const te of ['gzip, chunked', 'deflate,chunked', 'x-custom , chunked']) {
      const raw = Buffer.concat([Buffer.from(`POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ${te}\r\n\r\n`), chunked(gzipSync('{"a":1}'))]);
      const res = await dataRequest(fwd, raw, fakeContext({ kind: 'stream' }));
      expect(res.status).toBe(501);
      expect(JSON.parse(res.body.toString())).toMatchObject({ error: 'HTTP_UNSUPPORTED_TRANSFER_CODING' });
    }
    expect(app.seen).toEqual([]);
  });

  it('still forwards a chunked body (any letter case)', async () => {
    app = await startApp((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const res = await dataRequest(fwd, Buffer.concat([Buffer.from('POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n'), chunked(Buffer.from('{"a":1}'))]), fakeContext({ kind: 'stream' }));
    expect(res.status).toBe(200);
    expect(app.seen.map((s) => s.url)).toEqual(['/x']);
  });
});
