// Walks a module graph the way a browser bundler would (our files and the packages they pull in, followed file by
// file) and reports what would break in a browser: Node built-in imports (bare or node:), forbidden packages, and
// Buffer in our own src/ files. Used by the browser-safety tests of the verifier and of the client SDK.
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';

export const ROOT = process.cwd();
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const SPEC = /(?:^|[^\w$.])(?:import|export)\s*(?:type\s+)?(?:[\w$*{}\s,]+?\s+from\s*)?['"]([^'"]+)['"]|(?:^|[^\w$.])(?:import|require)\s*\(\s*['"]([^'"]+)['"]\s*\)/gm;

function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"\\])\/\/.*$/gm, '$1');
}

/** Type-only imports vanish from the bundle. */
function isTypeOnly(statement: string): boolean {
  return /^\s*(?:import|export)\s+type\b/.test(statement.replace(/^[^ie]*/, ''));
}

function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

/** Resolves a bare specifier the way a browser bundler would: the package's "browser"/"import"/"module"/"default" entry. */
function resolvePackage(spec: string, fromFile: string): string {
  const pkgName = packageName(spec);
  const sub = '.' + spec.slice(pkgName.length);
  let pkgJsonPath = '';
  for (let d = dirname(fromFile); ; d = dirname(d)) {
    const candidate = resolve(d, 'node_modules', pkgName, 'package.json');
    if (existsSync(candidate)) {
      pkgJsonPath = candidate;
      break;
    }
    if (dirname(d) === d) throw new Error(`package ${pkgName} not found from ${fromFile}`);
  }
  const pkg = JSON.parse(readFileSync(pkgJsonPath, 'utf8')) as { exports?: unknown; module?: string; browser?: unknown; main?: string };
  const dir = dirname(pkgJsonPath);
  const pick = (e: unknown): string | undefined => {
    if (typeof e === 'string') return e;
    if (e && typeof e === 'object') {
      for (const cond of ['browser', 'import', 'module', 'default']) {
        const r = pick((e as Record<string, unknown>)[cond]);
        if (r) return r;
      }
    }
    return undefined;
  };
  if (pkg.exports) {
    const exp = pkg.exports as Record<string, unknown>;
    const entry = typeof exp === 'string' || !Object.keys(exp).some((k) => k.startsWith('.')) ? (sub === '.' ? exp : undefined) : exp[sub];
    const target = pick(entry);
    if (!target) throw new Error(`cannot resolve ${spec} for the browser`);
    return resolve(dir, target);
  }
  // A deep import into a package without "exports": Node's file resolution (adds the extension / index.js).
  if (sub !== '.') return createRequire(fromFile).resolve(spec);
  return resolve(dir, pkg.module ?? (typeof pkg.browser === 'string' ? pkg.browser : undefined) ?? pkg.main ?? 'index.js');
}

export interface WalkOptions {
  /** Skip `import type` / `export type` statements (they vanish from the bundle). Default: follow them too. */
  skipTypeOnly?: boolean;
  /** Packages that must not be reachable at all (e.g. undici, ws). */
  forbiddenPackages?: readonly string[];
}

/** Every file reached from `entry` (absolute paths) and one line per offence found on the way. */
export function walkImports(entry: string, options: WalkOptions = {}): { files: string[]; offenders: string[] } {
  const forbidden = options.forbiddenPackages ?? [];
  const seen = new Set<string>();
  const offenders: string[] = [];
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const src = stripComments(readFileSync(file, 'utf8'));
    const ours = file.startsWith(resolve(ROOT, 'src'));
    if (ours && /\bBuffer\b/.test(src)) offenders.push(`${file}: uses Buffer`);
    for (const m of src.matchAll(SPEC)) {
      if (options.skipTypeOnly && isTypeOnly(m[0])) continue;
      const spec = m[1] ?? m[2]!;
      if (BUILTINS.has(spec) || spec.startsWith('node:')) {
        offenders.push(`${file}: imports ${spec}`);
        continue;
      }
      if (forbidden.includes(packageName(spec))) {
        offenders.push(`${file}: imports ${spec}`);
        continue;
      }
      if (spec.startsWith('.') || spec.startsWith('/')) {
        let target = resolve(dirname(file), spec);
        if (!/\.[cm]?[jt]s$/.test(target)) target += '.js';
        queue.push(target);
      } else {
        queue.push(resolvePackage(spec, file));
      }
    }
  }
  return { files: [...seen], offenders };
}
