// What an idle agent loads at boot: the libraries of features it is not configured for stay unloaded (each
// costs MiB of resident memory in every enclave). acme-client is loaded when [tls] acme is set, the AWS SDK when
// KMS is (keyring or [secrets] kms: values), undici by the first request that leaves the fast path (the health
// probe uses the lean client), never by a default `run`. Node's own modules too, per thread: node:tls only with
// TLS ingress (or ACME, KMS), node:http in a session thread only in HTTP mode.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { connectClient } from '../responder/helpers.ts';
import { REPO, startRun, until, type RunningAgent } from './harness.ts';

const RECORDER = path.join(REPO, 'test/runtime/fixtures/record-imports.mjs');
const BUILTINS = path.join(REPO, 'test/runtime/fixtures/record-builtins.mjs');
const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-boot-imports-'));
let agent: RunningAgent | undefined;
let probing: RunningAgent | undefined;
const threaded: RunningAgent[] = [];

afterAll(async () => {
  await agent?.dispose();
  await probing?.dispose();
  for (const a of threaded) await a.dispose();
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

  /**
   * Runs the agent with `config` and session threads, serves one session (its thread starts on demand), and
   * returns, per thread, the Node built-ins it had loaded then (a snapshot each thread writes after that:
   * record-builtins.mjs).
   */
  async function builtinsPerThread(name: string, config: string): Promise<{ thread: string; loaded: string[] }[]> {
    const out = path.join(dir, name);
    mkdirSync(out);
    const toml = path.join(dir, `${name}.toml`);
    writeFileSync(toml, `${config}\n[api]\nport = 0\n[limits]\nworkers = 2\n`);
    const args = ['--config', toml, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, `state-${name}`)];
    const running = await startRun({ args, env: { NODE_OPTIONS: `--import ${BUILTINS}`, RECORD_BUILTINS_DIR: out } });
    threaded.push(running);
    const listening = await running.waitForLog('agent listening');
    await running.waitForLog('runtime started');
    // A session served: its thread has started and loaded what it serves with.
    const client = await connectClient(Number(String(listening.public).split(':')[1]));
    client.send({ type: 'RequestAttestation' });
    await client.next(10_000);
    client.close();
    for (const f of readdirSync(out)) rmSync(path.join(out, f), { force: true });
    const read = (): { thread: string; loaded: string[] }[] =>
      readdirSync(out)
        .filter((f) => f.startsWith(`${running.pid}-`) && f.endsWith('.txt')) // the agent's threads, not its app's
        .map((f) => {
          const [thread, ...loaded] = readFileSync(path.join(out, f), 'utf8').trim().split('\n');
          return { thread: thread!, loaded };
        });
    // Every thread rewrites its file every 50 ms: the main thread and the session thread have, once since.
    return until(() => (read().some((t) => t.thread === 'main') && read().some((t) => t.thread === 'session-worker') ? read() : undefined), 30_000, "each thread's list of built-ins");
  }

  it('a default `run` (TLS ingress off) loads node:tls on no thread', async () => {
    const threads = await builtinsPerThread('builtins-default', '');
    expect(threads.find((t) => t.thread === 'main')!.loaded).toContain('net'); // the recorder works
    expect(threads.filter((t) => t.loaded.includes('tls')).map((t) => t.thread)).toEqual([]);
  }, 60_000);

  it('a raw-mode session thread does not load node:http', async () => {
    const threads = await builtinsPerThread('builtins-raw', 'mode = "raw"');
    const sessions = threads.filter((t) => t.thread === 'session-worker');
    expect(sessions.length).toBeGreaterThan(0);
    for (const t of sessions) expect(t.loaded).toContain('worker_threads'); // the recorder works in the thread
    expect(sessions.filter((t) => t.loaded.includes('http'))).toEqual([]);
    expect(threads.filter((t) => t.loaded.includes('tls')).map((t) => t.thread)).toEqual([]);
  }, 60_000);
});
