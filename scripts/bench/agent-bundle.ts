// What memory benches run: compiled JavaScript, as shipped, never the TypeScript sources through tsx (tsx's
// keepNames gives every arrow function a `name` property of its own, ~256 B each, and its loader holds the
// sources: the figures would not be the product's).
//   bundleFile    one ESM file of an entry point, built as scripts/build-bundle.mjs builds the Docker layer's
//   shippedNodeFlags  the node flags docker/enclave-agent.sh starts the agent with
//   bundledAgentIdleRss  RSS of `enclave-agent run` (the Docker layer's bundle, TCP listeners, NSM simulator) at rest
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Bundles `entry` into `outfile` with the options scripts/build-bundle.mjs uses (keep them in step). */
export async function bundleFile(entry: string, outfile: string): Promise<void> {
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    legalComments: 'none',
    logLevel: 'warning',
    minifyWhitespace: true,
    minifySyntax: true,
    banner: { js: "import { createRequire as __eaCreateRequire } from 'node:module'; const require = __eaCreateRequire(import.meta.url);" },
  });
}

/**
 * The environment of a bundled agent: as the launcher does, names the native addon (a bundle elsewhere cannot
 * find it relative to itself) — this checkout's build, when there is one.
 */
export function bundledAgentEnv(): NodeJS.ProcessEnv {
  const addon = path.join(ROOT, 'native/build/Release/enclave_native.node');
  return existsSync(addon) ? { ...process.env, ENCLAVE_AGENT_NATIVE_ADDON: process.env.ENCLAVE_AGENT_NATIVE_ADDON ?? addon } : { ...process.env };
}

/** The node flags of the launcher's `exec .../bin/node FLAGS .../cli.js` line (what ships is what is measured). */
export async function shippedNodeFlags(): Promise<string[]> {
  const text = await readFile(path.join(ROOT, 'docker/enclave-agent.sh'), 'utf8');
  const line = /^exec \S+\/bin\/node (.*?)\S+\/cli\.js "\$@"$/m.exec(text);
  if (line === null) throw new Error('docker/enclave-agent.sh: no `exec .../bin/node [flags] .../cli.js "$@"` line');
  return line[1]!.split(/\s+/).filter(Boolean);
}

export interface IdleRss {
  /** Resident set (VmRSS) once the agent said "runtime started" and then sat idle for `idleMs`. */
  rss: number;
  /** Of which anonymous memory (heaps, malloc), not the node binary's mapped pages. */
  anon: number;
  /** A bare `node` process with the same flags, idle, in the same run: the floor. */
  bareRss: number;
  flags: string[];
}

function statusKiB(pid: number, field: string, text: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (m === null) throw new Error(`/proc/${pid}/status: no ${field}`);
  return Number(m[1]) * 1024;
}

async function rssOf(args: string[], readyText: string | null, idleMs: number, cwd: string): Promise<{ rss: number; anon: number }> {
  const child = spawn(process.execPath, args, { cwd, env: bundledAgentEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not ready within 30 s: ${out.slice(-2000)}`)), 30_000);
      const check = (c: Buffer): void => {
        out += c.toString();
        if (readyText === null || out.includes(readyText)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      child.once('exit', (code) => reject(new Error(`exited (${code}) before it was ready: ${out.slice(-2000)}`)));
      if (readyText === null) check(Buffer.alloc(0));
    });
    await new Promise((r) => setTimeout(r, idleMs));
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
    return { rss: statusKiB(child.pid!, 'VmRSS', status), anon: statusKiB(child.pid!, 'RssAnon', status) };
  } finally {
    child.removeAllListeners('exit');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(force);
  }
}

/**
 * Builds the CLI bundle into a temp dir and measures a fresh `run --listen tcp:0,0 --nsm simulator` (default
 * config but the local API on a free port; `sleep` as the app) `idleMs` after it logged "runtime started".
 */
export async function bundledAgentIdleRss(idleMs = 5_000): Promise<IdleRss> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-agent-rss-'));
  try {
    const cli = path.join(dir, 'cli.js');
    // The Docker layer's own build (cli.js and decrypt-worker.js beside it).
    await new Promise<void>((resolve, reject) => {
      const b = spawn(process.execPath, [path.join(ROOT, 'scripts/build-bundle.mjs'), cli], { stdio: 'inherit' });
      b.once('error', reject);
      b.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`build-bundle.mjs exited ${code}`))));
    });
    const config = path.join(dir, 'enclave.toml');
    await writeFile(config, '[api]\nport = 0\n');
    const flags = await shippedNodeFlags();
    const agent = await rssOf(
      [...flags, cli, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'), '--', 'sleep', '600'],
      'runtime started',
      idleMs,
      dir,
    );
    const bare = await rssOf([...flags, '-e', 'setInterval(() => {}, 60_000)'], null, idleMs, dir);
    return { ...agent, bareRss: bare.rss, flags };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
