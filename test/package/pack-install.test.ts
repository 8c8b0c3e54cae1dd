// The package as a user meets it: `npm pack` (prepack builds dist/), the tarball installed with --omit=dev into an
// empty project, then the installed CLI, the SDK from ESM, CommonJS, TypeScript and a browser bundle — the README's
// examples/ files — against `enclave-agent start` from that install. One pack and one install, shared by every
// test. A loader hook records every module the installed CLI and SDK load: all of them must come from the install
// (so no devDependency, no tsx, no file of this checkout), and no devDependency may be installed at all.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, PY_WRITE_ATTEMPT } from '../runtime/harness.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const REPO_PKG = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string; devDependencies: Record<string, string> };
const TSC = path.join(REPO, 'node_modules/typescript/bin/tsc');
const EXAMPLES = path.join(REPO, 'examples');

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface StartLine {
  bridgeUrl: string;
  rootPem: string;
  pcrsFile: string;
  pcrs: Record<string, string>;
}

let tmp: string;
let app: string; // the consumer project
let stateDir: string;
let loadedLog: string;
let hookImport: string;
let env: NodeJS.ProcessEnv;
let start: ChildProcess | undefined;
let startExited: Promise<void> | undefined;
let info: StartLine;

function run(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: opts.cwd ?? app, env: opts.env ?? env, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The installed command, run the way a shell runs it (node_modules/.bin, its #!/usr/bin/env node line). */
const cli = (args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<Result> => run(path.join(app, 'node_modules/.bin/enclave-agent'), args, { env: { ...env, ...extraEnv } });
const node = (args: string[], extraEnv: NodeJS.ProcessEnv = {}, timeoutMs?: number): Promise<Result> =>
  run(process.execPath, args, { env: { ...env, ...extraEnv }, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
/** NODE_OPTIONS that make a process append every module it loads to `loadedLog`. */
const recordLoads = (): NodeJS.ProcessEnv => ({ NODE_OPTIONS: `--import=${hookImport}` });

beforeAll(async () => {
  tmp = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-pack-')));
  app = path.join(tmp, 'app');
  stateDir = path.join(tmp, 'state');
  loadedLog = path.join(tmp, 'loaded.txt');
  mkdirSync(app);
  // The test's own node first on PATH, so `#!/usr/bin/env node` and npm's scripts run the same Node.
  env = { ...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH ?? ''}`, ENCLAVE_AGENT_STATE_DIR: stateDir, EA_LOADED_LOG: loadedLog };
  delete env.ENCLAVE_AGENT_NATIVE_ADDON; // the installed package must find its own addon
  delete env.NODE_OPTIONS;

  // Bounds for a loaded machine: the pack compiles src/ (tsc), the install compiles the addon (node-gyp).
  const packed = await run('npm', ['pack', '--pack-destination', tmp, '--silent'], { cwd: REPO, timeoutMs: 300_000 });
  expect(packed.code, `npm pack failed: ${(packed.stdout + packed.stderr).slice(-3000)}`).toBe(0);
  const tarball = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  expect(tarball).toBeDefined();

  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  // better-sqlite3 installs a prebuilt binary it downloads from GitHub, else compiles SQLite (minutes here). The
  // test offers it this checkout's own build as that prebuilt (prebuild-install's local-prebuilds directory):
  // the same binary, no download, no compile. Any other version falls back to the package's own install.
  const installEnv: NodeJS.ProcessEnv = { ...env };
  const sqlite = path.join(REPO, 'node_modules/better-sqlite3');
  if (existsSync(path.join(sqlite, 'build/Release/better_sqlite3.node'))) {
    const { version } = JSON.parse(readFileSync(path.join(sqlite, 'package.json'), 'utf8')) as { version: string };
    const prebuilds = path.join(tmp, 'prebuilds');
    mkdirSync(prebuilds);
    const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`;
    const tar = await run('tar', ['-czf', path.join(prebuilds, name), 'build/Release/better_sqlite3.node'], { cwd: sqlite });
    expect(tar.code, tar.stderr).toBe(0);
    installEnv.npm_config_better_sqlite3_local_prebuilds = prebuilds;
  }
  const installed = await run('npm', ['install', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, tarball!)], { timeoutMs: 480_000, env: installEnv });
  expect(installed.code, `npm install failed: ${installed.stderr.slice(-3000)}`).toBe(0);
  for (const f of readdirSync(EXAMPLES)) copyFileSync(path.join(EXAMPLES, f), path.join(app, f));

  // The hook: ESM loads through a module.register load hook; CommonJS ones from require.cache at exit.
  const hooks = path.join(tmp, 'hooks');
  mkdirSync(hooks);
  writeFileSync(
    path.join(hooks, 'load-hook.mjs'),
    `import { appendFileSync } from 'node:fs';\nexport async function load(url, context, next) {\n  if (process.env.EA_LOADED_LOG) appendFileSync(process.env.EA_LOADED_LOG, url + '\\n');\n  return next(url, context);\n}\n`,
  );
  writeFileSync(
    path.join(hooks, 'register.mjs'),
    `import { register, createRequire } from 'node:module';\nimport { appendFileSync } from 'node:fs';\nimport { pathToFileURL } from 'node:url';\n` +
      `register(new URL('./load-hook.mjs', import.meta.url));\nconst cache = createRequire(import.meta.url).cache;\n` +
      `process.on('exit', () => { if (process.env.EA_LOADED_LOG) appendFileSync(process.env.EA_LOADED_LOG, Object.keys(cache).map((f) => pathToFileURL(f).href + '\\n').join('')); });\n`,
  );
  hookImport = pathToFileURL(path.join(hooks, 'register.mjs')).href;

  start = spawn(path.join(app, 'node_modules/.bin/enclave-agent'), ['start', '--json', '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0'], {
    cwd: app,
    env: { ...env, ...recordLoads() },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child = start;
  startExited = new Promise((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`start printed no line; stderr: ${stderr.slice(-2000)}`)), 90_000);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) {
        clearTimeout(timer);
        resolve(out.slice(0, out.indexOf('\n')));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`start exited with ${code}; stderr: ${stderr.slice(-2000)}`));
    });
  });
  info = JSON.parse(line) as StartLine;
}, 900_000);

afterAll(async () => {
  if (start !== undefined && start.exitCode === null && start.signalCode === null) {
    start.kill('SIGTERM');
    const killer = setTimeout(() => start?.kill('SIGKILL'), 10_000);
    await startExited;
    clearTimeout(killer);
  }
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
}, 30_000);

describe('the packed package, installed with --omit=dev', () => {
  it('ships compiled JavaScript, declarations and the addon sources; installs no devDependency', () => {
    const pkg = path.join(app, 'node_modules/enclave-agent');
    for (const f of ['dist/cli.js', 'dist/index.js', 'dist/index.d.ts', 'dist/client/index.js', 'dist/client/index.d.ts', 'dist/client/node.js', 'dist/client/node.d.ts', 'native/binding.gyp', 'scripts/build-native.mjs']) {
      expect(existsSync(path.join(pkg, f)), f).toBe(true);
    }
    expect(existsSync(path.join(pkg, 'src')), 'the TypeScript sources are not shipped').toBe(false);
    const present = Object.keys(REPO_PKG.devDependencies).filter((d) => existsSync(path.join(app, 'node_modules', d)));
    expect(present).toEqual([]);
  });

  it('built the native addon at install time, and the compiled loader finds it', async () => {
    if (process.platform !== 'linux' || !existsSync(path.join(REPO, 'native/build/Release/enclave_native.node'))) return; // no compiler here either
    const native = pathToFileURL(path.join(app, 'node_modules/enclave-agent/dist/transport/native.js')).href;
    const r = await node(['--input-type=module', '-e', `const m = await import(${JSON.stringify(native)}); console.log(m.addonPath()); m.loadNative(); console.log('loaded');`]);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${path.join(app, 'node_modules/enclave-agent/native/build/Release/enclave_native.node')}\nloaded\n`);
  });

  // `run` starts worker threads after the app (session threads, the decrypt pool, which is handed the keys), and
  // they load the agent's dependencies, which npm hoists beside the app's own: the app's sandbox makes that
  // node_modules read-only to a root app, not only the agent's own directory. The probe opens files for writing
  // and writes nothing. Failed before: "opened opened opened EROFS ok" (only the agent's own directory held).
  it.runIf(process.platform === 'linux' && process.getuid?.() === 0 && existsSync(path.join(REPO, 'native/build/Release/enclave_die_with_parent')))(
    "run: a root app cannot write the agent's hoisted dependencies, and can write its own directory",
    async () => {
      // Hoisted: session threads import pino and prom-client, pino imports sonic-boom; none is the agent's own.
      const hoisted = ['pino', 'prom-client', 'sonic-boom'].map((d) => path.join('node_modules', d, 'package.json'));
      for (const f of hoisted) expect(existsSync(path.join(app, f)), f).toBe(true);
      const dir = mkdtempSync(path.join(tmp, 'run-'));
      const config = path.join(dir, 'enclave.toml');
      writeFileSync(config, `[app]\nport = ${await freePort()}\nrestart = "never"\n[api]\nenabled = false\n`);
      const seen = path.join(dir, 'seen');
      const probe = [
        ...PY_WRITE_ATTEMPT,
        'out = [attempt(f, os.O_WRONLY) for f in sys.argv[2:]] + [attempt("probe-written", os.O_WRONLY | os.O_CREAT)]',
        'open(sys.argv[1], "w").write(" ".join(out))',
      ].join('\n');
      // Absolute and relative (from the app's directory, above the mounts) paths; then the agent's own package.json.
      const targets = [path.join(app, hoisted[0]!), hoisted[1]!, hoisted[2]!, 'node_modules/enclave-agent/package.json'];
      try {
        const r = await cli(['run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'), '--', '/usr/bin/python3', '-c', probe, seen, ...targets]);
        expect(r.code, r.stderr).toBe(0);
        expect(readFileSync(seen, 'utf8')).toBe('EROFS EROFS EROFS EROFS ok');
      } finally {
        rmSync(path.join(app, 'probe-written'), { force: true });
      }
    },
    60_000,
  );

  it('enclave-agent --version prints the package version; --help lists the commands', async () => {
    const version = await cli(['--version']);
    expect(version).toEqual({ code: 0, stdout: `${REPO_PKG.version}\n`, stderr: '' });
    const help = await cli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: enclave-agent <command>/);
    for (const c of ['start', 'fetch', 'attest', 'run', 'bridge', 'keys public']) expect(help.stdout).toContain(`  ${c} `);
  });

  it('enclave-agent fetch answers through the attested channel to the installed `start`', async () => {
    const r = await cli(['fetch', info.bridgeUrl, '/', '--pcrs', info.pcrsFile, '--root', info.rootPem], recordLoads());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ message: expect.stringContaining('enclave-agent (demo app)') });
  });

  it('examples/node.mjs: import() of enclave-agent/client/node in plain Node', async () => {
    const r = await node(['node.mjs', info.bridgeUrl, stateDir], recordLoads());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('attested enclave module');
    expect(r.stdout).toContain(`200 {`);
    expect(r.stdout).toContain(`body: '{"hello":"enclave"}'`);
  });

  it('examples/node-require.cjs: require() of enclave-agent/client/node', async () => {
    const r = await node(['node-require.cjs', info.bridgeUrl, stateDir], recordLoads());
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('enclave-agent (demo app)');
  });

  it('examples/typescript.ts type-checks against the shipped .d.ts (node16 and bundler resolution) and runs', async () => {
    const typeRoots = path.join(REPO, 'node_modules/@types'); // a TypeScript consumer has @types/node of its own
    // The declarations are real types, not `any`: a wrong option must be an error (an unused @ts-expect-error is one).
    writeFileSync(path.join(app, 'wrong-options.ts'), `import { connect } from 'enclave-agent/client/node';\n// @ts-expect-error pcrs must be PCR pins\nawait connect('ws://127.0.0.1:1/', { pcrs: 42 });\n`);
    const common = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom', '--types', 'node', '--typeRoots', typeRoots];
    // node16 also checks the shipped .d.ts themselves (skipLibCheck false); bundler only resolves them (faster).
    for (const mode of [['--module', 'node16', '--moduleResolution', 'node16', '--skipLibCheck', 'false'], ['--module', 'esnext', '--moduleResolution', 'bundler', '--skipLibCheck', 'true']]) {
      const r = await node([TSC, ...common, ...mode, 'typescript.ts', 'wrong-options.ts'], {}, 120_000);
      expect(r.stdout + r.stderr, mode.join(' ')).toBe('');
      expect(r.code).toBe(0);
    }

    // And it runs (types stripped by esbuild, as a bundler or tsx would).
    await build({ entryPoints: [path.join(app, 'typescript.ts')], outfile: path.join(app, 'typescript.mjs'), format: 'esm', platform: 'node', target: 'node20', logLevel: 'silent' });
    const r = await node(['typescript.mjs', info.bridgeUrl, stateDir], recordLoads());
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('{"hello":"enclave"}\n');
   }, 300_000);

  it('esbuild bundles enclave-agent/client for the browser with no node: import, and the bundle attests and fetches', async () => {
    const result = await build({
      entryPoints: [path.join(app, 'browser.js')],
      bundle: true,
      platform: 'browser',
      format: 'esm',
      write: false,
      metafile: true,
      absWorkingDir: app,
      outfile: path.join(app, 'bundle.mjs'),
      logLevel: 'silent',
    });
    expect(result.errors).toEqual([]);
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs).toContain('node_modules/enclave-agent/dist/client/index.js');
    expect(inputs.filter((i) => i.startsWith('node:') || i.includes('enclave-agent/dist/client/node.js'))).toEqual([]);
    const output = Object.values(result.metafile.outputs)[0]!;
    expect(output.imports.filter((i) => i.path.startsWith('node:') || i.external)).toEqual([]);
    const code = result.outputFiles[0]!.text;
    expect(code).not.toMatch(/["']node:/);
    writeFileSync(path.join(app, 'bundle.mjs'), code);

    // Run it where a page would: a global WebSocket (Node's, behind its flag on Node 20), WebCrypto, no Node imports.
    const runner = `import { readFileSync } from 'node:fs';\nimport { echoThroughEnclave } from './bundle.mjs';\n` +
      `const r = await echoThroughEnclave(${JSON.stringify(info.bridgeUrl)}, JSON.parse(readFileSync(${JSON.stringify(info.pcrsFile)}, 'utf8')), { from: 'a page' }, readFileSync(${JSON.stringify(info.rootPem)}, 'utf8'));\n` +
      `console.log(JSON.stringify([r.status, JSON.parse(r.body.body)]));\n`;
    writeFileSync(path.join(app, 'browser-runner.mjs'), runner);
    const r = await node(['--experimental-websocket', '--no-warnings', 'browser-runner.mjs']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('[200,{"from":"a page"}]\n');
  });

  // Last: the loads recorded by every process above (the installed `start` writes its own at exit).
  it('the installed CLI and SDK load nothing but the installed package and its production dependencies', async () => {
    start!.kill('SIGTERM');
    await startExited;
    const loaded = [...new Set(readFileSync(loadedLog, 'utf8').split('\n').filter((l) => l.startsWith('file:')))];
    const files = loaded.map((u) => new URL(u).pathname).filter((f) => !f.startsWith(path.join(tmp, 'hooks')));
    expect(files).toContain(path.join(app, 'node_modules/enclave-agent/dist/cli/start.js'));
    expect(files).toContain(path.join(app, 'node_modules/enclave-agent/dist/client/node.js'));
    expect(files.filter((f) => !f.startsWith(app + path.sep))).toEqual([]);
    const devLoaded = files.filter((f) => Object.keys(REPO_PKG.devDependencies).some((d) => f.includes(`/node_modules/${d}/`)));
    expect(devLoaded).toEqual([]);
  });
});
