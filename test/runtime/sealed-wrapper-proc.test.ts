// The supervisor launches the sandboxing wrapper from a sealed copy at /proc/self/fd/N (d13eb5b). Where /proc is
// not mounted that path does not exist: the copy must count as unavailable (the wrapper file is used, with a
// warning; with a required sandbox the app is refused by name), never a launch path that fails with ENOENT every time.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { available } from '../native/helpers.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const tsx = path.join(root, 'node_modules/.bin/tsx');
const unshare = spawnSync('unshare', ['-m', '--propagation', 'private', 'true']).status === 0;

/** Runs `script` (TypeScript, imports from src/) in a mount namespace where /proc is unmounted; its stdout. */
function withoutProc(script: string): string {
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', `umount -l /proc && exec "${tsx}" --eval "$0"`, script], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return `${r.stdout}${r.stderr}`;
}

describe.skipIf(!available || !unshare)('supervisor without /proc mounted', () => {
  it('starts the app through the wrapper file (no sandbox)', () => {
    const out = withoutProc(`
      import { startSupervisor } from './src/runtime/supervisor.ts';
      const s = startSupervisor({ command: ['/bin/sh', '-c', 'echo app-started'], restart: 'never', appPort: 1, stdio: 'inherit' });
      s.done.then((r) => console.log('last', JSON.stringify(r.last)));
    `);
    // Failed before: {"exitCode":127,"spawnError":"ENOENT"} and no app-started.
    expect(out).toContain('app-started');
    expect(out).not.toContain('spawnError');
  });

  it('with a required sandbox refuses to start, naming why, rather than fail every launch', () => {
    const out = withoutProc(`
      import { startSupervisor } from './src/runtime/supervisor.ts';
      try {
        startSupervisor({ command: ['/bin/sh', '-c', 'echo app-started'], restart: 'never', appPort: 1, stdio: 'inherit', sandbox: 'required' })
          .done.then((r) => console.log('last', JSON.stringify(r.last)));
      } catch (err) {
        console.log('refused', err.code, err.message);
      }
    `);
    expect(out).toMatch(/refused RUNTIME_NO_SANDBOX .*\/proc/);
    expect(out).not.toContain('app-started');
  });
});
