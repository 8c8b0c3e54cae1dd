// `enclave-agent run` starts every app in its sandbox by default, [egress] off included: a root app outside it
// kept CAP_SYS_PTRACE (which overrides the agent's non-dumpable flag: /proc/<agent>/mem, the keys), could make
// vsock sockets and issue the NSM's ioctl. [egress] app_vsock = true lets the sandboxed app make vsock sockets and
// nothing more; [app] sandbox = false is the explicit opt-out. Root is needed to show what a root app keeps.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { available } from '../native/helpers.ts';
import { freePort, REPO } from './harness.ts';

const BIN = path.join(REPO, 'bin/enclave-agent.js');
const isRoot = process.getuid?.() === 0;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/**
 * The app: what it can do to the agent (its parent) and the enclave. Nothing is connected or written: the
 * agent's memory is opened and closed, a vsock socket made and closed, the NSM's ioctl sent to /dev/null (absent
 * here: ENOTTY means it reached a driver, EPERM is the filter's).
 */
const PROBE_PY = [
  'import ctypes, errno, json, os, platform, socket, sys',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'def attempt(f):',
  '    try: f(); return "ok"',
  '    except OSError as e: return errno.errorcode[e.errno]',
  'def ioctl_nsm():',
  '    fd = os.open("/dev/null", os.O_RDWR)',
  '    nr = ctypes.c_long({"x86_64": 16, "aarch64": 29}[platform.machine()])',
  '    r = libc.syscall(nr, fd, ctypes.c_ulong(0xC0200A00), ctypes.create_string_buffer(32))',
  '    return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]',
  'status = open("/proc/self/status").read()',
  'eff = int([l for l in status.splitlines() if l.startswith("CapEff:")][0].split()[1], 16)',
  'out = {',
  '    "mem": attempt(lambda: open("/proc/%d/mem" % os.getppid(), "rb").close()),',
  '    "sys_ptrace": bool(eff >> 19 & 1),',
  '    "vsock": attempt(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()),',
  '    "nsm_ioctl": ioctl_nsm(),',
  '}',
  'open(sys.argv[1], "w").write(json.dumps(out))',
].join('\n');

type Seen = { mem: string; sys_ptrace: boolean; vsock: string; nsm_ioctl: string };

/** `run` (as this test's user: root) with `toml` added to the table; the probe's findings and the agent's stderr. */
async function probeApp(toml: string): Promise<{ seen: Seen; stderr: string }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-run-sandbox-'));
  dirs.push(dir);
  const config = path.join(dir, 'enclave.toml');
  writeFileSync(config, `[app]\nport = ${await freePort()}\nrestart = "never"\n${toml}\n[api]\nenabled = false\n`);
  const seen = path.join(dir, 'seen.json');
  const agent = spawn(
    process.execPath,
    [BIN, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'), '--', '/usr/bin/python3', '-c', PROBE_PY, seen],
    { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  agent.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => agent.on('exit', (c) => resolve(c)));
  expect(code, stderr).toBe(0);
  return { seen: JSON.parse(readFileSync(seen, 'utf8')) as Seen, stderr };
}

describe.skipIf(!available || !isRoot)('run: the app sandbox, [egress] off', () => {
  // Failed before: {"mem": "ok", "sys_ptrace": true, "vsock": "ok", "nsm_ioctl": "ENOTTY"} (no sandbox at all).
  it("is on by default: a root app cannot read the agent's memory, make vsock sockets or ask the NSM", async () => {
    const { seen, stderr } = await probeApp('');
    expect(seen).toEqual({ mem: 'EACCES', sys_ptrace: false, vsock: 'EACCES', nsm_ioctl: 'EPERM' });
    expect(stderr).not.toMatch(/WARNING: \[app\]/);
  });

  // Failed before: app_vsock = true meant no sandbox (mem "ok", CAP_SYS_PTRACE kept, the NSM ioctl reaching a driver).
  it('[egress] app_vsock = true: vsock sockets are allowed, the rest of the sandbox holds', async () => {
    const { seen } = await probeApp('[egress]\napp_vsock = true\n');
    // Not refused by the filter (a kernel without vsock would say EAFNOSUPPORT itself).
    expect(seen.vsock).toMatch(/^(ok|EAFNOSUPPORT)$/);
    expect({ ...seen, vsock: undefined }).toEqual({ mem: 'EACCES', sys_ptrace: false, vsock: undefined, nsm_ioctl: 'EPERM' });
  });

  it('[app] sandbox = false: the documented opt-out runs the app with all it had, and says so', async () => {
    const { seen, stderr } = await probeApp('sandbox = false\n');
    expect(seen.vsock).toMatch(/^(ok|EAFNOSUPPORT)$/);
    expect({ ...seen, vsock: undefined }).toEqual({ mem: 'ok', sys_ptrace: true, vsock: undefined, nsm_ioctl: 'ENOTTY' });
    expect(stderr).toMatch(/^enclave-agent run: WARNING: \[app\] sandbox = false: the app runs unsandboxed/m);
  });
});
