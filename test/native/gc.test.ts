// A socket that JS forgets without close() is closed by the addon's finalizer: no fd leak, no crash.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { available, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

it.skipIf(!available)('closes unreachable, never-closed sockets when they are collected', () => {
  const child = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gc-child.ts');
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', child, tmp.dir], { encoding: 'utf8', timeout: 30_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout.trim()) as Record<string, number>;
  expect(out.during).toBe(3); // new sockets: listener, client, accepted
  expect(out.after).toBe(0); // all three closed by their finalizers
  expect(out.closed).toBe(out.opened);
});
