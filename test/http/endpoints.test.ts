import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { fromBase64, toHex } from '../../src/util/bytes.ts';
import type { ForwardContext } from '../../src/responder/forwarder.ts';
import { dataRequest, fakeContext, get, json, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
let sim: NsmSimulator;
let stateDir: string;

beforeAll(async () => {
  stateDir = mkdtempSync(path.join(os.tmpdir(), 'http-attest-'));
  sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'node app.js', config: 'x' } });
});

afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

function simContext(hash: Uint8Array, nsm: NsmSimulator = sim): ForwardContext {
  return fakeContext({ handshakeHash: hash, attest: (extra) => nsm.attest({ nonce: hash, userData: extra?.userData ?? null, publicKey: extra?.publicKey ?? null }) });
}

describe('/.well-known/attestation', () => {
  it('serves a fresh document bound to the session handshake hash that verifies with the simulator root', async () => {
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const hash = new Uint8Array(32).map((_, i) => i + 1);
    const ctx = simContext(hash);
    const res = await dataRequest(fwd, get('/.well-known/attestation'), ctx);
    expect(res.status).toBe(200);
    expect(res.headers['access-control-allow-origin']).toBe('*');
    expect(res.headers['cache-control']).toBe('no-store');
    const body = json(res.body) as { attestation_doc: string };
    const doc = await verifyAttestation(fromBase64(body.attestation_doc), { roots: [sim.rootPem], nonce: hash });
    expect(toHex(doc.nonce!)).toBe(toHex(hash));
    // A second request gets another document (fresh, not cached).
    const again = json((await dataRequest(fwd, get('/.well-known/attestation?t=2'), ctx)).body) as { attestation_doc: string };
    expect(again.attestation_doc).not.toBe(body.attestation_doc);
    expect(app.seen).toHaveLength(0);
  });

  it('shows new PCRs to a polling client after a redeploy', async () => {
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const hash = new Uint8Array(32).fill(9);
    const before = json((await dataRequest(fwd, get('/.well-known/attestation'), simContext(hash))).body) as { attestation_doc: string };
    const redeployed = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'node app-v2.js', config: 'x' } });
    const after = json((await dataRequest(fwd, get('/.well-known/attestation'), simContext(hash, redeployed))).body) as { attestation_doc: string };
    const d1 = await verifyAttestation(fromBase64(before.attestation_doc), { roots: [sim.rootPem], nonce: hash });
    const d2 = await verifyAttestation(fromBase64(after.attestation_doc), { roots: [redeployed.rootPem], nonce: hash });
    expect(toHex(d1.pcrs.get(2)!)).not.toBe(toHex(d2.pcrs.get(2)!));
  });

  it('answers a CORS preflight and uses the configured origin', async () => {
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), corsOrigin: 'https://wallet.example' });
    const pre = await dataRequest(fwd, 'OPTIONS /.well-known/attestation HTTP/1.1\r\nHost: a\r\nOrigin: https://wallet.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: x-sdk\r\nConnection: close\r\n\r\n');
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe('https://wallet.example');
    expect(pre.headers['access-control-allow-methods']).toContain('GET');
    expect(pre.headers['access-control-allow-headers']).toBe('x-sdk');
    const post = await dataRequest(fwd, 'POST /.well-known/attestation HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    expect(post.status).toBe(405);
  });

  it('answers 503 JSON when no document can be produced', async () => {
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const res = await dataRequest(fwd, get('/.well-known/attestation'), fakeContext({ attest: () => Promise.reject(new Error('nsm gone')) }));
    expect(res.status).toBe(503);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_ATTESTATION_UNAVAILABLE' });
  });

  it('refuses ?nonce= on a Noise session (its nonce is the handshake hash), attesting nothing', async () => {
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    let attested = 0;
    const ctx = fakeContext({ attest: () => (attested++, Promise.resolve(new Uint8Array(1))) });
    const res = await dataRequest(fwd, get('/.well-known/attestation?nonce=AAECAw'), ctx);
    expect(res.status).toBe(400);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_BAD_REQUEST', message: expect.stringContaining('Noise handshake') });
    expect(attested).toBe(0);
  });

  it('answers 429 with Retry-After when the client-nonce budget is spent (TLS connection)', async () => {
    app = await startApp((_req, res) => res.end('app'));
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const limited = Object.assign(new Error('too many documents for client nonces requested; retry later'), { code: 'INGRESS_NONCE_RATE_LIMITED' });
    const res = await dataRequest(fwd, get('/.well-known/attestation?nonce=AAECAw'), fakeContext({ attestWithNonce: () => Promise.reject(limited) }));
    expect(res.status).toBe(429);
    expect(res.headers['retry-after']).toBe('1');
    expect(json(res.body)).toMatchObject({ error: 'HTTP_RATE_LIMITED' });
  });
});

describe('health', () => {
  it('reports the agent and the app as up (200) when the app health path answers 2xx', async () => {
    app = await startApp((req, res) => {
      res.statusCode = req.url === '/healthz' ? 204 : 404;
      res.end();
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), healthcheck: { path: '/healthz', intervalMs: 60_000 } });
    const res = await dataRequest(fwd, get('/.well-known/health'));
    expect(res.status).toBe(200);
    expect(json(res.body)).toMatchObject({ status: 'ok', agent: { status: 'ok' }, app: { status: 'up', http_status: 204, probe: 'http GET /healthz' } });
    expect(app.seen.some((s) => s.url === '/healthz')).toBe(true);
  });

  it('reports 503 when the app health path fails, and 503 when the app is down', async () => {
    app = await startApp((_req, res) => {
      res.statusCode = 500;
      res.end();
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), healthcheck: { path: '/healthz', intervalMs: 1 } });
    const failing = await dataRequest(fwd, get('/.well-known/health'));
    expect(failing.status).toBe(503);
    expect(json(failing.body)).toMatchObject({ status: 'unhealthy', agent: { status: 'ok' }, app: { status: 'down', http_status: 500 } });
    await app.close();
    app = undefined;
    // A probe already on its way when the app closed may still report its 500: every answer is 503, and within a
    // few probes (one per ms here) the refused connection shows.
    let down = await dataRequest(fwd, get('/.well-known/health'));
    for (let i = 0; i < 50 && (json(down.body) as { app?: { error?: string } }).app?.error === undefined; i++) {
      expect(down.status).toBe(503);
      await new Promise((r) => setTimeout(r, 10));
      down = await dataRequest(fwd, get('/.well-known/health'));
    }
    expect(down.status).toBe(503);
    expect(json(down.body)).toMatchObject({ app: { status: 'down', error: 'ECONNREFUSED' } });
  });

  it('periodic: false (a session worker) probes only when asked, never on a timer', async () => {
    app = await startApp((req, res) => {
      res.statusCode = req.url === '/healthz' ? 204 : 404;
      res.end();
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), healthcheck: { path: '/healthz', intervalMs: 10, periodic: false } });
    await new Promise((r) => setTimeout(r, 100)); // ten intervals
    expect(app.seen).toHaveLength(0);
    const res = await dataRequest(fwd, get('/.well-known/health'));
    expect(json(res.body)).toMatchObject({ app: { status: 'up', http_status: 204 } });
    expect(app.seen.filter((s) => s.url === '/healthz')).toHaveLength(1);
  });

  it('probes the app port by TCP when no health path is configured', async () => {
    app = await startApp((_req, res) => res.end());
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const res = await dataRequest(fwd, get('/.well-known/health'));
    expect(res.status).toBe(200);
    expect(json(res.body)).toMatchObject({ app: { status: 'up', probe: 'tcp connect' } });
    expect(app.seen).toHaveLength(0);
  });
});
