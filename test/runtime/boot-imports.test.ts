// What an idle agent loads at boot: the libraries of features it is not configured for stay unloaded (each
// costs MiB of resident memory in every enclave). acme-client is loaded when [tls] acme is set, the AWS SDK when
// KMS is (keyring or [secrets] kms: values), never by a default `run`.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, startRun, type RunningAgent } from './harness.ts';

const RECORDER = path.join(REPO, 'test/runtime/fixtures/record-imports.mjs');
const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-boot-imports-'));
let agent: RunningAgent | undefined;

afterAll(async () => {
  await agent?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('agent boot imports', () => {
  it('a default `run` (dev keyring, no ACME, no KMS) loads neither acme-client nor the AWS SDK', async () => {
    const record = path.join(dir, 'imports.txt');
    agent = await startRun({ env: { NODE_OPTIONS: `--import ${RECORDER}`, RECORD_IMPORTS_FILE: record } });
    await agent.waitForLog('runtime started');
    const imported = readFileSync(record, 'utf8').split('\n');
    // The recorder works: the agent's own always-needed libraries are in the list.
    expect(imported.some((u) => u.includes('/node_modules/pino/'))).toBe(true);
    expect(imported.filter((u) => u.includes('/node_modules/acme-client/'))).toEqual([]);
    expect(imported.filter((u) => u.includes('/node_modules/@aws-sdk/'))).toEqual([]);
  }, 60_000);
});
