// docker/enclave-agent.sh gives the agent MALLOC_ARENA_MAX; the app the agent starts must get the environment
// the operator gave, so the agent drops what the launcher added — and only that.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { dropLauncherEnv } from '../../src/cli/launcher-env.ts';

const LAUNCHER = path.resolve(import.meta.dirname, '../../docker/enclave-agent.sh');

/** The environment the launcher would exec node with (its exec line swapped for `env`). */
function launcherEnv(env: Record<string, string>): Record<string, string> {
  const script = execFileSync('sed', ['-e', 's#^exec .*#exec env#', LAUNCHER], { encoding: 'utf8' });
  const out = execFileSync('sh', ['-c', script], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, encoding: 'utf8' });
  return Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

describe('the launcher allocator setting', () => {
  it('the launcher sets MALLOC_ARENA_MAX with its marker, and the agent removes both before anything else', () => {
    const env: NodeJS.ProcessEnv = launcherEnv({ APP_SETTING: 'x' });
    expect(env.MALLOC_ARENA_MAX).toBe('2');
    expect(env.ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX).toBe('1');
    dropLauncherEnv(env);
    expect(env.MALLOC_ARENA_MAX).toBeUndefined();
    expect(env.ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX).toBeUndefined();
    expect(env.APP_SETTING).toBe('x');
  });

  it("an operator's own MALLOC_ARENA_MAX is left alone by the launcher and reaches the app", () => {
    const env: NodeJS.ProcessEnv = launcherEnv({ MALLOC_ARENA_MAX: '8' });
    expect(env.ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX).toBeUndefined();
    dropLauncherEnv(env);
    expect(env.MALLOC_ARENA_MAX).toBe('8');
  });
});
