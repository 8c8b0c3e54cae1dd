// A request target in absolute-form (`GET http://host/path`), which Node's parser takes: the agent is the
// origin server its clients talk to, so (RFC 9112 §3.2.2) the target's authority is the request's host and
// the app gets origin-form. Forwarded as it came, the app got `http://other.example/x` with the client's
// Host beside it: two hosts for one request, and a path most apps do not route.
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

describe('absolute-form request targets', () => {
  it('reach the app in origin-form, with the target authority as the only Host', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    for (const [target, path] of [
      ['http://other.example/x?q=1', '/x?q=1'],
      ['HTTPS://other.example', '/'],
      ['http://other.example?q', '/?q'],
    ] as const) {
      const res = await dataRequest(fwd, `GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`, fakeContext({ kind: 'stream' }));
      expect(res.status).toBe(200);
      const seen = app.seen.at(-1)!;
      expect(seen.url).toBe(path);
      expect(seen.rawHeaders.filter((_, i) => i % 2 === 0 && seen.rawHeaders[i]!.toLowerCase() === 'host').length).toBe(1);
      expect(seen.headers.host).toBe('other.example');
    }
  });

  it("reach the agent's own endpoints as their origin-form does, not the app", async () => {
    // The endpoints ran before the target was put in origin-form: `GET http://a/.well-known/attestation` went to
    // the app as /.well-known/attestation, where the same request in origin-form gets the agent's document.
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    let attested = 0;
    const ctx = fakeContext({ kind: 'stream', attest: () => (attested++, Promise.resolve(Uint8Array.of(1, 2, 3))) });
    const doc = await dataRequest(fwd, 'GET http://a/.well-known/attestation HTTP/1.1\r\nHost: a\r\n\r\n', ctx);
    expect(doc.status).toBe(200);
    expect(JSON.parse(doc.body.toString())).toMatchObject({ attestation_doc: 'AQID' });
    expect(attested).toBe(1);
    const health = await dataRequest(fwd, 'GET HTTP://a/.well-known/health HTTP/1.1\r\nHost: a\r\n\r\n', fakeContext({ kind: 'stream' }));
    expect(JSON.parse(health.body.toString())).toHaveProperty('agent');
    expect(app.seen).toEqual([]);
  });

  it('refuses an absolute-form target with userinfo or without a host (400), without forwarding it', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    for (const target of ['http://user:pw@other.example/x', 'http:///x']) {
      const res = await dataRequest(fwd, `GET ${target} HTTP/1.1\r\nHost: a\r\n\r\n`, fakeContext({ kind: 'stream' }));
      expect(res.status).toBe(400);
    }
    expect(app.seen).toEqual([]);
  });
});
