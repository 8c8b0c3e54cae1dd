// native/src/die-with-parent.c on its own: PR_SET_PDEATHSIG survives the exec, a parent that is already gone
// means the command never runs, and a failed exec reports its errno on the given fd.
import { spawnSync } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultWrapperPath, execErrorName } from '../../src/runtime/die-with-agent.ts';
import { available, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const wrapper = defaultWrapperPath();
const PYTHON = '/usr/bin/python3';
/** Prints PR_GET_PDEATHSIG (prctl option 2) of the running program: 9 = SIGKILL, 0 = none. */
const PDEATHSIG_PY = 'import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)';

describe.skipIf(!available)('enclave_die_with_parent', () => {
  it('is built next to the addon', () => {
    expect(existsSync(wrapper)).toBe(true);
  });

  it('execs the command with PR_SET_PDEATHSIG = SIGKILL still set', () => {
    const py = PDEATHSIG_PY;
    const r = spawnSync(wrapper, [String(process.pid), '-', PYTHON, '-c', py], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('9');
    // and without the wrapper there is none (0): the flag is the wrapper's doing
    expect(spawnSync(PYTHON, ['-c', py], { encoding: 'utf8' }).stdout.trim()).toBe('0');
  });

  // The docker examples drop privileges with setpriv in CMD: a uid change clears PR_SET_PDEATHSIG (prctl(2)), so
  // they pass --pdeathsig=keep. Root and util-linux's setpriv are needed to show it.
  const canSetpriv = process.getuid?.() === 0 && spawnSync('setpriv', ['--pdeathsig=keep', 'true']).status === 0;
  it.skipIf(!canSetpriv)('a uid change through setpriv clears the flag unless setpriv --pdeathsig=keep restores it', () => {
    const drop = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const get = (extra: string[]): string =>
      spawnSync(wrapper, [String(process.pid), '-', ...drop, ...extra, '--', PYTHON, '-c', PDEATHSIG_PY], { encoding: 'utf8', cwd: '/' }).stdout.trim();
    expect(get([])).toBe('0');
    expect(get(['--pdeathsig=keep'])).toBe('9');
  });

  it('never runs the command when its parent is not the pid it was given (the agent died before the prctl)', () => {
    const marker = path.join(tmp.dir, 'ran');
    const r = spawnSync(wrapper, [String(process.ppid), '-', 'touch', marker], { encoding: 'utf8' });
    expect(r.signal).toBe('SIGKILL');
    expect(existsSync(marker)).toBe(false);
  });

  it('reports a failed exec as its errno on the error fd (close-on-exec otherwise) and exits 127', () => {
    const errFile = path.join(tmp.dir, 'errno');
    const fd = openSync(errFile, 'w');
    try {
      const r = spawnSync(wrapper, [String(process.pid), '3', path.join(tmp.dir, 'no-such-app')], { stdio: ['ignore', 'pipe', 'pipe', fd] });
      expect(r.status).toBe(127);
    } finally {
      closeSync(fd);
    }
    expect(execErrorName(readFileSync(errFile, 'utf8'))).toBe('ENOENT');
    // the exec'd app does not inherit the error fd
    const ok = spawnSync(wrapper, [String(process.pid), '3', 'sh', '-c', 'test -e /proc/self/fd/3 && echo open || echo closed'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    expect(ok.stdout.trim()).toBe('closed');
  });

  // Creating the sockets only: nothing here connects anywhere.
  const SOCKETS_PY = [
    'import ctypes, errno, socket, subprocess, sys',
    'def make(family):',
    '    try: socket.socket(family, socket.SOCK_STREAM).close(); return "ok"',
    '    except OSError as e: return errno.errorcode[e.errno]',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'params = ctypes.create_string_buffer(120)',
    'uring = "ok" if libc.syscall(425, 1, params) >= 0 else errno.errorcode[ctypes.get_errno()]',
    'child = subprocess.run([sys.executable, "-c", "import socket\\ntry: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); print(\'ok\')\\nexcept OSError as e: print(e.errno)"], capture_output=True, text=True).stdout.strip()',
    'print(make(socket.AF_VSOCK), make(socket.AF_INET), make(socket.AF_UNIX), uring, child)',
  ].join('\n');

  it('--deny-vsock: the command and what it starts cannot make vsock sockets or io_uring instances; other sockets work', () => {
    const denied = spawnSync(wrapper, ['--deny-vsock', String(process.pid), '-', PYTHON, '-c', SOCKETS_PY], { encoding: 'utf8' });
    expect(denied.stderr).toBe('');
    expect(denied.stdout.trim()).toBe('EACCES ok ok ENOSYS 13');
    // Without the option nothing refuses them with EACCES (a kernel without vsock says EAFNOSUPPORT).
    const open = spawnSync(wrapper, [String(process.pid), '-', PYTHON, '-c', SOCKETS_PY], { encoding: 'utf8' }).stdout.trim().split(' ');
    expect(open[0]).toMatch(/^(ok|EAFNOSUPPORT)$/);
    expect(open.slice(1, 3)).toEqual(['ok', 'ok']);
  });

  // Under the filter only: without it, PTRACE_ATTACH would stop this test's own process.
  const BORROW_PY = [
    'import ctypes, errno, os, platform',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'nr = {"x86_64": (101, 310), "aarch64": (117, 270)}[platform.machine()]',
    'def call(*a):',
    '    return "ok" if libc.syscall(*a) >= 0 else errno.errorcode[ctypes.get_errno()]',
    'pidfd = libc.syscall(434, os.getppid(), 0)',
    'print(call(438, pidfd, 0, 0), call(nr[0], 16, os.getppid(), 0, 0), call(nr[1], os.getppid(), 0, 0, 0, 0, 0))',
  ].join('\n');

  it("--deny-vsock: the command cannot borrow the agent's descriptors or memory (pidfd_getfd, ptrace, process_vm_readv)", () => {
    const r = spawnSync(wrapper, ['--deny-vsock', String(process.pid), '-', PYTHON, '-c', BORROW_PY], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('EPERM EPERM EPERM');
  });

  // An agent and its sandboxed app as the same unprivileged user (root and setpriv needed to make one here).
  const AGENT_JS = (notDumpable: boolean): string =>
    [
      `const addon = require(${JSON.stringify(path.join(path.dirname(wrapper), 'enclave_native.node'))});`,
      notDumpable ? 'addon.notDumpable();' : '',
      'const py = "import os\\nout = []\\nfor f in (\'mem\', \'environ\'):\\n  try: open(\'/proc/%d/%s\' % (os.getppid(), f), \'rb\').close(); out.append(\'opened\')\\n  except OSError as e: out.append(e.strerror)\\nprint(\' \'.join(out))";',
      `process.stdout.write(require('child_process').spawnSync(${JSON.stringify(wrapper)}, ['--deny-vsock', String(process.pid), '-', ${JSON.stringify(PYTHON)}, '-c', py], { encoding: 'utf8' }).stdout);`,
    ].join('\n');
  it.skipIf(!canSetpriv)("a non-dumpable agent: its sandboxed app of the same user cannot open the agent's /proc mem or environ", () => {
    const asNobody = (js: string): string =>
      spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', js], { encoding: 'utf8', cwd: '/' }).stdout.trim();
    expect(asNobody(AGENT_JS(true))).toBe('Permission denied Permission denied');
    expect(asNobody(AGENT_JS(false))).toBe('opened opened');
  });

  it('refuses malformed arguments with a usage line and exit 2', () => {
    for (const args of [[], ['1', '-', 'true'], ['x', '-', 'true'], [String(process.pid), 'x', 'true'], [String(process.pid), '-']]) {
      const r = spawnSync(wrapper, args, { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^usage: enclave_die_with_parent \[--deny-vsock\] PPID ERRFD FILE/);
    }
  });
});
