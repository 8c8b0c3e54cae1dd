// The keys live in the agent's memory: `run` makes the agent non-dumpable whether or not the app is sandboxed
// ([egress] not enabled here), so an app of the same unprivileged user cannot open /proc/<agent>/mem or environ
// (nor ptrace it). Root and setpriv are needed to run an agent as such a user.
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { available } from '../native/helpers.ts';
import { freePort } from './harness.ts';

const NOBODY = 65534;
const canSetpriv = process.getuid?.() === 0 && spawnSync('setpriv', ['--reuid=65534', 'true']).status === 0;
const BIN = path.join(import.meta.dirname, '../../bin/enclave-agent.js');
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

it.skipIf(!available || !canSetpriv)("an app of the agent's own user cannot read the agent's memory or environment, unsandboxed too", async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-dumpable-'));
  dirs.push(dir);
  chownSync(dir, NOBODY, NOBODY);
  const config = path.join(dir, 'enclave.toml');
  writeFileSync(config, `[app]\nport = ${await freePort()}\nrestart = "never"\n[api]\nport = 0\n`);
  const seen = path.join(dir, 'seen');
  const app = [
    'import errno, os',
    'out = []',
    'for f in ("mem", "environ"):',
    '    try: open("/proc/%d/%s" % (os.getppid(), f), "rb").close(); out.append("opened")',
    '    except OSError as e: out.append(errno.errorcode[e.errno])',
    `open(${JSON.stringify(seen)}, "w").write(" ".join(out))`,
  ].join('\n');
  const agent = spawn(
    'setpriv',
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, BIN, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'), '--', '/usr/bin/python3', '-c', app],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, HOME: dir } },
  );
  let stderr = '';
  agent.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => agent.on('exit', (c) => resolve(c)));
  expect(code, stderr).toBe(0);
  expect(readFileSync(seen, 'utf8')).toBe('EACCES EACCES');
});
