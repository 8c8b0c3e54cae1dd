// `npm run build:bundle [-- OUTFILE]`: the whole CLI and its dependencies, no node_modules, for the Docker base
// layer (default dist-bundle/cli.js). Beside OUTFILE: decrypt-worker.js and session-worker.js (the decrypt pool's
// and the session threads' entries), the chunk files esbuild splits off at dynamic imports, and a package.json
// that only says `"type": "module"`.
// CommonJS dependencies get a `require`; the version `--version` prints is compiled in.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const outfile = path.resolve(process.argv[2] ?? path.join(root, 'dist-bundle/cli.js'));
const outdir = path.dirname(outfile);
if (!outfile.endsWith('.js')) throw new Error(`build-bundle: OUTFILE must end in .js: ${outfile}`);
// The build writes a package.json beside OUTFILE and clears chunk files there: never over a project's own
// (`build:bundle -- cli.js` would name the repository root).
const marker = path.join(outdir, 'package.json');
const MARKER = '{ "type": "module" }\n';
try {
  if (readFileSync(marker, 'utf8') !== MARKER) throw new Error(`build-bundle: ${marker} exists and is not this build's marker: give OUTFILE a directory of its own`);
} catch (e) {
  if (e.code !== 'ENOENT') throw e;
}

// Chunks of an earlier build would otherwise lie beside this one's (their names carry a content hash).
try {
  for (const f of readdirSync(outdir)) if (/^chunk-.*\.js$/.test(f)) rmSync(path.join(outdir, f));
} catch (e) {
  if (e.code !== 'ENOENT') throw e;
}

// `import('pkg')` of a CommonJS package gives, under node, its module.exports as `default` and its properties as
// named exports (cjs-module-lexer); a split chunk of a CommonJS module exports only `default`, so
// `const { DecryptCommand } = await import('@aws-sdk/client-kms')` would find nothing. Each dynamic import of a
// package therefore goes through a small ESM module that imports it statically and re-exports `default` and
// every property module.exports has (read here, at build time, as node's lexer reads it at run time). Only our
// sources' dynamic imports: the packages they load lazily are CommonJS (undici, acme-client, the AWS SDK's).
const packageExportsForDynamicImports = {
  name: 'cjs-dynamic-import-exports',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.kind !== 'dynamic-import' || args.path.startsWith('node:') || !args.importer.startsWith(path.join(root, 'src') + path.sep)) return undefined;
      return { path: args.path, namespace: 'dynamic-package', pluginData: { resolveDir: args.resolveDir } };
    });
    b.onLoad({ filter: /.*/, namespace: 'dynamic-package' }, (args) => {
      const exported = createRequire(path.join(args.pluginData.resolveDir, 'x.js'))(args.path);
      const names = Object.keys(exported).filter((k) => k !== 'default' && k !== '__esModule' && /^[A-Za-z_$][\w$]*$/.test(k));
      const spec = JSON.stringify(args.path);
      const contents = `import * as ns from ${spec};\nconst m = ns.default ?? ns;\nexport default m;\n${names.map((k) => `export const ${k} = m.${k};`).join('\n')}\n`;
      return { contents, resolveDir: args.pluginData.resolveDir, loader: 'js' };
    });
  },
};

await build({
  plugins: [packageExportsForDynamicImports],
  // The worker threads are entries of their own, started from beside cli.js: the decrypt pool's
  // `decrypt-worker.js` and the session threads' `session-worker.js` ([limits] workers ≥ 2).
  entryPoints: [
    { in: path.join(root, 'src/cli.ts'), out: path.basename(outfile, '.js') },
    { in: path.join(root, 'src/crypto/decrypt-worker.ts'), out: 'decrypt-worker' },
    { in: path.join(root, 'src/runtime/session-worker.ts'), out: 'session-worker' },
  ],
  outdir,
  // Code splitting: what a command or feature imports dynamically (the other commands, acme-client, the AWS SDK,
  // undici...) goes into chunk files that node reads only when that import runs. V8 keeps the source of every
  // script it loaded in memory for the process's life; an agent that never uses ACME never holds its source.
  // Chunks sit flat beside cli.js, so `new URL('./x', import.meta.url)` means the same directory in every one.
  splitting: true,
  chunkNames: 'chunk-[hash]',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  legalComments: 'none',
  // No comments or indentation: V8 keeps the whole source of the running script in memory (two bytes per
  // character as soon as one comment holds a non-ASCII character): 14 MiB unminified, under 5 MiB so.
  // Identifiers are kept, so stack traces still name functions.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
  define: { __ENCLAVE_AGENT_VERSION__: JSON.stringify(version) },
  banner: { js: "import { createRequire as __eaCreateRequire } from 'node:module'; const require = __eaCreateRequire(import.meta.url);" },
});
// Marks the .js files as ES modules. Without it node 20 first reads cli.js as CommonJS, finds `import`, and loads
// it again as ESM (module syntax detection); the first read's source string and file buffer stay referenced by
// its CommonJS module record: ~18 MiB of an idle agent's RSS (docs/performance.md, Memory).
writeFileSync(marker, MARKER);
