// native/src/die-with-parent.c on its own: PR_SET_PDEATHSIG survives the exec, a parent that is already gone
// means the command never runs, a failed exec reports its errno on the given fd, and --deny-vsock's sandbox
// (seccomp filter: no vsock, no NSM ioctl; capabilities cut to an allow-list, kernel settings read-only) holds for
// the command and what it starts.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, existsSync, ftruncateSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { defaultWrapperPath, execErrorName, sealedWrapper } from '../../src/runtime/die-with-agent.ts';
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

  it('runs from a sealed copy (sealedWrapper) that no one, root included, can write, grow or shrink', () => {
    const sealed = sealedWrapper(wrapper);
    if (!('wrapper' in sealed)) throw new Error(sealed.unavailable);
    try {
      expect(sealed.wrapper).toMatch(/^\/proc\/self\/fd\/\d+$/);
      expect(readFileSync(sealed.wrapper).equals(readFileSync(wrapper))).toBe(true);
      expect(() => writeFileSync(sealed.wrapper, 'x')).toThrow(expect.objectContaining({ code: 'EPERM' }));
      const fd = openSync(sealed.wrapper, fsConstants.O_WRONLY | fsConstants.O_APPEND);
      try {
        expect(() => writeSync(fd, 'x')).toThrow(expect.objectContaining({ code: 'EPERM' }));
        expect(() => ftruncateSync(fd, 1)).toThrow(expect.objectContaining({ code: 'EPERM' }));
      } finally {
        closeSync(fd);
      }
      const r = spawnSync(sealed.wrapper, [String(process.pid), '-', '/bin/echo', 'ran'], { encoding: 'utf8' });
      expect(r.stdout).toBe('ran\n');
    } finally {
      sealed.close();
    }
    expect(sealedWrapper('/nonexistent/wrapper')).toEqual({ unavailable: 'no sealed copy of /nonexistent/wrapper (ENOENT)' });
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

  // A descriptor the agent holds without FD_CLOEXEC (one it inherited, a vsock stream say) must not reach the app:
  // with --deny-vsock it gets its stdio only. spawnSync hands fds 3 and 4 to the wrapper as inheritable.
  const FDS_PY = 'import os\nprint(" ".join(sorted(f for f in os.listdir("/proc/self/fd") if os.path.exists("/proc/self/fd/" + f))))';
  it('--deny-vsock: the command inherits its stdio and no other descriptor', () => {
    const fds = (deny: boolean): string => {
      const leaked = openSync(path.join(tmp.dir, `leaked-${deny}`), 'w');
      try {
        const r = spawnSync(wrapper, [...(deny ? ['--deny-vsock'] : []), String(process.pid), '3', PYTHON, '-c', FDS_PY], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'pipe', 'pipe', leaked],
        });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        return r.stdout.trim();
      } finally {
        closeSync(leaked);
      }
    };
    expect(fds(true)).toBe('0 1 2');
    // Without the option it is passed on (3, the error fd, never is; what this test runner inherited may be too).
    const open = fds(false).split(' ');
    expect(open).toContain('4');
    expect(open).not.toContain('3');
  });

  // In a user namespace of its own the app would hold every capability again (over its own namespaces). clone3
  // hides its flags from the filter: ENOSYS, which the C library answers by falling back to clone. Threads,
  // fork and subprocesses still work.
  const USERNS_PY = [
    'import ctypes, errno, os, subprocess, sys, threading',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'def res(r): return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]',
    'NR_CLONE3 = 435',
    'out = [res(libc.syscall(NR_CLONE3, None, 0)), res(libc.unshare(0x10000000))]',
    't = threading.Thread(target=lambda: None); t.start(); t.join()',
    'pid = os.fork()',
    'if pid == 0: os._exit(7)',
    'out.append(str(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))',
    'out.append(subprocess.run(["echo", "spawned"], capture_output=True, text=True).stdout.strip())',
    'print(" ".join(out))',
  ].join('\n');
  it('--deny-vsock: the command cannot make a user namespace (unshare or clone with CLONE_NEWUSER, clone3)', () => {
    const run = (deny: boolean): string => {
      const r = spawnSync(wrapper, [...(deny ? ['--deny-vsock'] : []), String(process.pid), '-', PYTHON, '-c', USERNS_PY], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      return r.stdout.trim();
    };
    expect(run(true)).toBe('ENOSYS EPERM 7 spawned');
    // Without the filter clone3 reaches the kernel (EINVAL: no arguments) and the namespace is made (this short-lived process's own).
    expect(run(false)).toBe('EINVAL ok 7 spawned');
    // a child of the app, through clone() with CLONE_NEWUSER: unshare(1) --fork
    const child = spawnSync(wrapper, ['--deny-vsock', String(process.pid), '-', 'unshare', '--user', '--fork', 'true'], { encoding: 'utf8' });
    expect(child.status).not.toBe(0);
    expect(child.stderr).toMatch(/unshare failed: Operation not permitted/);
  });

  // The app must not ask the NSM for attestation documents of its own (a public_key or nonce it chose): the
  // agent's NSM_IOCTL_RAW, on any descriptor, is refused. /dev/null stands in for /dev/nsm (absent here): ENOTTY
  // means the ioctl reached a driver. The kernel takes the request as a 32-bit int (FIONREAD with high bits set
  // still works), so high bits must not slip past. Another request on the same fd, and FIONREAD, still work.
  const NSM_IOCTL_RAW = /#define NSM_IOCTL_RAW (0x[0-9A-Fa-f]+)UL/.exec(readFileSync(path.join(import.meta.dirname, '../../native/src/nsm.c'), 'utf8'))?.[1];
  const NSM_PY = [
    'import ctypes, errno, os, platform, subprocess, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'NR_IOCTL = ctypes.c_long({"x86_64": 16, "aarch64": 29}[platform.machine()])',
    'raw = int(sys.argv[1], 16)',
    'def ioctl(fd, req, arg):',
    '    return "ok" if libc.syscall(NR_IOCTL, fd, ctypes.c_ulong(req), arg) >= 0 else errno.errorcode[ctypes.get_errno()]',
    'fd = os.open("/dev/null", os.O_RDWR)',
    'buf = ctypes.create_string_buffer(32)',
    'out = [ioctl(fd, r, buf) for r in (raw, raw | 0xFFFFFFFF00000000, raw | 1 << 32, raw + 1)]',
    'rd, wr = os.pipe()',
    'os.write(wr, b"abc")',
    'for r in (0x541B, 0x541B | 0xFFFFFFFF00000000):  # FIONREAD, and with high bits the kernel drops',
    '    n = ctypes.c_int(-1)',
    '    out.append("%s:%d" % (ioctl(rd, r, ctypes.byref(n)), n.value))',
    'if len(sys.argv) > 2: out.append(subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], capture_output=True, text=True).stdout.strip())',
    'print(" ".join(out))',
  ].join('\n');
  const nsmProbe = (deny: boolean): string => {
    const r = spawnSync(wrapper, [...(deny ? ['--deny-vsock'] : []), String(process.pid), '-', PYTHON, '-c', NSM_PY, NSM_IOCTL_RAW ?? '', NSM_PY], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return r.stdout.trim();
  };

  it("--deny-vsock: the command and what it starts cannot issue the agent's NSM ioctl; other ioctls work", () => {
    expect(NSM_IOCTL_RAW).toBe('0xC0200A00'); // _IOWR(0x0A, 0, struct nsm_raw), a 32-byte struct
    expect(nsmProbe(true)).toBe('EPERM EPERM EPERM ENOTTY ok:3 ok:3 EPERM EPERM EPERM ENOTTY ok:3 ok:3');
    // Without the option the same requests reach the driver: the EPERM is the filter's.
    expect(nsmProbe(false)).toBe('ENOTTY ENOTTY ENOTTY ENOTTY ok:3 ok:3 ENOTTY ENOTTY ENOTTY ENOTTY ok:3 ok:3');
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

  // What a sandboxed root app keeps: Docker's default capabilities minus CAP_MKNOD and CAP_NET_RAW (capability(7) numbers).
  const KEPT_CAPS = {
    CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_FOWNER: 3, CAP_FSETID: 4, CAP_KILL: 5, CAP_SETGID: 6, CAP_SETUID: 7, CAP_SETPCAP: 8,
    CAP_NET_BIND_SERVICE: 10, CAP_SYS_CHROOT: 18, CAP_AUDIT_WRITE: 29, CAP_SETFCAP: 31,
  };
  const KEPT_MASK = Object.values(KEPT_CAPS).reduce((m, n) => m | (1n << BigInt(n)), 0n);
  const CAP_SETS = ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'] as const;
  type CapSets = Record<(typeof CAP_SETS)[number], bigint>;
  const capSets = (status: string): CapSets =>
    Object.fromEntries(CAP_SETS.map((k) => [k, BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1] ?? 'x'}`)])) as CapSets;
  const ownCaps = capSets(readFileSync('/proc/self/status', 'utf8'));
  const isRoot = process.getuid?.() === 0;

  // Run under the wrapper: the capability sets of the command and of a child it starts, then what root's
  // powers still do. Nothing is loaded or mounted: init_module gets no image (ENOEXEC when allowed), the mount is
  // a propagation change on a directory that is no mount point (EINVAL when allowed), and the new mount
  // namespace is this short-lived process's own.
  const POWERS_PY = [
    'import ctypes, errno, json, os, platform, socket, subprocess, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'def res(r): return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]',
    'def caps(text): return {l.split(":")[0]: l.split()[1] for l in text.splitlines() if l.startswith("Cap")}',
    'def bind_low():',
    '    for port in range(80, 1024):',
    '        s = socket.socket()',
    '        try: s.bind(("127.0.0.1", port)); return "ok"',
    '        except OSError as e:',
    '            if e.errno != errno.EADDRINUSE: return errno.errorcode[e.errno]',
    '        finally: s.close()',
    'def raw(family, kind, proto):',
    '    try: socket.socket(family, kind, proto).close(); return "ok"',
    '    except OSError as e: return errno.errorcode[e.errno]',
    'def chown(f):',
    '    try: os.chown(f, 65534, 65534); return "ok"',
    '    except OSError as e: return errno.errorcode[e.errno]',
    'init_module = {"x86_64": 175, "aarch64": 105}[platform.machine()]',
    'print(json.dumps({',
    '    "own": caps(open("/proc/self/status").read()),',
    '    "child": caps(subprocess.run(["cat", "/proc/self/status"], capture_output=True, text=True).stdout),',
    '    "init_module": res(libc.syscall(init_module, None, 0, b"")),',
    '    "mount": res(libc.mount(None, sys.argv[1].encode(), None, 1 << 18, None)),',
    '    "unshare": res(libc.unshare(0x20000)),',
    '    "bind_low": bind_low(),',
    '    "chown": chown(sys.argv[2]),',
    '    "raw": [raw(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), raw(socket.AF_PACKET, socket.SOCK_RAW, 0)],',
    '}))',
  ].join('\n');
  type Powers = { own: Record<string, string>; child: Record<string, string>; init_module: string; mount: string; unshare: string; bind_low: string; chown: string; raw: string[] };
  const powers = (deny: boolean): Powers => {
    const file = path.join(tmp.dir, `owned-${deny}`);
    writeFileSync(file, '');
    const r = spawnSync(wrapper, [...(deny ? ['--deny-vsock'] : []), String(process.pid), '-', PYTHON, '-c', POWERS_PY, tmp.dir, file], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout) as Powers;
  };
  const hex = (sets: Record<string, string>): CapSets => capSets(CAP_SETS.map((k) => `${k}:\t${sets[k] ?? 'x'}`).join('\n'));

  it.skipIf(!isRoot)('--deny-vsock as root: the command and its children keep only the allow-listed capabilities, in every set', () => {
    const sandboxed = powers(true);
    const expected = Object.fromEntries(CAP_SETS.map((k) => [k, ownCaps[k] & KEPT_MASK])) as CapSets;
    expect(expected.CapBnd).toBe(KEPT_MASK); // root here: the whole list was there to keep
    expect(hex(sandboxed.own)).toEqual(expected);
    expect(hex(sandboxed.child)).toEqual(expected);
    // Kept: binding a port below 1024 (CAP_NET_BIND_SERVICE), giving a file away (CAP_CHOWN).
    expect(sandboxed.bind_low).toBe('ok');
    expect(sandboxed.chown).toBe('ok');
    // Gone: CAP_SYS_ADMIN (mount, namespaces) and CAP_SYS_MODULE. This kernel may have no modules at all
    // (ENOSYS for everyone); where it has them, root without the wrapper gets past the capability check.
    expect([sandboxed.mount, sandboxed.unshare]).toEqual(['EPERM', 'EPERM']);
    // Gone too: CAP_NET_RAW, raw and packet sockets (loopback only in an enclave: the agent's own traffic).
    expect(sandboxed.raw).toEqual(['EPERM', 'EPERM']);
    const open = powers(false);
    expect([open.mount, open.unshare, open.bind_low, open.chown]).toEqual(['EINVAL', 'ok', 'ok', 'ok']);
    expect(open.raw).toEqual(['ok', 'ok']);
    expect(open.init_module).not.toBe('EPERM');
    expect(sandboxed.init_module).toBe(open.init_module === 'ENOSYS' ? 'ENOSYS' : 'EPERM');
  });

  it('without --deny-vsock the capabilities are left as they are', () => {
    const open = powers(false);
    expect(hex(open.own)).toEqual(ownCaps);
    expect(hex(open.child).CapBnd).toBe(ownCaps.CapBnd);
  });

  // Kernel interfaces Docker's default profile refuses and no app needs, each called with arguments that do
  // nothing: the filter's EPERM, where the kernel itself answers otherwise (EFAULT for a NULL attribute, EINVAL
  // for an unknown bpf command; the keyring lookup and a user-mode-only userfaultfd succeed). /dev/userfaultfd's
  // ioctl makes a userfaultfd without the syscall.
  const KERNEL_PY = [
    'import ctypes, errno, os, platform',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'nr = {"x86_64": (298, 321, 323, 250, 248, 249), "aarch64": (241, 280, 282, 219, 217, 218)}[platform.machine()]',
    'def res(r):',
    '    if r >= 0: return "ok"',
    '    return errno.errorcode[ctypes.get_errno()]',
    'def call(n, *a): return res(libc.syscall(ctypes.c_long(n), *a))',
    'def uffd_dev():',
    '    try: fd = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)',
    '    except FileNotFoundError: return "absent"',
    '    try: return res(libc.ioctl(fd, 0xAA00, os.O_CLOEXEC | 1))',
    '    finally: os.close(fd)',
    'print(" ".join([',
    '    call(nr[0], None, 0, -1, -1, 0),  # perf_event_open',
    '    call(nr[1], 0xFFFF, None, 0),  # bpf',
    '    call(nr[2], os.O_CLOEXEC | 1),  # userfaultfd(UFFD_USER_MODE_ONLY)',
    '    call(nr[3], 0, -3, 0),  # keyctl(KEYCTL_GET_KEYRING_ID, the session keyring, no create)',
    '    call(nr[4], None, None, None, 0, -3),  # add_key',
    '    call(nr[5], None, None, None, 0),  # request_key',
    '    uffd_dev(),',
    ']))',
  ].join('\n');
  const kernelProbe = (flags: string[]): string => {
    const r = spawnSync(wrapper, [...flags, String(process.pid), '-', PYTHON, '-c', KERNEL_PY], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return r.stdout.trim();
  };
  const uffdDevice = existsSync('/dev/userfaultfd');

  it('--deny-vsock and --sandbox: perf_event_open, bpf, userfaultfd, keyctl, add_key and request_key fail with EPERM', () => {
    const refused = `EPERM EPERM EPERM EPERM EPERM EPERM ${uffdDevice ? 'EPERM' : 'absent'}`;
    expect(kernelProbe(['--deny-vsock'])).toBe(refused);
    expect(kernelProbe(['--sandbox'])).toBe(refused);
  });

  it.skipIf(!isRoot)('without the sandbox the same calls reach the kernel (root: none of them says EPERM)', () => {
    expect(kernelProbe([])).toBe(`EFAULT EINVAL ok ok EFAULT EFAULT ${uffdDevice ? 'ok' : 'absent'}`);
  });

  // [egress] app_vsock = true: the app makes its own vsock sockets, and everything else of the sandbox holds.
  it('--sandbox: vsock sockets can be made; io_uring, the agent, the NSM ioctl, user namespaces and the capabilities stay as under --deny-vsock', () => {
    const sockets = spawnSync(wrapper, ['--sandbox', String(process.pid), '-', PYTHON, '-c', SOCKETS_PY], { encoding: 'utf8' });
    expect(sockets.stderr).toBe('');
    const [vsock, inet, unix, uring, child] = sockets.stdout.trim().split(' ');
    expect(vsock).toMatch(/^(ok|EAFNOSUPPORT)$/); // a kernel without vsock says so itself
    expect([inet, unix, uring]).toEqual(['ok', 'ok', 'ENOSYS']);
    expect(child).toMatch(/^(ok|97)$/);
    const borrow = spawnSync(wrapper, ['--sandbox', String(process.pid), '-', PYTHON, '-c', BORROW_PY], { encoding: 'utf8' });
    expect(borrow.stdout.trim()).toBe('EPERM EPERM EPERM');
    const nsm = spawnSync(wrapper, ['--sandbox', String(process.pid), '-', PYTHON, '-c', NSM_PY, NSM_IOCTL_RAW ?? '', NSM_PY], { encoding: 'utf8' });
    expect(nsm.stdout.trim()).toBe('EPERM EPERM EPERM ENOTTY ok:3 ok:3 EPERM EPERM EPERM ENOTTY ok:3 ok:3');
    const userns = spawnSync(wrapper, ['--sandbox', String(process.pid), '-', PYTHON, '-c', USERNS_PY], { encoding: 'utf8' });
    expect(userns.stdout.trim()).toBe('ENOSYS EPERM 7 spawned');
    const status = spawnSync(wrapper, ['--sandbox', String(process.pid), '-', 'cat', '/proc/self/status'], { encoding: 'utf8' });
    expect(capSets(status.stdout)).toEqual(Object.fromEntries(CAP_SETS.map((k) => [k, ownCaps[k] & KEPT_MASK])));
  });

  it.skipIf(!canSetpriv)('--deny-vsock as an unprivileged user: nothing to drop, the command runs as before', () => {
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', wrapper, '--deny-vsock', String(process.pid), '-', 'cat', '/proc/self/status'], {
      encoding: 'utf8',
      cwd: '/',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // No CAP_SETPCAP: the bounding set stays as it was (no_new_privs: nothing in it can be gained), no capability held.
    expect(capSets(r.stdout)).toEqual({ CapInh: 0n, CapPrm: 0n, CapEff: 0n, CapBnd: ownCaps.CapBnd, CapAmb: 0n });
  });

  // Root needs no capability to write root-owned kernel settings, and some make the kernel run a program as full
  // root outside the sandbox (a core_pattern pipe handler, modprobe, uevent_helper, a cgroup v1 release_agent) or
  // act on the machine (sysrq-trigger). They are only ever OPENED for writing here, then closed: nothing is written.
  const cgroupReleaseAgents = ((): string[] => {
    try {
      return readdirSync('/sys/fs/cgroup').map((d) => path.join('/sys/fs/cgroup', d, 'release_agent'));
    } catch {
      return [];
    }
  })();
  const KERNEL_SETTINGS = [
    '/proc/sys/kernel/core_pattern',
    '/proc/sys/kernel/modprobe',
    '/proc/sysrq-trigger',
    '/sys/kernel/uevent_helper',
    '/sys/kernel/mm/transparent_hugepage/enabled',
    ...cgroupReleaseAgents,
  ].filter((f) => existsSync(f));
  const SETTINGS_PY = [
    'import errno, json, os, subprocess, sys',
    'def open_for_writing(p):',
    '    try: os.close(os.open(p, os.O_WRONLY)); return "opened"',
    '    except OSError as e: return errno.errorcode[e.errno]',
    'print(json.dumps({',
    '    "ns": os.readlink("/proc/self/ns/mnt"),',
    '    "child_ns": subprocess.run(["readlink", "/proc/self/ns/mnt"], capture_output=True, text=True).stdout.strip(),',
    '    "open": {p: open_for_writing(p) for p in sys.argv[1:]},',
    '    "core_pattern": open("/proc/sys/kernel/core_pattern").read(),',
    '}))',
  ].join('\n');
  type Settings = { ns: string; child_ns: string; open: Record<string, string>; core_pattern: string };
  const settings = (deny: boolean): Settings => {
    const r = spawnSync(wrapper, [...(deny ? ['--deny-vsock'] : []), String(process.pid), '-', PYTHON, '-c', SETTINGS_PY, ...KERNEL_SETTINGS], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout) as Settings;
  };
  const ownMntNs = readlinkSync('/proc/self/ns/mnt');
  /** This process (root, unsandboxed) can still open each setting for writing: nothing leaked out of the app's namespace. */
  const expectWritableHere = (): void => {
    for (const f of KERNEL_SETTINGS) closeSync(openSync(f, fsConstants.O_WRONLY));
  };

  it.skipIf(!isRoot)('--deny-vsock as root: /proc/sys, /sys and sysrq-trigger are read-only to the app, in its own mount namespace', () => {
    expect(KERNEL_SETTINGS).toContain('/proc/sys/kernel/core_pattern');
    const s = settings(true);
    expect(s.open).toEqual(Object.fromEntries(KERNEL_SETTINGS.map((f) => [f, 'EROFS'])));
    expect(s.core_pattern).toBe(readFileSync('/proc/sys/kernel/core_pattern', 'utf8'));
    expect(s.ns).not.toBe(ownMntNs);
    expect(s.child_ns).toBe(s.ns);
    expectWritableHere();
  });

  it.skipIf(!isRoot)('without --deny-vsock the app shares the mount namespace and root can open the settings as before', () => {
    const s = settings(false);
    expect([s.ns, s.child_ns]).toEqual([ownMntNs, ownMntNs]);
    expect(s.open).toEqual(Object.fromEntries(KERNEL_SETTINGS.map((f) => [f, 'opened'])));
    expectWritableHere();
  });

  // The app's mounts are slaves of the agent's: a mount the agent makes later under a shared mount still reaches
  // the app. (This machine's "/" is private, as without systemd, so the test makes a shared mount of its own.)
  const LATE_PY = ['import os, sys', 'print("ready", flush=True)', 'sys.stdin.readline()', 'print(" ".join(sorted(os.listdir(sys.argv[1]))))'].join('\n');
  it.skipIf(!isRoot)('--deny-vsock as root: a mount made by the agent after the app started is visible to the app', async () => {
    const shared = path.join(tmp.dir, 'shared');
    const late = path.join(shared, 'late');
    mkdirSync(late, { recursive: true });
    const mount = (...args: string[]): void => {
      const r = spawnSync('mount', args, { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    };
    mount('--bind', shared, shared);
    let lateMounted = false;
    let app: ChildProcess | undefined;
    try {
      mount('--make-shared', shared);
      app = spawn(wrapper, ['--deny-vsock', String(process.pid), '-', PYTHON, '-c', LATE_PY, late], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      app.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      const exited = new Promise<number | null>((resolve) => app?.on('exit', (code) => resolve(code)));
      await new Promise<void>((resolve, reject) => {
        app?.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.startsWith('ready\n')) resolve();
        });
        app?.on('exit', () => reject(new Error(`app exited before it was ready: ${err}`)));
      });
      expect(readlinkSync(`/proc/${app.pid}/ns/mnt`)).not.toBe(ownMntNs);
      mount('-t', 'tmpfs', '-o', 'size=64k', 'late-tmpfs', late);
      lateMounted = true;
      writeFileSync(path.join(late, 'made-after-start'), '');
      app.stdin?.end('\n');
      expect(await exited).toBe(0);
      expect(err).toBe('');
      expect(out).toBe('ready\nmade-after-start\n');
    } finally {
      if (app?.exitCode === null) app.kill('SIGKILL');
      if (lateMounted) spawnSync('umount', [late]);
      spawnSync('umount', [shared]);
    }
  });

  // The agent starts worker threads from its code directory long after the app started: a root app must neither
  // rewrite a file there nor move the directory (or one above it) aside and put its own in its place.
  const CODE_PY = [
    'import errno, json, os, sys',
    'code, beside = sys.argv[1], sys.argv[2]',
    'def attempt(f):',
    '    try: f(); return "ok"',
    '    except OSError as e: return errno.errorcode[e.errno]',
    'print(json.dumps({',
    '    "rewrite": attempt(lambda: os.close(os.open(os.path.join(code, "worker.js"), os.O_WRONLY))),',
    // from a working directory above DIR, by a relative path (an app in /app, the agent in /app/node_modules)
    '    "rewrite_from_cwd": attempt(lambda: os.close(os.open(os.path.relpath(os.path.join(code, "worker.js")), os.O_WRONLY))),',
    '    "create": attempt(lambda: os.close(os.open(os.path.join(code, "planted.js"), os.O_WRONLY | os.O_CREAT))),',
    '    "rename": attempt(lambda: os.rename(code, code + ".aside")),',
    '    "rename_parent": attempt(lambda: os.rename(os.path.dirname(code), os.path.dirname(code) + ".aside")),',
    '    "write_beside": attempt(lambda: os.close(os.open(beside, os.O_WRONLY | os.O_CREAT))),',
    '}))',
  ].join('\n');
  it.skipIf(!isRoot)('--deny-vsock --read-only DIR as root: the app can neither write DIR nor rename it or a directory above it', () => {
    const code = path.join(tmp.dir, 'agent', 'dist');
    mkdirSync(code, { recursive: true });
    writeFileSync(path.join(code, 'worker.js'), 'original');
    const r = spawnSync(wrapper, ['--deny-vsock', '--read-only', code, String(process.pid), '-', PYTHON, '-c', CODE_PY, code, path.join(tmp.dir, 'beside')], {
      encoding: 'utf8',
      cwd: path.join(tmp.dir, 'agent'),
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ rewrite: 'EROFS', rewrite_from_cwd: 'EROFS', create: 'EROFS', rename: 'EBUSY', rename_parent: 'EBUSY', write_beside: 'ok' });
    // The agent's own view is untouched: it can still write there, and nothing moved.
    writeFileSync(path.join(code, 'worker.js'), 'updated by the agent');
    expect(readdirSync(path.join(tmp.dir, 'agent'))).toEqual(['dist']);
    // Only absolute directories, named without a trailing slash or a symbolic link, and only with --deny-vsock.
    for (const bad of [['--deny-vsock', '--read-only', 'relative'], ['--deny-vsock', '--read-only', `${code}/`], ['--read-only', code]]) {
      const u = spawnSync(wrapper, [...bad, String(process.pid), '-', 'true'], { encoding: 'utf8' });
      expect(u.status, bad.join(' ')).toBe(2);
      expect(u.stderr).toMatch(/^usage: /);
    }
    const link = path.join(tmp.dir, 'code-link');
    symlinkSync(code, link);
    const viaLink = spawnSync(wrapper, ['--deny-vsock', '--read-only', link, String(process.pid), '-', 'true'], { encoding: 'utf8' });
    expect(viaLink.status).toBe(2);
    expect(viaLink.stderr).toBe(`enclave_die_with_parent: --deny-vsock: read-only mounts: ${link}: Invalid argument\n`);
  });

  // A root app can write /etc/ld.so.preload (or libc itself), and the dynamic loader runs what it names in every
  // program started after — the wrapper of the app's next launch included, before its sandbox is up: full root,
  // no filter. The wrapper is linked statically, so no loader runs. Here the planted library is put in place in a
  // private mount namespace of the test's own (an overlay on /etc; the machine's /etc is untouched) and records
  // the seccomp mode (0 = none, 2 = filter) of each program that loads it.
  const canPlant = isRoot && spawnSync('cc', ['--version']).status === 0 && spawnSync('unshare', ['--version']).status === 0;
  it.skipIf(!canPlant)('--deny-vsock: a library planted in /etc/ld.so.preload never runs outside the sandbox', () => {
    const marker = path.join(tmp.dir, 'planted-ran');
    const lib = path.join(tmp.dir, 'planted.so');
    const src = path.join(tmp.dir, 'planted.c');
    writeFileSync(
      src,
      '#include <stdio.h>\n#include <sys/prctl.h>\n' +
        `__attribute__((constructor)) static void planted(void) { FILE* f = fopen(${JSON.stringify(marker)}, "a"); if (f) { fprintf(f, "%d\\n", prctl(PR_GET_SECCOMP)); fclose(f); } }\n`,
    );
    const cc = spawnSync('cc', ['-shared', '-fPIC', '-o', lib, src], { encoding: 'utf8' });
    expect(cc.stderr).toBe('');
    const etc = path.join(tmp.dir, 'etc-overlay');
    mkdirSync(etc);
    const plantThenExec = [
      'mount -t tmpfs planted "$D" && mkdir "$D/upper" "$D/work" && echo "$LIB" > "$D/upper/ld.so.preload"',
      'mount -t overlay planted -o "lowerdir=/etc,upperdir=$D/upper,workdir=$D/work" /etc',
      'exec "$0" "$@"',
    ].join(' && ');
    // unshare and sh exec: the wrapper's parent is this process
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', plantThenExec, wrapper, '--deny-vsock', String(process.pid), '-', '/bin/true'], {
      encoding: 'utf8',
      env: { ...process.env, D: etc, LIB: lib },
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // /bin/true loaded it, under the filter: the plant worked; the wrapper never loaded it.
    expect(readFileSync(marker, 'utf8')).toBe('2\n');
  });

  it('is linked statically: no dynamic loader, no shared library runs before the sandbox', () => {
    const elf = readFileSync(wrapper);
    expect(elf.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    const phoff = Number(elf.readBigUInt64LE(0x20));
    const phentsize = elf.readUInt16LE(0x36);
    const phnum = elf.readUInt16LE(0x38);
    const PT_INTERP = 3;
    const PT_DYNAMIC = 2;
    const types = Array.from({ length: phnum }, (_, i) => elf.readUInt32LE(phoff + i * phentsize));
    expect(types).not.toContain(PT_INTERP);
    expect(types).not.toContain(PT_DYNAMIC);
  });

  it('refuses malformed arguments with a usage line and exit 2', () => {
    const pid = String(process.pid);
    // --read-only only after a sandbox option, and never "/" (the whole file system).
    for (const args of [[], ['1', '-', 'true'], ['x', '-', 'true'], [pid, 'x', 'true'], [pid, '-'], ['--read-only', '/tmp', pid, '-', 'true'], ['--sandbox', '--read-only', '/', pid, '-', 'true']]) {
      const r = spawnSync(wrapper, args, { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^usage: enclave_die_with_parent \[\(--sandbox \| --deny-vsock\) \[--read-only DIR\]\.\.\.\] PPID ERRFD FILE/);
    }
  });
});
