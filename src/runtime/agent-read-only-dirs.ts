// What the app's sandbox makes read-only to the app (the wrapper's --read-only): every directory the agent's
// worker threads may load code from after the app has started. Session threads and the decrypt pool (which is
// handed every private key) import pino, prom-client... when they start, and further modules on demand; a root
// app that could rewrite one of those files would run its code inside the agent.
// That is the agent's own code (agentCodeDir) and, in an npm install, the node_modules its dependencies are
// hoisted into (/app/node_modules beside the app's own): found at boot, before the app runs, by resolving the
// package.json dependencies transitively from the agent's code as Node does (the node_modules of each directory
// up from the requiring package). For each package found outside the agent's code, the outermost node_modules
// above its real path is made read-only, not the package alone: a module that imports a package it does not
// declare (hoisting lets it) or one added later resolves from that same directory, pnpm's store and links live
// in it, and one directory keeps the mounts few. Installing is what writes node_modules; an app does not at run
// time (a tool that caches under node_modules/.cache must be pointed elsewhere). A package outside any
// node_modules (an `npm link`, a workspace) is made read-only on its own. The Docker layer's bundle has no
// dependencies outside its directory: the list is its directory alone.
// The native addon too, where it lies outside that code (the Docker layer's /opt/enclave-agent/native, beside
// dist/): a worker thread that loads it resolves its real path anew and dlopens what it finds, so a root app
// that put a link there in its place would have its own library loaded into the agent.
// Read-only is not enough where Node looks from outside those directories: a node_modules that is a link in a
// writable directory (the app replaces the link), or a writable directory between a package and the node_modules
// its dependencies are in (the app creates a node_modules there, found first). A root agent refuses to start its
// app in such a layout (RUNTIME_NO_SANDBOX) rather than run it with the agent's code open to it.
import { existsSync, lstatSync, readFileSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { addonPath } from '../transport/native.ts';
import { agentCodeDir } from './die-with-agent.ts';
import { SandboxDirsError } from './errors.ts';

/** The package.json fields whose packages a package's code may load. */
const DEPENDENCY_FIELDS = ['dependencies', 'optionalDependencies', 'peerDependencies'] as const;
/** A package name as a directory below node_modules: "name" or "@scope/name", nothing that climbs out. */
const PACKAGE_NAME = /^(?:@[^/\\]+\/)?[^/\\]+$/;

/** The names `pkgDir`'s package.json depends on ([] without a readable one). */
function dependencyNames(pkgDir: string): string[] {
  let manifest: unknown;
  try {
    manifest = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  } catch {
    return [];
  }
  if (typeof manifest !== 'object' || manifest === null) return [];
  const names = new Set<string>();
  for (const field of DEPENDENCY_FIELDS) {
    const deps = (manifest as Record<string, unknown>)[field];
    if (typeof deps !== 'object' || deps === null) continue;
    for (const name of Object.keys(deps)) {
      if (PACKAGE_NAME.test(name) && !name.split('/').some((part) => part === '.' || part === '..')) names.add(name);
    }
  }
  return [...names];
}

/**
 * Package `name` as Node finds it from `fromDir` (its node_modules, then each one up): the real path of the
 * node_modules it is in (whose entry, a link with npm link or pnpm, must not change either) and its own real
 * directory, and each directory whose node_modules Node looks in up to that one (`lookedIn`: the app must not be
 * able to create, nor replace, a node_modules there, see shadowingDir); undefined when it is not installed.
 */
function findPackage(fromDir: string, name: string): { lookupDir: string; packageDir: string; lookedIn: string[] } | undefined {
  const lookedIn: string[] = [];
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    // Node never looks in node_modules/node_modules.
    if (path.basename(dir) !== 'node_modules') {
      lookedIn.push(dir);
      const lookupDir = path.join(dir, 'node_modules');
      const candidate = path.join(lookupDir, name);
      try {
        if (statSync(candidate, { throwIfNoEntry: false })?.isDirectory() === true) return { lookupDir: realpathSync(lookupDir), packageDir: realpathSync(candidate), lookedIn };
      } catch {
        // ENOTDIR, EACCES...: Node finds no package there either and looks further up.
      }
    }
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** Whether `dir` is, or lies inside, one of `dirs`. */
function inside(dir: string, dirs: readonly string[]): boolean {
  return dirs.some((k) => dir === k || dir.startsWith(k.endsWith(path.sep) ? k : k + path.sep));
}

/**
 * Why a root app could put a package of its own at `dir`/node_modules, where Node looks for one of the agent's
 * dependencies, given the read-only `dirs`; undefined when it cannot. `dir` is a real path (Node looks up from
 * real paths). Safe: `dir` is read-only, or its node_modules is a read-only directory, not a link (a link is
 * replaced through its parent, which stays writable).
 */
function shadowingDir(dir: string, dirs: readonly string[]): string | undefined {
  if (inside(dir, dirs)) return undefined;
  const nodeModules = path.join(dir, 'node_modules');
  const st = lstatSync(nodeModules, { throwIfNoEntry: false });
  if (st === undefined) return `${nodeModules} does not exist and ${dir} is writable: a node_modules created there is looked in first`;
  if (st.isSymbolicLink()) return `${nodeModules} is a symbolic link in ${dir}, which is writable: it can be replaced`;
  if (!st.isDirectory()) return `${nodeModules} is not a directory and ${dir} is writable: it can be replaced by one`;
  return inside(nodeModules, dirs) ? undefined : `${nodeModules} is writable`;
}

/**
 * The directory of the native addon `file` (none when it does not exist), which must be its real path in strict
 * mode: every worker thread that loads the addon resolves that path again, and a link on it in a writable
 * directory could be pointed at another library.
 */
function addonDir(file: string, strict: boolean): string | undefined {
  const absolute = path.resolve(file);
  if (!existsSync(absolute)) return undefined;
  const real = realpathSync(absolute);
  if (strict && real !== absolute) throw new SandboxDirsError(`the native addon ${absolute} is reached through a symbolic link (its real path is ${real}), which the app could replace: give ENCLAVE_AGENT_NATIVE_ADDON its real path`);
  return path.dirname(real);
}

/** The outermost directory named node_modules on `real`'s path, or `real` itself when there is none. */
function outermostNodeModules(real: string): string {
  const parts = real.split(path.sep);
  const i = parts.indexOf('node_modules');
  return i < 0 ? real : parts.slice(0, i + 1).join(path.sep);
}

/** `dirs` without any that is, or lies inside, another. */
function outermost(dirs: Iterable<string>): string[] {
  const kept: string[] = [];
  for (const dir of [...new Set(dirs)].sort((a, b) => a.length - b.length)) if (!inside(dir, kept)) kept.push(dir);
  return kept;
}

export interface ReadOnlyDirsOptions {
  /** The agent's code (default: the running agent's, agentCodeDir). */
  codeDir?: string;
  /**
   * Refuse the layouts the app could get around (default: a root agent, the one whose app's sandbox has read-only
   * mounts; an app of an unprivileged agent's user can write that user's files, read-only mounts or not).
   */
  strict?: boolean;
  /** The native addon's file, whose directory is read-only too (default: the one loadNative loads; null: none). */
  addon?: string | null;
}

/**
 * The real directories the app must not write (see the file comment), none inside another: `codeDir` (default:
 * the running agent's) or the node_modules holding it, where its dependencies lie, transitively, and the native
 * addon's directory. Throws
 * SandboxDirsError (RUNTIME_NO_SANDBOX) when, outside those, a node_modules Node looks in for one of them could be
 * created or replaced by the app: a link (`/app/node_modules -> /cache/node_modules`), or a directory between a
 * package and the node_modules its dependencies are in (a workspace's `packages/`, where a `packages/node_modules`
 * would be found first). A dependency that is not installed at all is not refused: Node looks for it up to
 * `/node_modules`, and optional ones (another platform's prebuilt binaries) are never installed.
 */
export function agentReadOnlyDirs(opts: ReadOnlyDirsOptions = {}): string[] {
  const { codeDir = agentCodeDir(), strict = process.getuid?.() === 0, addon = addonPath() } = opts;
  const cover = new Set<string>([codeDir]);
  const native = addon === null ? undefined : addonDir(addon, strict);
  if (native !== undefined) cover.add(native);
  const visited = new Set<string>([codeDir]);
  const lookedIn = new Map<string, string>(); // directory -> the dependency looked for there
  const pending = [codeDir];
  for (let pkgDir = pending.pop(); pkgDir !== undefined; pkgDir = pending.pop()) {
    for (const name of dependencyNames(pkgDir)) {
      const found = findPackage(pkgDir, name);
      if (found === undefined) continue;
      for (const dir of found.lookedIn) if (!lookedIn.has(dir)) lookedIn.set(dir, name);
      for (const dir of [found.lookupDir, found.packageDir]) if (dir !== codeDir && !dir.startsWith(codeDir + path.sep)) cover.add(outermostNodeModules(dir));
      if (visited.has(found.packageDir)) continue;
      visited.add(found.packageDir);
      pending.push(found.packageDir);
    }
  }
  const dirs = outermost(cover);
  if (!strict) return dirs;
  for (const [dir, name] of lookedIn) {
    const why = shadowingDir(dir, dirs);
    if (why !== undefined) throw new SandboxDirsError(`the agent's dependency ${name} is looked for in ${path.join(dir, 'node_modules')}, outside what the app's sandbox makes read-only: ${why}`);
  }
  return dirs;
}
