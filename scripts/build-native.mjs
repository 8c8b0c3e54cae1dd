// `npm install` / `npm ci` hook: builds the optional native addon (native/: AF_VSOCK sockets, /dev/nsm,
// loopback bring-up) with node-gyp. The addon is optional: on a machine without a compiler, Python or
// Node headers, this prints ONE line saying so and exits 0, and the agent still runs over tcp/unix with the
// NSM simulator. The full build log goes to native/build-native.log.
// Set ENCLAVE_AGENT_SKIP_NATIVE=1 to skip the build. With ENCLAVE_AGENT_REQUIRE_ADDON=1 (CI on Linux x64: .ci/run
// sets it) every outcome other than "built" exits 1 instead, so a C compile error fails the install.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(root, 'native');
const logFile = path.join(nativeDir, 'build-native.log');
const prefix = 'enclave-agent: native addon';
const required = process.env.ENCLAVE_AGENT_REQUIRE_ADDON === '1';

function done(line, code = 0) {
  console.log(`${prefix} ${line}`);
  process.exit(code);
}

/** Not built: one line and exit 0 (the addon is optional), or exit 1 when it is required. */
function notBuilt(line) {
  if (required) {
    console.error(`${prefix} ${line}`);
    console.error(`${prefix} is required (ENCLAVE_AGENT_REQUIRE_ADDON=1): failing`);
    process.exit(1);
  }
  done(line);
}

if (process.env.ENCLAVE_AGENT_SKIP_NATIVE === '1') notBuilt('build skipped (ENCLAVE_AGENT_SKIP_NATIVE=1); vsock and /dev/nsm unavailable');
if (process.platform !== 'linux') notBuilt(`not built: ${process.platform} has no AF_VSOCK (Linux only); vsock and /dev/nsm unavailable`);
if (!existsSync(path.join(nativeDir, 'binding.gyp'))) notBuilt('not built: native/binding.gyp is missing');

// node-gyp, without touching the network: the one npm runs us with, else npm's bundled copy next to node.
const candidates = [
  process.env.npm_config_node_gyp,
  path.resolve(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
].filter((p) => typeof p === 'string' && p.length > 0);
const nodeGyp = candidates.find((p) => existsSync(p));
if (nodeGyp === undefined) notBuilt('not built: node-gyp not found (looked next to npm); vsock and /dev/nsm unavailable');

const args = [nodeGyp, 'rebuild', '--directory', nativeDir];
// Local headers (e.g. Debian's nodejs-dev at /usr/include/node) avoid a header download.
const localPrefix = path.resolve(path.dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(path.join(localPrefix, 'include/node/node_api.h'))) {
  args.push(`--nodedir=${localPrefix}`);
}

const started = Date.now();
const r = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
try {
  mkdirSync(nativeDir, { recursive: true });
  writeFileSync(logFile, `$ node ${args.join(' ')}\n${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}\n`);
} catch {
  // the log is a courtesy; never fail the install over it
}
const built = path.join(nativeDir, 'build/Release/enclave_native.node');
// the app's die-with-the-agent wrapper (PR_SET_PDEATHSIG) is the second target of binding.gyp
const wrapper = path.join(nativeDir, 'build/Release/enclave_die_with_parent');
if (r.status === 0 && existsSync(built) && existsSync(wrapper)) done(`built in ${((Date.now() - started) / 1000).toFixed(1)} s (${path.relative(root, built)})`);
// make builds the addon first; the wrapper links statically (no loader may run before its filter), which needs
// the C library's static archive. Without it the addon still serves vsock and /dev/nsm (the host bridge needs
// nothing more); only `run` cannot start an app, and says so.
if (existsSync(built) && !existsSync(wrapper)) {
  notBuilt(
    `built without the app sandbox wrapper (static link failed: install the C library's static archive — Debian/Ubuntu libc6-dev, Fedora/Amazon Linux glibc-static — and reinstall); \`enclave-agent run\` cannot start an app — see native/build-native.log`,
  );
}

const out = `${r.stderr ?? ''}\n${r.stdout ?? ''}`;
const firstError =
  out.split('\n').find((l) => /error/i.test(l) && !/^gyp (info|verb)/.test(l) && !/not ok/.test(l))?.trim() ??
  (r.error ? String(r.error.message) : `node-gyp exited with ${r.status ?? r.signal}`);
notBuilt(`not built (${firstError.slice(0, 200)}); vsock and /dev/nsm unavailable — see native/build-native.log`);
