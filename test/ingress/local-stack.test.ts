// Acceptance: an Evervault enclave.toml with tls_termination = true and api_key_auth = true, run by `start`
// (the local stack), serves HTTPS with an attested certificate: the relay (standing in for `bridge
// --tls-listen`) → the agent's TLS port → the app; the independent Python verifier accepts the document under
// the stack's simulator root; the development API key start printed is required.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalStack, type LocalStack } from '../../src/cli/start.ts';
import { run, startPythonApp, verifyWithPython, type PythonApp } from './helpers.ts';

const FIXTURE = fileURLToPath(new URL('../config/fixtures/evervault/api-key-auth.enclave.toml', import.meta.url));

let dir: string;
let app: PythonApp | undefined;
let stack: LocalStack | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'ingress-start-'));
  app = await startPythonApp();
  stack = await startLocalStack({
    configPath: FIXTURE,
    stateDir: path.join(dir, 'state'),
    bridgePort: 0,
    opsPort: 0,
    agentPort: 0,
    controlPort: undefined,
    appPort: app.port,
    apiPort: 0,
    debug: false,
    logger: pino({ enabled: false }),
  });
}, 30_000);

afterAll(async () => {
  await stack?.tlsRelay?.close();
  await stack?.bridge.close();
  await stack?.runtime.close();
  await stack?.egressDialer.close();
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('start with an Evervault enclave.toml (tls_termination = true)', () => {
  it('prints an httpsUrl and an apiKey; curl and the independent verifier reach the app with the key only', async () => {
    expect(stack!.httpsUrl).toMatch(/^https:\/\/localhost:\d+\/$/);
    expect(stack!.apiKey).toMatch(/^dev-[A-Za-z0-9_-]{32}$/);
    const port = Number(new URL(stack!.httpsUrl!).port);
    const curl = (...extra: string[]) => run('curl', ['-sS', '-k', '--resolve', `localhost:${port}:127.0.0.1`, ...extra]);
    expect((await curl(`${stack!.httpsUrl!}no-key`)).stdout).toContain('"error":"HTTP_API_KEY_MISSING"');
    const r = await curl('-H', `api-key: ${stack!.apiKey!}`, `${stack!.httpsUrl!}from-start`);
    expect(r.stdout).toBe('hello');
    const out = await verifyWithPython(port, 'localhost', stack!.rootPem, { path: '/verified-from-start', apiKey: stack!.apiKey! });
    expect(out.error).toBeUndefined();
    expect(out).toMatchObject({ ok: true, status: 200, body: 'hello' });
    expect(app!.seen.map((s) => s.path).filter((p) => p !== '/health')).toEqual(['/from-start', '/verified-from-start']);
  });
});
