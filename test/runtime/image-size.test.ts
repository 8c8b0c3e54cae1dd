// scripts/check-image-size.sh on small synthetic `docker save`-shaped tarballs (plain and gzip layers).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from './harness.ts';

const SCRIPT = path.join(REPO, 'scripts/check-image-size.sh');

function imageTarball(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-img-'));
  for (const d of ['l1', 'l2', 'img']) mkdirSync(path.join(dir, d));
  writeFileSync(path.join(dir, 'l1/app.bin'), Buffer.alloc(3 * 1024 * 1024, 7));
  writeFileSync(path.join(dir, 'l2/small.txt'), 'x'.repeat(1000));
  execFileSync('tar', ['-C', path.join(dir, 'l1'), '-cf', path.join(dir, 'img/aaa.tar'), '.']);
  execFileSync('tar', ['-C', path.join(dir, 'l2'), '-czf', path.join(dir, 'img/bbb.tar.gz'), '.']);
  writeFileSync(path.join(dir, 'img/manifest.json'), JSON.stringify([{ Config: 'cfg.json', Layers: ['aaa.tar', 'bbb.tar.gz'] }]));
  writeFileSync(path.join(dir, 'img/cfg.json'), '{}');
  const out = path.join(dir, 'image.tar');
  execFileSync('tar', ['-C', path.join(dir, 'img'), '-cf', out, '.']);
  return out;
}

function check(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync('bash', [SCRIPT, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
}

describe('scripts/check-image-size.sh', () => {
  it('sums the uncompressed layers, gzip included, and passes an image within the limit', () => {
    const img = imageTarball();
    const r = check(img);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/: 2 layers, 3\.\d MiB uncompressed, within the limit of 2048\.0 MiB: OK$/);
  });

  it('fails an image over the limit and says by how much it is measured', () => {
    const r = check(imageTarball(), String(2 * 1024 * 1024));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/: 2 layers, 3\.\d MiB uncompressed, over the limit of 2\.0 MiB: TOO LARGE$/);
  });

  it('refuses a missing file, a non-tar file and a bad limit with exit 2', () => {
    expect(check('/nonexistent/image.tar')).toMatchObject({ code: 2, err: 'check-image-size: /nonexistent/image.tar: no such file' });
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-img-'));
    writeFileSync(path.join(dir, 'x.tar'), 'not a tarball at all');
    expect(check(path.join(dir, 'x.tar')).code).toBe(2);
    expect(check(imageTarball(), 'lots')).toMatchObject({ code: 2, err: 'check-image-size: LIMIT_BYTES must be an integer, found "lots"' });
  });
});
