// The transparent-mode rules in a scratch network namespace (root only): installing twice (an agent restarted in
// the same enclave) leaves exactly one set, and a failing command is named in the error.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const rules = path.resolve('src/egress/transparent-rules.ts');

describe.skipIf(!isRoot)('transparent rules', () => {
  const ns = `egrules-${randomBytes(3).toString('hex')}`;
  const inNs = (script: string) => run('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', '-e', script], { timeout: 60_000 });
  beforeAll(async () => {
    await run('ip', ['netns', 'add', ns]);
  });
  afterAll(async () => {
    await run('ip', ['netns', 'del', ns]).catch(() => {});
  });

  it('installs once, and a second install replaces the first instead of doubling or failing', async () => {
    const install = `import(${JSON.stringify(rules)}).then(async (m) => { await m.installTransparentRules({ transparentPort: 15001, dnsPort: 53 }); await m.installTransparentRules({ transparentPort: 15002, dnsPort: 53 }); })`;
    await inNs(install);
    const { stdout: nat } = await run('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat']);
    expect(nat.split('\n').filter((l) => l === '-A OUTPUT -j ENCLAVE_EGRESS')).toHaveLength(1);
    expect(nat).toContain('-A ENCLAVE_EGRESS -p tcp -j REDIRECT --to-ports 15002');
    expect(nat).not.toContain('15001');
    const { stdout: filter } = await run('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'filter']);
    expect(filter.split('\n').filter((l) => l === '-A OUTPUT -j ENCLAVE_EGRESS_OUT')).toHaveLength(1);
    const { stdout: v6 } = await run('ip', ['netns', 'exec', ns, 'ip6tables-save', '-t', 'filter']);
    expect(v6.split('\n').filter((l) => l.includes('-j REJECT'))).toHaveLength(1);
    const { stdout: route } = await run('ip', ['-n', ns, 'route', 'show']);
    expect(route).toContain('default dev lo scope link src 127.0.0.1');
  });
});
