// What memory benches run: compiled JavaScript, as shipped, never the TypeScript sources through tsx (tsx's
// keepNames gives every arrow function a `name` property of its own, ~256 B each, and its loader holds the
// sources: the figures would not be the product's).
//   bundleFile    one ESM file of an entry point, built as scripts/build-bundle.mjs builds the Docker layer's
//   shippedLaunch the node flags and environment docker/enclave-agent.sh starts the agent with
//   bundledAgentIdleRss  RSS of `enclave-agent run` (the Docker layer's bundle, TCP listeners, NSM simulator) at rest
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { NoiseClient } from './noise-client.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Bundles `entry` into one `outfile` with the options scripts/build-bundle.mjs uses (keep them in step), but no
 * code splitting: a bench child is one entry. Name it `.mjs`: a `.js` file with no package.json marking it ESM
 * is read as CommonJS first and keeps that copy of its source (docs/performance.md, Memory).
 */
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

export interface Launch {
  /** The node flags of the launcher's `exec .../bin/node FLAGS .../cli.js "$@"` line. */
  flags: string[];
  /**
   * This environment plus what the launcher sets for the agent: MALLOC_ARENA_MAX (with its marker) and the native
   * addon's path (a bundle elsewhere cannot find it relative to itself) — this checkout's build, when there is one.
   */
  env: NodeJS.ProcessEnv;
}

/** How docker/enclave-agent.sh starts the agent (what ships is what is measured). */
export async function shippedLaunch(): Promise<Launch> {
  const text = await readFile(path.join(ROOT, 'docker/enclave-agent.sh'), 'utf8');
  const line = /^exec \S+\/bin\/node (.*?)\S+\/cli\.js "\$@"$/m.exec(text);
  if (line === null) throw new Error('docker/enclave-agent.sh: no `exec .../bin/node [flags] .../cli.js "$@"` line');
  const env: NodeJS.ProcessEnv = { ...process.env };
  const arenas = /^\s*MALLOC_ARENA_MAX=(\d+) ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX=1$/m.exec(text);
  if (arenas !== null && env.MALLOC_ARENA_MAX === undefined) Object.assign(env, { MALLOC_ARENA_MAX: arenas[1], ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX: '1' });
  const addon = path.join(ROOT, 'native/build/Release/enclave_native.node');
  if (env.ENCLAVE_AGENT_NATIVE_ADDON === undefined && existsSync(addon)) env.ENCLAVE_AGENT_NATIVE_ADDON = addon;
  return { flags: line[1]!.split(/\s+/).filter(Boolean), env };
}

export interface IdleRss {
  /** Resident set (VmRSS) once the agent said "runtime started" and then sat idle for `idleMs`. */
  rss: number;
  /** Of which anonymous memory (heaps, malloc), not the node binary's mapped pages. */
  anon: number;
  /** A bare `node` process with the same flags, idle, in the same run: the floor. */
  bareRss: number;
  /** Session threads the agent runs ([limits] workers: the CPU count) and, after one session per thread was open at once and then closed, RSS `idleMs` later. */
  threads: number;
  afterSessions: Rss;
  flags: string[];
  /** MALLOC_ARENA_MAX as the launcher sets it, if it does. */
  arenas: string | undefined;
}

/** A `/proc/<pid>/status` field given in kB (VmRSS, RssAnon...), in bytes; `text` is the file's content. */
export function statusKiB(pid: number, field: string, text: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (m === null) throw new Error(`/proc/${pid}/status: no ${field}`);
  return Number(m[1]) * 1024;
}

interface Rss {
  rss: number;
  anon: number;
}

async function readRss(pid: number): Promise<Rss> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return { rss: statusKiB(pid, 'VmRSS', status), anon: statusKiB(pid, 'RssAnon', status) };
}

/** RSS `idleMs` after `readyText`; with `then`, again `idleMs` after it ran (given the output so far). */
async function rssOf(args: string[], env: NodeJS.ProcessEnv, readyText: string | null, idleMs: number, cwd: string, then?: (out: string) => Promise<void>): Promise<Rss & { after?: Rss }> {
  const child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
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
    const first = await readRss(child.pid!);
    if (then === undefined) return first;
    await then(out);
    await new Promise((r) => setTimeout(r, idleMs));
    return { ...first, after: await readRss(child.pid!) };
  } finally {
    child.removeAllListeners('exit');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(force);
  }
}

/** The Docker layer's own build into `dir` (cli.js, the worker entries, the chunks and package.json beside it); cli.js's path. */
export async function buildCliBundle(dir: string): Promise<string> {
  const cli = path.join(dir, 'cli.js');
  await new Promise<void>((resolve, reject) => {
    const b = spawn(process.execPath, [path.join(ROOT, 'scripts/build-bundle.mjs'), cli], { stdio: 'inherit' });
    b.once('error', reject);
    b.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`build-bundle.mjs exited ${code}`))));
  });
  return cli;
}

/**
 * Builds the CLI bundle into a temp dir and measures a fresh `run --listen tcp:0,0 --nsm simulator` (default
 * config but the local API on a free port; `sleep` as the app) `idleMs` after it logged "runtime started", and a
 * bare node process with the same flags after as long.
 */
// 20 s: V8 runs its idle-time GCs (the memory reducer) some seconds after the last activity; at 5 s the boot's
// garbage is still resident (~92 MiB against ~81 MiB at 20 s on the development VM).
export async function bundledAgentIdleRss(idleMs = 20_000): Promise<IdleRss> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-agent-rss-'));
  try {
    const cli = await buildCliBundle(dir);
    const config = path.join(dir, 'enclave.toml');
    await writeFile(config, '[api]\nport = 0\n');
    const { flags, env } = await shippedLaunch();
    const threads = os.availableParallelism();
    // Session threads start as sessions need them: the first reading is the agent before any session, the second
    // after `threads` sessions were open at once (every thread started) and closed again.
    const sessions = async (out: string): Promise<void> => {
      const port = /"public":"127\.0\.0\.1:(\d+)"/.exec(out);
      if (port === null) throw new Error(`no public address in the agent's "runtime started" line: ${out.slice(-2000)}`);
      const clients = [];
      for (let i = 0; i < threads; i++) clients.push(await NoiseClient.connect(Number(port[1])));
      await Promise.all(clients.map((c) => new Promise((r) => c.socket.once('close', r).end())));
    };
    const agent = await rssOf(
      [...flags, cli, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'), '--', 'sleep', '600'],
      env,
      'runtime started',
      idleMs,
      dir,
      sessions,
    );
    const bare = await rssOf([...flags, '-e', 'setInterval(() => {}, 60_000)'], env, null, idleMs, dir);
    return { rss: agent.rss, anon: agent.anon, afterSessions: agent.after!, threads, bareRss: bare.rss, flags, arenas: env.MALLOC_ARENA_MAX };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
