// The Docker base layer's CLI: `npm run build:bundle` makes one file that runs with no node_modules and no
// package.json beside it (the layer has neither) — --version, --help, and a command that loads its modules.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;
let bundle: string;

function run(args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, timeout: 120_000, env: { ...process.env, NODE_PATH: '' } }, (err, stdout, stderr) =>
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

describe('the single-file CLI bundle', () => {
  it('--version prints the compiled-in package version, with no package.json anywhere above it', async () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(await run([bundle, '--version'], dir)).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
  });

  // The agent decrypts JSON bodies in worker threads started from decrypt-worker.js beside cli.js: a layer
  // without it would fail the first JSON request with ev: values.
  it('ships the decrypt pool worker beside cli.js, and it answers a job from the bundle alone', async () => {
    const probe = path.join(dir, 'probe.mjs');
    writeFileSync(
      probe,
      `import { Worker } from 'node:worker_threads';
const w = new Worker(process.argv[2], { workerData: [{ p256: Buffer.from(process.argv[3], 'hex'), secp256k1: Buffer.from(process.argv[3], 'hex') }] });
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
