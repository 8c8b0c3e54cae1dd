// The local API refuses what a browser on the same machine can be made to send it (issue 14, item 5): a Host that
// is not 127.0.0.1:<port>/localhost:<port> (DNS rebinding — replayed with real curl and --resolve), any Origin
// header (cross-site requests), and JSON routes without Content-Type application/json ("simple" form posts).
// Each refusal is a 4xx with a JSON {error, message} body, and no route runs.
import { execFile } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { promisify } from 'node:util';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../../src/api/server.ts';
import type { AttestationRequest, Nsm } from '../../src/attestation/nsm.ts';
import { Keyring } from '../../src/crypto/keyring.ts';

class CountingNsm implements Nsm {
  requests: AttestationRequest[] = [];
  attest(req: AttestationRequest): Promise<Uint8Array> {
    this.requests.push(req);
    return Promise.resolve(Uint8Array.from([0x84, 0x40, 0xa0, 0x40, 0x40]));
  }
  random(n: number): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(n));
  }
}

const nsm = new CountingNsm();
let api: ApiServer;
let port: number;

beforeAll(async () => {
  api = await startApiServer({ keyring: Keyring.generate(), nsm, port: 0, logger: pino({ level: 'silent' }) });
  port = api.port;
});
afterAll(async () => {
  await api.close();
});

interface Reply {
  status: number;
  body: { error?: string; message?: string };
}

/** One request through node:http, which sends Host and Origin exactly as given. */
function request(method: string, path: string, headers: Record<string, string>, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false, setHost: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: Reply['body'] = {};
        try {
          parsed = JSON.parse(text) as Reply['body'];
        } catch {
          /* non-JSON success bodies (CBOR) */
        }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Raw bytes over TCP for what node:http will not send (no Host, two Hosts); returns the status line's code. */
function rawStatus(head: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(got);
      if (m) {
        s.destroy();
        resolve(Number(m[1]));
      }
    });
    s.on('error', reject);
    s.write(head);
  });
}

const json = { 'content-type': 'application/json' };
const host = (): Record<string, string> => ({ host: `127.0.0.1:${port}` });

describe('Host', () => {
  it('DNS rebinding (curl resolving rebind.example to 127.0.0.1) gets 403 API_FORBIDDEN_HOST on every route', async () => {
    const run = promisify(execFile);
    const before = nsm.requests.length;
    for (const [method, path] of [['POST', '/attestation-doc'], ['POST', '/encrypt'], ['GET', '/health']] as const) {
      const args = ['-s', '-o', '-', '-w', '\\n%{http_code}', '--resolve', `rebind.example:${port}:127.0.0.1`, `http://rebind.example:${port}${path}`];
      if (method === 'POST') args.push('-H', 'content-type: application/json', '--data', '{}');
      const { stdout } = await run('curl', args, { timeout: 10_000 });
      const [body, code] = [stdout.slice(0, stdout.lastIndexOf('\n')), stdout.slice(stdout.lastIndexOf('\n') + 1)];
      expect([path, code]).toEqual([path, '403']);
      const parsed = JSON.parse(body) as { error: string; message: string };
      expect(parsed.error).toBe('API_FORBIDDEN_HOST');
      expect(parsed.message).toBe(`Host must be 127.0.0.1:${port} or localhost:${port}, found "rebind.example:${port}"`);
    }
    expect(nsm.requests.length).toBe(before); // no document was made
  });

  it('accepts 127.0.0.1:<port> and localhost:<port> (any case), refuses every other form', async () => {
    for (const h of [`127.0.0.1:${port}`, `localhost:${port}`, `LocalHost:${port}`]) {
      expect((await request('GET', '/health', { host: h })).status, h).toBe(200);
    }
    for (const h of ['127.0.0.1', 'localhost', `127.0.0.1:${port + 1}`, `[::1]:${port}`, `127.0.0.1:${port}.rebind.example`, `0x7f000001:${port}`, `127.1:${port}`, '']) {
      const r = await request('GET', '/health', { host: h });
      expect([h, r.status, r.body.error]).toEqual([h, 403, 'API_FORBIDDEN_HOST']);
    }
  });

  it('refuses a request without Host and one with two Host headers', async () => {
    expect(await rawStatus('GET /health HTTP/1.0\r\n\r\n')).toBe(403);
    expect(await rawStatus(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nHost: rebind.example\r\nConnection: close\r\n\r\n`)).toBe(403);
  });
});

describe('Origin', () => {
  it('refuses any Origin with 403 API_FORBIDDEN_ORIGIN, before routing and before any work', async () => {
    const before = nsm.requests.length;
    for (const origin of ['https://evil.example', 'null', `http://127.0.0.1:${port}`, `http://localhost:${port}`]) {
      for (const [method, path, body] of [['POST', '/attestation-doc', '{}'], ['GET', '/health', undefined], ['GET', '/no-such-route', undefined]] as const) {
        const r = await request(method, path, { ...host(), ...json, origin }, body);
        expect([origin, path, r.status, r.body.error]).toEqual([origin, path, 403, 'API_FORBIDDEN_ORIGIN']);
        expect(r.body.message).toContain('Origin');
      }
    }
    expect(nsm.requests.length).toBe(before);
  });
});

describe('Content-Type on JSON routes', () => {
  it('answers 415 API_UNSUPPORTED_MEDIA_TYPE for anything but application/json, without running the route', async () => {
    const before = nsm.requests.length;
    for (const type of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json-seq', 'application/jsonx', 'text/json']) {
      for (const path of ['/encrypt', '/decrypt', '/attestation-doc']) {
        const r = await request('POST', path, { ...host(), ...(type === undefined ? {} : { 'content-type': type }) }, '{}');
        expect([type, path, r.status, r.body.error]).toEqual([type, path, 415, 'API_UNSUPPORTED_MEDIA_TYPE']);
        expect(r.body.message).toMatch(/^Content-Type must be application\/json, found /);
      }
    }
    expect(nsm.requests.length).toBe(before);
  });

  it('accepts application/json with parameters and in any case', async () => {
    for (const type of ['application/json', 'application/json; charset=utf-8', 'Application/JSON']) {
      expect((await request('POST', '/encrypt', { ...host(), 'content-type': type }, '"x"')).status, type).toBe(200);
      expect((await request('POST', '/attestation-doc', { ...host(), 'content-type': type }, '{}')).status, type).toBe(200);
    }
  });

  it('leaves GET /health without a body alone', async () => {
    expect((await request('GET', '/health', host())).status).toBe(200);
  });
});
