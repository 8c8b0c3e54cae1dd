import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encodeProxyV2, parseProxyV2 } from '../../src/transport/proxy-v2.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder, HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { ForwardContext } from '../../src/responder/forwarder.ts';
import { dataRequest, fakeContext, get, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

async function setup(over: Partial<HttpModeOptions> = {}): Promise<HttpForwarder> {
  app = await startApp((_req, res) => res.end('ok'));
  fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), ...over });
  return fwd;
}

/** The client address the way the session derives it: from the bridge's PROXY v2 header. */
function contextFromProxyHeader(source: string, port: number): ForwardContext {
  const header = encodeProxyV2({ source: { address: source, port }, destination: { address: source.includes(':') ? '::1' : '10.0.0.1', port: 5000 } });
  const parsed = parseProxyV2(header);
  if (parsed?.source === undefined) throw new Error('test setup: PROXY header did not parse');
  return fakeContext({ client: parsed.source });
}

describe('client address', () => {
  it('tells the app the client IP from the bridge PROXY v2 header (X-Forwarded-For, X-Forwarded-Proto, Forwarded)', async () => {
    const f = await setup();
    await dataRequest(f, get('/'), contextFromProxyHeader('198.51.100.7', 50123));
    const h = app!.seen[0]!.headers;
    expect(h['x-forwarded-for']).toBe('198.51.100.7');
    expect(h['x-forwarded-proto']).toBe('https');
    expect(h['forwarded']).toBe('for=198.51.100.7;proto=https');
  });

  it('quotes and brackets an IPv6 client in Forwarded', async () => {
    const f = await setup();
    await dataRequest(f, get('/'), contextFromProxyHeader('2001:db8::5', 443));
    const h = app!.seen[0]!.headers;
    expect(h['x-forwarded-for']).toBe('2001:db8::5');
    expect(h['forwarded']).toBe('for="[2001:db8::5]";proto=https');
  });

  it('does not trust a forged X-Forwarded-For / Forwarded / X-Real-IP from the client', async () => {
    const f = await setup();
    const forged = get('/', { 'X-Forwarded-For': '1.2.3.4', 'x-forwarded-for': '5.6.7.8', Forwarded: 'for=1.2.3.4', 'X-Real-IP': '1.2.3.4', 'X-Forwarded-Proto': 'http' });
    await dataRequest(f, forged, contextFromProxyHeader('198.51.100.7', 1));
    const raw = app!.seen[0]!.rawHeaders;
    const values = (name: string): string[] => raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === name);
    expect(values('x-forwarded-for')).toEqual(['198.51.100.7']);
    expect(values('forwarded')).toEqual(['for=198.51.100.7;proto=https']);
    expect(values('x-real-ip')).toEqual([]);
    expect(values('x-forwarded-proto')).toEqual(['https']);
  });

  it('drops the client-IP headers of CDNs and proxies (X-Client-IP, True-Client-IP...): libraries read them first', async () => {
    // Failed before: request-ip (and similar) take X-Client-IP over X-Forwarded-For, so the client chose its address.
    const forged = { 'X-Client-IP': '6.6.6.6', 'True-Client-IP': '6.6.6.6', 'CF-Connecting-IP': '6.6.6.6', 'Fastly-Client-IP': '6.6.6.6', 'X-Cluster-Client-IP': '6.6.6.6', 'X-Forwarded': 'for=6.6.6.6', 'Forwarded-For': '6.6.6.6', X_Client_IP: '6.6.6.6', 'X-Other': 'kept' };
    for (const trustForwardedFromClient of [false, true]) {
      const f = await setup({ trustForwardedFromClient });
      await dataRequest(f, get('/', forged), contextFromProxyHeader('198.51.100.7', 1));
      const raw = app!.seen[0]!.rawHeaders;
      expect(raw.filter((_, i) => i % 2 === 1 && raw[i]!.includes('6.6.6.6'))).toEqual([]);
      expect(app!.seen[0]!.headers['x-other']).toBe('kept');
      expect(app!.seen[0]!.headers['x-forwarded-for']).toBe('198.51.100.7');
      await fwd!.close();
      await app!.close();
    }
    fwd = undefined;
    app = undefined;
  });

  it('drops every X-Forwarded-* a client writes (Prefix, Ssl, Scheme...) and the scheme headers apps read, not only the ones the agent sets', async () => {
    // Failed before: only X-Forwarded-For/-Proto/-Host/-Port reached the list, so a client chose the prefix
    // (Werkzeug ProxyFix, Spring, Symfony, ASP.NET build URLs and redirects from it) and the scheme (Rack reads
    // X-Forwarded-Scheme and X-Forwarded-Ssl before X-Forwarded-Proto; gunicorn X-Forwarded-Protocol) of a
    // request that came from the agent on 127.0.0.1, a proxy they trust by default.
    const forged = {
      'X-Forwarded-Prefix': '/evil',
      'X-Forwarded-Ssl': 'off',
      'X-Forwarded-Scheme': 'http',
      'X-Forwarded-Protocol': 'http',
      'X-Forwarded-Server': 'evil',
      'x-forwarded-uri': '/evil',
      X_Forwarded_Prefix: '/evil',
      'Front-End-Https': 'off',
      'X-Url-Scheme': 'http',
      'X-Forwardedish': 'kept',
    };
    const f = await setup();
    await dataRequest(f, get('/', forged), contextFromProxyHeader('198.51.100.7', 1));
    const seen = app!.seen[0]!.headers;
    const names = Object.keys(seen);
    expect(names.filter((n) => n.startsWith('x-forwarded') || n.startsWith('x_forwarded')).sort()).toEqual(['x-forwarded-for', 'x-forwarded-proto', 'x-forwardedish']);
    expect(names).not.toContain('front-end-https');
    expect(names).not.toContain('x-url-scheme');
    expect(seen['x-forwarded-proto']).toBe('https');
    expect(seen['x-forwardedish']).toBe('kept');
  });

  it('strips forged forwarding headers even when the client address is unknown', async () => {
    const f = await setup();
    await dataRequest(f, get('/', { 'X-Forwarded-For': '1.2.3.4' }), fakeContext());
    const h = app!.seen[0]!.headers;
    expect(h['x-forwarded-for']).toBeUndefined();
    expect(h['x-forwarded-proto']).toBe('https');
  });

  it('appends to the client chain when the peer is trusted', async () => {
    const f = await setup({ trustForwardedFromClient: true });
    await dataRequest(f, get('/', { 'X-Forwarded-For': '1.2.3.4', Forwarded: 'for=1.2.3.4' }), contextFromProxyHeader('198.51.100.7', 1));
    const h = app!.seen[0]!.headers;
    expect(h['x-forwarded-for']).toBe('1.2.3.4, 198.51.100.7');
    expect(h['forwarded']).toBe('for=1.2.3.4, for=198.51.100.7;proto=https');
  });

  it('drops underscore aliases of the headers the agent sets (a CGI/WSGI app reads X_Forwarded_For as X-Forwarded-For)', async () => {
    const key = 'k-0123456789';
    const f = await setup({ trustForwardedFromClient: true, apiKeyHashes: [createHash('sha256').update(key).digest('hex')] });
    const aliases = { X_Forwarded_For: '6.6.6.6', x_real_ip: '6.6.6.6', X_FORWARDED_PROTO: 'http', x_request_id: 'forged', api_key: 'other', 'api-key': key, X_Trace_Id: 'kept' };
    await dataRequest(f, get('/', aliases), contextFromProxyHeader('203.0.113.7', 1));
    const raw = app!.seen[0]!.rawHeaders;
    const names = raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(names.filter((n) => n.includes('_'))).toEqual(['x_trace_id']);
    expect(app!.seen[0]!.headers['x-forwarded-for']).toBe('203.0.113.7');
    expect(names).not.toContain('api-key');
  });

  it('never writes a client address that is not an IP literal', async () => {
    const f = await setup();
    await dataRequest(f, get('/'), fakeContext({ client: { address: '1.2.3.4\r\nX-Evil: 1', port: 1, family: 'IPv4' } }));
    const h = app!.seen[0]!.headers;
    expect(h['x-forwarded-for']).toBeUndefined();
    expect(h['x-evil']).toBeUndefined();
  });
});
