// bin/enclave-agent.js picks what runs: in a checkout (src/ beside bin/) the TypeScript sources, even when a dist/
// from an earlier build is there (a stale dist/ is never what tests or developers run); in an installed package
// (no src/: the package does not ship it) the compiled dist/.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;

function runBin(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(dir, 'bin/enclave-agent.js'), 'a', 'b'], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-bin-'));
  for (const d of ['bin', 'src', 'dist']) mkdirSync(path.join(dir, d));
  copyFileSync(path.join(REPO, 'bin/enclave-agent.js'), path.join(dir, 'bin/enclave-agent.js'));
  writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  // Type syntax in the source proves tsx ran it; the stale build says so.
  writeFileSync(path.join(dir, 'src/cli.ts'), `const args: string[] = process.argv.slice(2);\nconsole.log('sources', args.join(' '));\n`);
  writeFileSync(path.join(dir, 'dist/cli.js'), `console.log('stale dist', process.argv.slice(2).join(' '));\n`);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('bin/enclave-agent.js', () => {
  it('runs the sources in a checkout, even with a dist/ present', async () => {
    expect(await runBin()).toEqual({ code: 0, stdout: 'sources a b\n', stderr: '' });
  });

  it('runs dist/ in an installed package (no src/)', async () => {
    rmSync(path.join(dir, 'src'), { recursive: true });
    expect(await runBin()).toEqual({ code: 0, stdout: 'stale dist a b\n', stderr: '' });
  });
});
