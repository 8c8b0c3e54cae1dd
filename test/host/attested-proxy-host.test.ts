// `enclave-agent proxy` on loopback and DNS rebinding: a web page a browser on this machine opens can point its
// own domain at 127.0.0.1 and send requests (and read the answers) through the proxy, to the enclave's app, as
// this machine. Its requests carry its own domain as Host; the proxy answers only loopback Hosts, and forwards
// nothing else (plain requests and upgrades alike). The enclave here is a stand-in Client that records what it
// was asked: this is about the proxy's door, not the attested channel behind it.
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '../../src/client/index.ts';
import { ERROR_HEADER, startAttestedProxy, type AttestedProxy } from '../../src/host/attested-proxy.ts';

const forwarded: string[] = [];
const client = {
  attestation: { moduleId: 'i-test-enc' },
  fetch: (url: string) => {
    forwarded.push(url);
    return Promise.resolve(new Response('from the app', { status: 200, headers: { 'content-type': 'text/plain' } }));
  },
  upgrade: (url: string) => {
    forwarded.push(`upgrade ${url}`);
    return Promise.reject(Object.assign(new Error('no upgrade here'), { code: 'CLIENT_UPGRADE_FAILED', status: 404 }));
  },
  close: () => Promise.resolve(),
} as unknown as Client;

let proxy: AttestedProxy;

beforeAll(async () => {
  proxy = await startAttestedProxy({ connect: () => Promise.resolve(client) });
});

afterAll(async () => {
  await proxy?.close();
});

/** One request with the Host header chosen (fetch does not let us). */
function request(host: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; code: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.port, path, headers: { host, ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, code: res.headers[ERROR_HEADER] as string | undefined, body }));
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode!, code: res.headers[ERROR_HEADER] as string | undefined, body: '' });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('attested proxy on loopback: the Host a request names', () => {
  it('forwards a request for a loopback Host (127.x, [::1], localhost, with or without the port)', async () => {
    for (const host of [`127.0.0.1:${proxy.port}`, '127.0.0.1', `localhost:${proxy.port}`, `[::1]:${proxy.port}`, '127.1.2.3', 'LocalHost']) {
      const r = await request(host, '/ok');
      expect([host, r.status, r.body]).toEqual([host, 200, 'from the app']);
    }
    expect(forwarded.splice(0)).toHaveLength(6);
  });

  it('refuses any other Host with 403 PROXY_HOST_REFUSED and forwards nothing (a rebinding page, an upgrade too)', async () => {
    for (const host of [`attacker.example:${proxy.port}`, 'attacker.example', `127.0.0.1.attacker.example:${proxy.port}`, 'localhost.attacker.example']) {
      const r = await request(host, '/pay');
      expect([host, r.status, r.code]).toEqual([host, 403, 'PROXY_HOST_REFUSED']);
    }
    const up = await request(`attacker.example:${proxy.port}`, '/ws', { connection: 'Upgrade', upgrade: 'websocket' });
    expect([up.status, up.code]).toEqual([403, 'PROXY_HOST_REFUSED']);
    expect(forwarded).toEqual([]);
  });
});

// A web page needs no DNS rebinding to send a request: a cross-site POST (a form, fetch with no-cors) to
// http://127.0.0.1:PORT names a loopback Host and still reaches the app, side effects and all. The browser says
// where it comes from in Origin; curl and server-side clients send none.
describe('attested proxy: the Origin a request comes from', () => {
  it('refuses a non-loopback Origin with 403 PROXY_ORIGIN_REFUSED and forwards nothing (an upgrade too)', async () => {
    const host = `127.0.0.1:${proxy.port}`;
    for (const origin of ['https://attacker.example', 'http://attacker.example:8080', 'null', 'http://127.0.0.1.attacker.example', 'http://localhost.attacker.example', 'file://', 'chrome-extension://abc', 'ftp://127.0.0.1']) {
      const r = await request(host, '/pay', { origin });
      expect([origin, r.status, r.code]).toEqual([origin, 403, 'PROXY_ORIGIN_REFUSED']);
    }
    const up = await request(host, '/ws', { origin: 'https://attacker.example', connection: 'Upgrade', upgrade: 'websocket' });
    expect([up.status, up.code]).toEqual([403, 'PROXY_ORIGIN_REFUSED']);
    expect(forwarded).toEqual([]);
  });

  it('forwards a loopback Origin (http or https, 127.x, localhost, [::1], any port) and a request with none', async () => {
    const host = `127.0.0.1:${proxy.port}`;
    for (const origin of [`http://127.0.0.1:${proxy.port}`, 'http://127.0.0.1', 'https://127.9.8.7:3000', 'http://localhost:5173', 'https://LOCALHOST', 'http://[::1]:8080']) {
      const r = await request(host, '/ok', { origin });
      expect([origin, r.status, r.body]).toEqual([origin, 200, 'from the app']);
    }
    const none = await request(host, '/ok');
    expect([none.status, none.body]).toEqual([200, 'from the app']);
    expect(forwarded.splice(0)).toHaveLength(7);
  });

  it('refuses a cross-site request a browser sends without Origin (an <img>, a link, a form GET): Sec-Fetch-Site and no loopback Referer', async () => {
    const host = `127.0.0.1:${proxy.port}`;
    const refused: Record<string, string>[] = [{ 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'cross-site', referer: 'https://attacker.example/page' }, { 'sec-fetch-site': 'same-site' }];
    for (const headers of refused) {
      const r = await request(host, '/delete?id=1', headers);
      expect([headers, r.status, r.code]).toEqual([headers, 403, 'PROXY_ORIGIN_REFUSED']);
    }
    expect(forwarded).toEqual([]);
    // A loopback page (its Referer or Origin says so), the address bar (none), the app's own pages, and clients
    // that send no Sec-Fetch-Site at all still pass.
    const passed: Record<string, string>[] = [
      { 'sec-fetch-site': 'cross-site', referer: 'http://localhost:5173/app' },
      { 'sec-fetch-site': 'cross-site', origin: 'http://localhost:5173' },
      { 'sec-fetch-site': 'none' },
      { 'sec-fetch-site': 'same-origin' },
      {},
    ];
    for (const headers of passed) {
      const r = await request(host, '/ok', headers);
      expect([headers, r.status]).toEqual([headers, 200]);
    }
    expect(forwarded.splice(0)).toHaveLength(5);
  });
});
