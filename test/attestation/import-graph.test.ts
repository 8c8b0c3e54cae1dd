// The verifier must run in browsers: nothing reachable from src/attestation/verify.ts (our files and the
// packages they pull in, followed file by file) may import a Node built-in, and our files may not use Buffer.
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = process.cwd();
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const SPEC = /(?:^|[^\w$.])(?:import|export)\s*(?:type\s+)?(?:[\w$*{}\s,]+?\s+from\s*)?['"]([^'"]+)['"]|(?:^|[^\w$.])(?:import|require)\s*\(\s*['"]([^'"]+)['"]\s*\)/gm;

function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"\\])\/\/.*$/gm, '$1');
}

/** Resolves a bare specifier the way a browser bundler would: the package's "browser"/"import"/"default" entry. */
function resolvePackage(spec: string, fromFile: string): string {
  const req = createRequire(fromFile);
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
  if (sub !== '.') return req.resolve(spec);
  return resolve(dir, pkg.module ?? (typeof pkg.browser === 'string' ? pkg.browser : undefined) ?? pkg.main ?? 'index.js');
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
      const spec = m[1] ?? m[2]!;
      if (BUILTINS.has(spec) || spec.startsWith('node:')) {
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

describe('browser safety of the verifier', () => {
  it('reaches no node: (or bare built-in) import and no Buffer from src/attestation/verify.ts', () => {
    const { files, offenders } = walk(resolve(ROOT, 'src/attestation/verify.ts'));
    expect(offenders).toEqual([]);
    // The walk really followed the graph: our modules and the X.509 stack.
    const rel = files.map((f) => f.slice(ROOT.length + 1));
    expect(rel).toEqual(expect.arrayContaining(['src/attestation/document.ts', 'src/attestation/cbor.ts', 'src/attestation/x509.ts', 'src/util/bytes.ts']));
    expect(rel.some((f) => f.includes('node_modules/pkijs/'))).toBe(true);
    expect(rel.some((f) => f.includes('node_modules/asn1js/'))).toBe(true);
  });

  it('catches a node: import when one is there (the walker is not blind)', () => {
    const { offenders } = walk(resolve(ROOT, 'src/attestation/simulator.ts'));
    expect(offenders.some((o) => o.includes('imports node:crypto'))).toBe(true);
  });
});
