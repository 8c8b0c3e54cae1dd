// The Docker base layer's CLI: `npm run build:bundle` makes cli.js, the chunks split off at dynamic imports and
// decrypt-worker.js, which run with no node_modules and no package's package.json (the layer has neither; only
// one that marks the files ES modules) — --version, --help, and a command that loads its modules.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient } from '../responder/helpers.ts';
import { freePort, PY_WRITE_ATTEMPT } from '../runtime/harness.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
/** This checkout's addon build, which hands connections to session threads (the layer ships it beside dist/). */
const ADDON = path.join(REPO, 'native/build/Release/enclave_native.node');
let dir: string;
let bundle: string;

/** Runs node with `args` in `cwd` (no NODE_PATH, `env` added), bounded by `timeoutMs`. */
function run(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, timeout: timeoutMs, env: { ...process.env, NODE_PATH: '', ...env } }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-bundle-'));
  bundle = path.join(dir, 'opt/enclave-agent/dist/cli.js'); // the layer's layout
  const r = await run([path.join(REPO, 'scripts/build-bundle.mjs'), bundle], REPO);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
}, 180_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the CLI bundle', () => {
  it('--version prints the compiled-in package version, with no package.json but the bundle\'s own above it', async () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(await run([bundle, '--version'], dir)).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });

  // Without "type": "module" beside it, node 20 reads cli.js as CommonJS first, finds `import` and loads it
  // again as ESM; the CommonJS module record stays cached with the file's source (~18 MiB of an idle agent).
  it('loads cli.js as an ES module directly: no CommonJS record of it is left in the module cache', async () => {
    const probe = path.join(dir, 'cjs-cache.cjs');
    writeFileSync(probe, "process.on('exit', () => process.stderr.write(JSON.stringify(Object.keys(require('node:module')._cache))));\n");
    const r = await run(['--require', probe, bundle, '--version'], dir);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stderr)).toEqual([probe]);
    expect(JSON.parse(readFileSync(path.join(path.dirname(bundle), 'package.json'), 'utf8'))).toEqual({ type: 'module' });
  });

  // Code splitting: what commands and features import dynamically lives in chunks beside cli.js, read on use.
  it('splits the CLI: cli.js is small, the rest is in chunk files beside it', () => {
    const files = readdirSync(path.dirname(bundle));
    expect(files.filter((f) => /^chunk-[A-Z0-9]+\.js$/.test(f)).length).toBeGreaterThan(1);
    expect(readFileSync(bundle).length).toBeLessThan(100_000);
  });

  // A split chunk of a CommonJS package exports only `default`: `const { DecryptCommand } = await
  // import('@aws-sdk/client-kms')` would get undefined (node itself gives the named exports). The build routes our
  // dynamic imports of packages through an ESM module that re-exports them, so no chunk is such a bare export.
  it('keeps the named exports of packages our sources import dynamically (undici, the AWS SDK)', () => {
    const chunks = readdirSync(path.dirname(bundle)).filter((f) => f.startsWith('chunk-'));
    const bare = chunks.filter((f) => /export default require_[\w$]+\(\);?\s*(\/\*[\s\S]*\*\/\s*)?$/.test(readFileSync(path.join(path.dirname(bundle), f), 'utf8')));
    expect(bare).toEqual([]);
    const all = chunks.map((f) => readFileSync(path.join(path.dirname(bundle), f), 'utf8')).join('\n');
    expect(all).toMatch(/export\s*\{[^}]*\bDecryptCommand\b/);
    expect(all).toMatch(/export\s*\{[^}]*\bPool\b/);
  });

  // The agent decrypts JSON bodies in worker threads started from decrypt-worker.js beside cli.js: a layer
  // without it would fail the first JSON request with ev: values.
  it('ships the decrypt pool worker beside cli.js, and it answers a job from the bundle alone', async () => {
    const probe = path.join(dir, 'probe.mjs');
    writeFileSync(
      probe,
      `import { Worker } from 'node:worker_threads';
const w = new Worker(process.argv[2], { workerData: { scalars: [{ p256: Buffer.from(process.argv[3], 'hex'), secp256k1: Buffer.from(process.argv[3], 'hex') }], withheld: [] } });
w.on('error', (e) => { console.error(String(e)); process.exit(3); });
w.on('message', (m) => {
  if (m.ready) return w.postMessage({ id: 7, text: '{"card":"4242","n":1}' });
  console.log(JSON.stringify(m));
  void w.terminate();
});
`,
    );
    const scalar = Buffer.concat([Buffer.from([0x01]), randomBytes(31)]).toString('hex'); // below both curve orders
    const r = await run([probe, path.join(path.dirname(bundle), 'decrypt-worker.js'), scalar], dir);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout) as unknown).toEqual({ id: 7, json: '{"card":"4242","n":1}', count: 0 });
  });

  // [limits] workers ≥ 2 — the default wherever the addon is built and there is more than one CPU — starts each
  // session thread from session-worker.js beside cli.js, on demand: a layer without it does not boot (checked at
  // boot), and the first session starts one.
  async function startWorkersRun(name: string): Promise<{ out: () => string; started: boolean; publicPort: number | undefined; stop: () => Promise<void> }> {
    const config = path.join(dir, `${name}.toml`);
    writeFileSync(config, '[api]\nenabled = false\n[limits]\nworkers = 2\n');
    const args = [bundle, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, `state-${name}`), '--', 'sleep', '60'];
    const agent = spawn(process.execPath, args, { cwd: dir, env: { ...process.env, NODE_PATH: '', ENCLAVE_AGENT_NATIVE_ADDON: ADDON }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((r) => agent.once('exit', (code) => r(code)));
    const started = await new Promise<boolean>((resolve) => {
      const seen = (c: Buffer): void => {
        out += c.toString();
        if (out.includes('"runtime started"')) resolve(true);
      };
      agent.stdout.on('data', seen);
      agent.stderr.on('data', seen);
      void exited.then(() => resolve(false));
    });
    const line = out.split('\n').find((l) => l.includes('"runtime started"'));
    const address = line === undefined ? undefined : (JSON.parse(line) as { public?: string }).public;
    return {
      out: () => out,
      started,
      publicPort: address === undefined ? undefined : Number(address.slice(address.lastIndexOf(':') + 1)),
      stop: async () => {
        agent.kill('SIGTERM'); // maybe before its handlers are installed: how it exits is not what this test is about
        await exited;
      },
    };
  }

  it.runIf(existsSync(ADDON))('starts `run` with [limits] workers = 2 from the bundle alone; a session starts a thread', async () => {
    const agent = await startWorkersRun('workers');
    try {
      expect(agent.started).toBe(true);
      expect(agent.out()).not.toContain('session thread started');
      const c = await connectClient(agent.publicPort!);
      c.send({ type: 'RequestAttestation' });
      expect((await c.next()).message.type).toBe('Attestation');
      c.close();
      // Logged before the thread took the session; the line may reach this pipe a moment after the answer.
      for (let i = 0; i < 100 && !agent.out().includes('"session thread started"'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(agent.out()).toContain('"session thread started"');
    } finally {
      await agent.stop();
    }
    expect(agent.out()).not.toMatch(/RUNTIME_WORKER_FAILED|MODULE_NOT_FOUND/);
  });

  it.runIf(existsSync(ADDON))('does not boot with [limits] workers = 2 when session-worker.js is missing', async () => {
    const worker = path.join(path.dirname(bundle), 'session-worker.js');
    renameSync(worker, `${worker}.away`);
    try {
      const agent = await startWorkersRun('no-worker');
      await agent.stop();
      expect(agent.started).toBe(false);
      expect(agent.out()).toMatch(/RUNTIME_WORKER_FAILED/);
    } finally {
      renameSync(`${worker}.away`, worker);
    }
  });

  // The app's sandbox makes the agent's code read-only (worker threads start from it after the app): in the
  // bundle that is the directory of its flat files, whatever package.json lies above it. Here the bundle's own
  // marker is away and the image has the app's package.json above it (as at / with WORKDIR /). Failed before:
  // the nearest package.json above the bundle won, and the app's own directory was read-only to it (EROFS).
  it.runIf(existsSync(ADDON) && process.getuid?.() === 0)("a root app cannot write the bundle's directory, and can write the image above it", async () => {
    const distDir = path.dirname(bundle);
    const image = path.join(dir, 'opt');
    const marker = path.join(distDir, 'package.json');
    renameSync(marker, `${marker}.away`);
    writeFileSync(path.join(image, 'package.json'), '{ "name": "the-app" }\n');
    const seen = path.join(dir, 'code-dir-seen');
    const app = [
      ...PY_WRITE_ATTEMPT,
      'def touch(d): return attempt(os.path.join(d, "probe"), os.O_WRONLY | os.O_CREAT)',
      `open(${JSON.stringify(seen)}, "w").write(touch(${JSON.stringify(distDir)}) + " " + touch(${JSON.stringify(image)}))`,
    ].join('\n');
    try {
      const config = path.join(dir, 'code-dir.toml');
      // [egress] enabled: the sandbox, in the code before the fix too; nothing is sent through it.
      writeFileSync(config, `[app]\nport = ${await freePort()}\nrestart = "never"\n[api]\nenabled = false\n[egress]\nenabled = true\nproxy_port = ${await freePort()}\n`);
      const args = [bundle, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state-code-dir'), '--egress-target', 'tcp:127.0.0.1:9', '--', '/usr/bin/python3', '-c', app];
      const r = await run(args, image, { ENCLAVE_AGENT_NATIVE_ADDON: ADDON }, 60_000);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(seen, 'utf8')).toBe('EROFS ok');
    } finally {
      renameSync(`${marker}.away`, marker);
      rmSync(path.join(image, 'package.json'), { force: true });
      rmSync(path.join(image, 'probe'), { force: true });
    }
  });

  // The layer's native addon lies beside dist/, in /opt/enclave-agent/native, and session threads load it after
  // the app has started, each resolving its real path anew: a root app that put a link to its own library there
  // had it dlopen'ed into the agent. Its directory is read-only to the app too. Failed before: "opened ok".
  it.runIf(existsSync(ADDON) && process.getuid?.() === 0)("a root app cannot write the layer's native addon nor put a file beside it", async () => {
    const nativeDir = path.join(dir, 'opt/enclave-agent/native');
    mkdirSync(nativeDir, { recursive: true });
    const addon = path.join(nativeDir, 'enclave_native.node');
    copyFileSync(ADDON, addon);
    copyFileSync(path.join(path.dirname(ADDON), 'enclave_die_with_parent'), path.join(nativeDir, 'enclave_die_with_parent'));
    chmodSync(path.join(nativeDir, 'enclave_die_with_parent'), 0o755);
    const seen = path.join(dir, 'native-seen');
    const app = [
      ...PY_WRITE_ATTEMPT,
      `open(${JSON.stringify(seen)}, "w").write(attempt(${JSON.stringify(addon)}, os.O_WRONLY) + " " + attempt(${JSON.stringify(path.join(nativeDir, 'probe'))}, os.O_WRONLY | os.O_CREAT))`,
    ].join('\n');
    try {
      const config = path.join(dir, 'native-dir.toml');
      writeFileSync(config, `[app]\nport = ${await freePort()}\nrestart = "never"\n[api]\nenabled = false\n`);
      const args = [bundle, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state-native-dir'), '--', '/usr/bin/python3', '-c', app];
      const r = await run(args, dir, { ENCLAVE_AGENT_NATIVE_ADDON: addon }, 60_000);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(seen, 'utf8')).toBe('EROFS EROFS');
    } finally {
      rmSync(nativeDir, { recursive: true, force: true });
    }
  });

  it('--help and a command that loads its modules run from the bundle alone', async () => {
    const help = await run([bundle, '--help'], dir);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: enclave-agent <command>/);
    const keys = await run([bundle, 'keys', 'public', '--state-dir', path.join(dir, 'state'), '--json'], dir);
    expect(keys.stderr).toBe('');
    expect(keys.code).toBe(0);
    expect(Object.keys(JSON.parse(keys.stdout) as object)).toEqual(expect.arrayContaining(['p256', 'secp256k1']));
  });
});
