// The SDK must run in a browser bundle: nothing reachable from src/client/index.ts (our files and the packages
// they pull in, followed file by file as a bundler would) may import a Node built-in, undici or ws, and our
// files may not use Buffer. src/client/node.ts is the one Node entry and must not be reachable from index.ts.
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = process.cwd();
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const FORBIDDEN_PACKAGES = ['undici', 'ws'];
const SPEC = /(?:^|[^\w$.])(?:import|export)\s*(?:type\s+)?(?:[\w$*{}\s,]+?\s+from\s*)?['"]([^'"]+)['"]|(?:^|[^\w$.])(?:import|require)\s*\(\s*['"]([^'"]+)['"]\s*\)/gm;

function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"\\])\/\/.*$/gm, '$1');
}

/** Type-only imports vanish from the bundle. */
function isTypeOnly(statement: string): boolean {
  return /^\s*(?:import|export)\s+type\b/.test(statement.replace(/^[^ie]*/, ''));
}

/** A bare specifier as a browser bundler resolves it: the package's browser/import/module/default entry. */
function resolvePackage(spec: string, fromFile: string): string {
  const parts = spec.split('/');
  const pkgName = spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
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
  return resolve(dir, sub !== '.' ? sub : (pkg.module ?? (typeof pkg.browser === 'string' ? pkg.browser : undefined) ?? pkg.main ?? 'index.js'));
}

function walk(entry: string): { files: string[]; offenders: string[] } {
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
      if (isTypeOnly(m[0])) continue;
      const spec = m[1] ?? m[2]!;
      const pkgName = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      if (BUILTINS.has(spec) || spec.startsWith('node:')) {
        offenders.push(`${file}: imports ${spec}`);
        continue;
      }
      if (FORBIDDEN_PACKAGES.includes(pkgName)) {
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

describe('browser safety of the client SDK', () => {
  it('reaches no node:* / built-in / undici / ws import and no Buffer from src/client/index.ts', () => {
    const { files, offenders } = walk(resolve(ROOT, 'src/client/index.ts'));
    expect(offenders).toEqual([]);
    const rel = files.map((f) => f.slice(ROOT.length + 1));
    // The walk really followed the graph: every SDK file, the verifier, the noble suite and its packages.
    expect(rel).toEqual(
      expect.arrayContaining([
        'src/client/channel.ts',
        'src/client/session.ts',
        'src/client/fetch.ts',
        'src/client/stream.ts',
        'src/client/reconnect.ts',
        'src/client/http-codec.ts',
        'src/attestation/verify.ts',
        'src/noise/suite-noble.ts',
        'src/wire/frames.ts',
        'src/wire/messages.ts',
      ]),
    );
    expect(rel.some((f) => f.includes('node_modules/@noble/'))).toBe(true);
    expect(rel).not.toContain('src/client/node.ts');
    expect(rel).not.toContain('src/noise/suite-node.ts');
  });

  it('catches the Node entry (the walker is not blind)', () => {
    const { offenders } = walk(resolve(ROOT, 'src/client/node.ts'));
    expect(offenders.some((o) => o.includes('imports node:stream'))).toBe(true);
    expect(offenders.some((o) => o.includes('imports undici'))).toBe(true);
  });
});
