// What an idle agent loads at boot: the libraries of features it is not configured for stay unloaded (each
// costs MiB of resident memory in every enclave). acme-client is loaded when [tls] acme is set, the AWS SDK when
// KMS is (keyring or [secrets] kms: values), undici by the first request that leaves the fast path (the health
// probe uses the lean client), never by a default `run`.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
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
  // The NSM simulator writes its certificates itself (simulator-x509.ts): pkijs is for TLS ingress only.
  it('a default `run` (dev keyring, no ACME, no KMS; the NSM simulator) loads neither acme-client, the AWS SDK, undici nor pkijs', async () => {
    const record = path.join(dir, 'imports.txt');
    agent = await startRun({ env: { NODE_OPTIONS: `--import ${RECORDER}`, RECORD_IMPORTS_FILE: record } });
    await agent.waitForLog('runtime started');
    const imported = readFileSync(record, 'utf8').split('\n');
    // The recorder works: the agent's own always-needed libraries are in the list.
    expect(imported.some((u) => u.includes('/node_modules/pino/'))).toBe(true);
    expect(imported.filter((u) => u.includes('/node_modules/acme-client/'))).toEqual([]);
    expect(imported.filter((u) => u.includes('/node_modules/@aws-sdk/'))).toEqual([]);
    expect(imported.filter((u) => u.includes('/node_modules/undici/'))).toEqual([]);
    expect(imported.filter((u) => /\/node_modules\/(pkijs|asn1js)\//.test(u))).toEqual([]);
  }, 60_000);

  // What `run` evaluates before it knows its options: a real enclave (/dev/nsm, no TLS ingress) needs neither the
  // NSM simulator nor the attested TLS certificate, the two users of pkijs, so `run` imports them only when chosen.
  it('the static imports of `run` reach neither pkijs, undici, acme-client nor the AWS SDK', async () => {
    const record = path.join(dir, 'imports-static.txt');
    const entry = pathToFileURL(path.join(REPO, 'src/cli/run-command.ts')).href;
    await new Promise<void>((resolve, reject) =>
      execFile(process.execPath, ['--import', RECORDER, '--import', 'tsx', '--input-type=module', '-e', `await import(${JSON.stringify(entry)});`], { cwd: REPO, env: { ...process.env, RECORD_IMPORTS_FILE: record }, timeout: 60_000 }, (err) => (err === null ? resolve() : reject(err))),
    );
    const imported = readFileSync(record, 'utf8').split('\n');
    // The recorder saw the graph: the runtime and the NSM chooser are in it.
    expect(imported.some((u) => u.endsWith('/src/runtime/agent.ts'))).toBe(true);
    expect(imported.some((u) => u.endsWith('/src/runtime/nsm.ts'))).toBe(true);
    const heavy = imported.filter((u) => /\/node_modules\/(pkijs|asn1js|undici|acme-client|@aws-sdk)\//.test(u));
    expect(heavy).toEqual([]);
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
