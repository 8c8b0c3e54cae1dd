// API-key auth (api_key_auth): missing, wrong and right keys on both ingress paths — TLS (curl) and the Noise
// session's Data requests and streams (the forwarder's connect) — 401 before anything reaches the app, the
// header removed before forwarding, the refusal in the transaction log and the key nowhere in it; `run`
// refuses to boot with api_key_auth = true and no key.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { apiKeyHash } from '../../src/http/stages/api-key.ts';
import { startAgentRuntime } from '../../src/runtime/agent.ts';
import { fakeContext, ResponseReader } from '../http/helpers.ts';
import { run, startIngressStack, type IngressStack } from './helpers.ts';

const RIGHT = 'k-right-7f3a9c0e1b2d';
const OTHER = 'k-second-key-41d2';
const WRONG = 'k-wrong-00000000';

let s: IngressStack;
beforeAll(async () => {
  s = await startIngressStack({ forwarder: { apiKeyHashes: [apiKeyHash(RIGHT), apiKeyHash(OTHER)] } });
}, 30_000);
afterAll(async () => {
  await s?.stop();
});

const curl = (p: string, ...extra: string[]) =>
  run('curl', ['-sS', '-k', '-w', '\n%{http_code}', '--resolve', `localhost:${s.port}:127.0.0.1`, ...extra, `https://localhost:${s.port}${p}`]);

describe('api-key auth over TLS', () => {
  it('missing → 401 HTTP_API_KEY_MISSING; wrong → 401 HTTP_API_KEY_INVALID; neither reaches the app', async () => {
    const missing = await curl('/tls-missing');
    expect(missing.stdout).toMatch(/"error":"HTTP_API_KEY_MISSING".*\n401$/s);
    const wrong = await curl('/tls-wrong', '-H', `api-key: ${WRONG}`);
    expect(wrong.stdout).toMatch(/"error":"HTTP_API_KEY_INVALID".*\n401$/s);
    // A key that is a prefix, or the hash itself, is not the key.
    expect((await curl('/tls-prefix', '-H', `api-key: ${RIGHT.slice(0, -1)}`)).stdout).toMatch(/\n401$/);
    expect((await curl('/tls-hash', '-H', `api-key: ${apiKeyHash(RIGHT)}`)).stdout).toMatch(/\n401$/);
    // A POST with a body refused before the body is forwarded.
    expect((await curl('/tls-post', '-X', 'POST', '--data-binary', 'x'.repeat(10_000))).stdout).toMatch(/\n401$/);
    expect(s.app.seen.filter((r) => r.path.startsWith('/tls-'))).toEqual([]);
  });

  it('right (either configured key) → the app, without the api-key header', async () => {
    expect((await curl('/tls-right', '-H', `api-key: ${RIGHT}`)).stdout).toBe('hello\n200');
    expect((await curl('/tls-other', '-H', `API-Key: ${OTHER}`)).stdout).toBe('hello\n200');
    const seen = s.app.seen.filter((r) => r.path.startsWith('/tls-'));
    expect(seen.map((r) => r.path)).toEqual(['/tls-right', '/tls-other']);
    for (const r of seen) expect(Object.keys(r.headers)).not.toContain('api-key');
  });

  it('the transaction log records each outcome and never a key', async () => {
    await new Promise((r) => setTimeout(r, 50));
    const byPath = (p: string) => s.sink.records.find((r) => JSON.stringify(r).includes(`"${p}`));
    expect(byPath('/tls-missing')).toMatchObject({ status: 401, error: 'HTTP_API_KEY_MISSING' });
    expect(byPath('/tls-wrong')).toMatchObject({ status: 401, error: 'HTTP_API_KEY_INVALID' });
    expect(byPath('/tls-right')).toMatchObject({ status: 200 });
    expect(byPath('/tls-right')!.error).toBeUndefined();
    const all = JSON.stringify(s.sink.records);
    for (const k of [RIGHT, OTHER, WRONG, RIGHT.slice(0, -1)]) expect(all).not.toContain(k);
  });
});

describe('api-key auth on the Noise path (Data requests and streams, same forwarder)', () => {
  async function viaSession(kind: 'data' | 'stream', p: string, key?: string): Promise<number> {
    const d = await s.fwd.connect(fakeContext({ kind }));
    const reader = new ResponseReader(d);
    d.write(`GET ${p} HTTP/1.1\r\nHost: localhost\r\n${key === undefined ? '' : `api-key: ${key}\r\n`}Connection: close\r\n\r\n`);
    if (kind === 'data') d.end();
    const res = await reader.next();
    d.destroy();
    return res.status;
  }

  it('Data: missing and wrong → 401, right → 200', async () => {
    expect(await viaSession('data', '/noise-data-missing')).toBe(401);
    expect(await viaSession('data', '/noise-data-wrong', WRONG)).toBe(401);
    expect(await viaSession('data', '/noise-data-right', RIGHT)).toBe(200);
  });

  it('streams: missing and wrong → 401, right → 200', async () => {
    expect(await viaSession('stream', '/noise-stream-missing')).toBe(401);
    expect(await viaSession('stream', '/noise-stream-wrong', WRONG)).toBe(401);
    expect(await viaSession('stream', '/noise-stream-right', RIGHT)).toBe(200);
    // The app reports each request on its stdout, which may arrive after the answer did.
    await expect.poll(() => s.app.seen.filter((r) => r.path.startsWith('/noise-')).length).toBe(2);
    const seen = s.app.seen.filter((r) => r.path.startsWith('/noise-'));
    expect(seen.map((r) => r.path)).toEqual(['/noise-data-right', '/noise-stream-right']);
    for (const r of seen) expect(Object.keys(r.headers)).not.toContain('api-key');
  });
});

describe('run with api_key_auth = true and no key', () => {
  it('refuses to boot with a clear error naming the fix', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ingress-nokey-'));
    try {
      const config = configFromObject({ api_key_auth: true });
      await expect(
        startAgentRuntime({ config, listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0 }, nsm: s.sim, stateDir: dir }),
      ).rejects.toMatchObject({ code: 'RUNTIME_NO_API_KEY', message: expect.stringContaining('[api_key_auth] keys') });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
