// bringUpLoopback() is exercised only inside a throwaway network namespace (`unshare --net`, we run as root
// here), so it can never disturb this machine's own interfaces.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { available } from './helpers.ts';

const child = fileURLToPath(new URL('./loopback-child.ts', import.meta.url));
const canUnshare = process.platform === 'linux' && spawnSync('unshare', ['--net', 'true']).status === 0;

function inFreshNetns(mode: string): Record<string, unknown> {
  const r = spawnSync('unshare', ['--net', process.execPath, '--import', 'tsx', child, mode], { encoding: 'utf8', timeout: 30_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

it.skipIf(!available || !canUnshare)('raises lo with 127.0.0.1/8 in a fresh namespace, idempotently, after which loopback TCP works', () => {
  const out = inFreshNetns('up');
  expect(out.before).toBe('ENETUNREACH'); // a new namespace starts with lo down
  // SIOCSIFADDR gives 127.0.0.1 its class-A mask already, so the netmask step finds nothing to do.
  expect(out.first).toEqual(['address', 'up']);
  expect(out.second).toEqual([]); // nothing left to change: no SIOCS* call at all
  expect(out.after).toBe('loop');
  expect(out.lo).toEqual(['127.0.0.1/255.0.0.0']);
});

it.skipIf(!available || !canUnshare)('reports EPERM clearly when not privileged', () => {
  const out = inFreshNetns('eperm');
  expect(out).toMatchObject({ code: 'EPERM', name: 'NativeError' });
  expect(out.message).toMatch(/CAP_NET_ADMIN/);
});
