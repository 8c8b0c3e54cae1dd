// `npm run bench [-- name...]`: runs every scripts/bench/<name>.ts (or the named ones) in this process.
// Each bench module default-exports an async function that prints its own table (`--json`: JSON lines instead).
import { readdirSync } from 'node:fs';
import { jsonMode, loadAverage, machine } from './lib.ts';

const dir = new URL('.', import.meta.url);
const all = readdirSync(dir)
  .filter((f) => f.endsWith('.ts') && !['run.ts', 'lib.ts', 'noise-client.ts', 'attestation-cold-child.ts', 'nginx.ts', 'agent-bundle.ts'].includes(f))
  .map((f) => f.slice(0, -3))
  .sort();
const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = wanted.filter((w) => !all.includes(w));
if (unknown.length > 0) {
  console.error(`unknown bench: ${unknown.join(', ')} (have: ${all.join(', ')})`);
  process.exit(2);
}
// With --json every row is one JSON object on stdout (lib.ts printTable/printRows); the header goes to stderr.
(jsonMode() ? console.error : console.log)(`# enclave-agent benchmarks — ${machine()} — ${new Date().toISOString()} — load average ${loadAverage()}`);
for (const name of wanted.length > 0 ? wanted : all) {
  const mod = (await import(new URL(`./${name}.ts`, dir).href)) as { default: () => Promise<void> };
  await mod.default();
}
