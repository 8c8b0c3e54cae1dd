// What an idle agent loads at boot: the libraries of features it is not configured for stay unloaded (each
// costs MiB of resident memory in every enclave). acme-client is loaded when [tls] acme is set, the AWS SDK when
// KMS is (keyring or [secrets] kms: values), undici by the first request that leaves the fast path (the health
// probe uses the lean client), never by a default `run`.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, startRun, until, type RunningAgent } from './harness.ts';

const RECORDER = path.join(REPO, 'test/runtime/fixtures/record-imports.mjs');
const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-boot-imports-'));
let agent: RunningAgent | undefined;
let probing: RunningAgent | undefined;

afterAll(async () => {
  await agent?.dispose();
  await probing?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('agent boot imports', () => {
  it('a default `run` (dev keyring, no ACME, no KMS) loads neither acme-client, the AWS SDK nor undici', async () => {
    const record = path.join(dir, 'imports.txt');
    agent = await startRun({ env: { NODE_OPTIONS: `--import ${RECORDER}`, RECORD_IMPORTS_FILE: record } });
    await agent.waitForLog('runtime started');
    const imported = readFileSync(record, 'utf8').split('\n');
    // The recorder works: the agent's own always-needed libraries are in the list.
    expect(imported.some((u) => u.includes('/node_modules/pino/'))).toBe(true);
    expect(imported.filter((u) => u.includes('/node_modules/acme-client/'))).toEqual([]);
    expect(imported.filter((u) => u.includes('/node_modules/@aws-sdk/'))).toEqual([]);
    expect(imported.filter((u) => u.includes('/node_modules/undici/'))).toEqual([]);
  }, 60_000);

  it('an app health check over HTTP does not load undici either (the probe uses the lean client)', async () => {
    const record = path.join(dir, 'imports-health.txt');
    const config = path.join(dir, 'health.toml');
    writeFileSync(config, 'healthcheck = "/healthz"\n[api]\nport = 0\n');
    const args = ['--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state-health')];
    probing = await startRun({ args, env: { NODE_OPTIONS: `--import ${RECORDER}`, RECORD_IMPORTS_FILE: record } });
    // The first probe has run once its result is logged.
    await until(() => probing!.lines.find((l) => l.msg === 'app is up' || l.msg === 'app is down'), 30_000, 'the first health probe');
    const imported = readFileSync(record, 'utf8').split('\n');
    expect(imported.some((u) => u.includes('/src/http/stages/health.ts'))).toBe(true);
    expect(imported.filter((u) => u.includes('/node_modules/undici/'))).toEqual([]);
  }, 60_000);
});
