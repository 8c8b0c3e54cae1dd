// `npm run build:bundle [-- OUTFILE]`: the whole CLI and its dependencies in one ESM file (default
// dist-bundle/cli.js, with decrypt-worker.js beside it) for the Docker base layer, which ships no node_modules and no package.json. CommonJS
// dependencies get a `require`; the version `--version` prints is compiled in (there is no package.json to read).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const outfile = path.resolve(process.argv[2] ?? path.join(root, 'dist-bundle/cli.js'));

// The decrypt pool's worker thread is a second entry: the pool starts `decrypt-worker.js` from beside cli.js.
const common = {
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
};
await build({ ...common, entryPoints: [path.join(root, 'src/cli.ts')], outfile });
await build({ ...common, entryPoints: [path.join(root, 'src/crypto/decrypt-worker.ts')], outfile: path.join(path.dirname(outfile), 'decrypt-worker.js') });
