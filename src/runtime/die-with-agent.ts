// The app dies with the agent, even when the agent is SIGKILLed: the supervisor spawns the app through
// native/src/die-with-parent.c (built next to the addon), which sets PR_SET_PDEATHSIG = SIGKILL between fork
// and exec — something Node cannot do itself. Without that program (no compiler at install, not Linux) the
// supervisor spawns the app directly and says so once, at warn level.
// With --sandbox (the default of `run`) it is also the app's sandbox, for the app and all it starts: a seccomp
// filter (no io_uring, no way into the agent's descriptors or memory, no NSM ioctl, none of the kernel interfaces
// Docker's default profile refuses) and capabilities cut to Docker's default set minus CAP_MKNOD and CAP_NET_RAW,
// so an app running as root cannot reach past the filter through the kernel (load a module, mount, BPF, ptrace
// the agent...), and its own mount namespace in which /proc/sys, /sys and /proc/sysrq-trigger are read-only, so
// root cannot make the kernel run a program outside the sandbox (a core_pattern pipe handler, modprobe, a cgroup
// release_agent). --deny-vsock is the same sandbox with no vsock sockets either ([egress] enabled, unless
// app_vsock). In that namespace the agent's own code, its dependencies and its native addon are read-only too
// (agent-read-only-dirs.ts): it starts worker threads from them later.
import { accessSync, closeSync, constants as fsConstants, realpathSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { addonPath, loadNative } from '../transport/native.ts';

/** The fd of the pipe on which the wrapper reports a failed exec (its errno, in decimal). */
export const EXEC_ERROR_FD = 3;

export type DieWithAgent = { wrapper: string } | { unavailable: string };

/** Where the wrapper is by default: next to the addon (native/build/Release, or $ENCLAVE_AGENT_NATIVE_ADDON's directory). */
export function defaultWrapperPath(): string {
  return path.join(path.dirname(addonPath()), 'enclave_die_with_parent');
}

/** The wrapper at `file` (default: next to the addon) when it can be used here, else why not. */
export function locateDieWithAgent(file: string = defaultWrapperPath()): DieWithAgent {
  if (process.platform !== 'linux') return { unavailable: `PR_SET_PDEATHSIG needs Linux, this is ${process.platform}` };
  try {
    accessSync(file, fsConstants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return { unavailable: `${file} is not usable (${code}); run \`node scripts/build-native.mjs\`` };
  }
  return { wrapper: file };
}

export type SealedWrapper = { wrapper: string; close(): void } | { unavailable: string };

/**
 * The wrapper as the supervisor launches it: a copy made now in a sealed memfd (native/src/process.c sealedCopy),
 * run as /proc/self/fd/N. The file itself is writable by an app running as root, which could rewrite it between
 * two of its launches and start the next one outside the sandbox; the sealed copy cannot be changed by anyone.
 */
export function sealedWrapper(file: string): SealedWrapper {
  let copy: ((path: string) => number) | undefined;
  try {
    copy = (loadNative() as unknown as { sealedCopy?: (path: string) => number }).sealedCopy;
  } catch (err) {
    return { unavailable: `no sealed copy of ${file}: the native addon does not load (${(err as Error).message})` };
  }
  if (copy === undefined) return { unavailable: `no sealed copy of ${file}: the native addon has no sealedCopy (rebuild it: node scripts/build-native.mjs)` };
  let fd: number;
  try {
    fd = copy(file);
  } catch (err) {
    return { unavailable: `no sealed copy of ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
  }
  const launched = `/proc/self/fd/${fd}`;
  try {
    // Without /proc mounted the path does not exist: every launch would fail with ENOENT.
    accessSync(launched, fsConstants.X_OK);
  } catch (err) {
    closeSync(fd);
    return { unavailable: `no sealed copy of ${file}: ${launched} cannot be executed (${(err as NodeJS.ErrnoException).code ?? 'error'}; is /proc mounted?)` };
  }
  let open = true;
  return {
    wrapper: launched,
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

/** Compiled in by scripts/build-bundle.mjs: defined in the bundle only. */
declare const __ENCLAVE_AGENT_VERSION__: string | undefined;

/**
 * The directory of the running agent's code, without symbolic links: the agent starts worker threads (session
 * workers, the decrypt pool, which is handed the keys) from files there after the app has started, and a root
 * app that could rewrite them would run its code inside the agent. In the bundle (the Docker layer's dist/)
 * every file sits flat beside this module; otherwise this module is src/runtime/ or dist/runtime/ of the
 * package, whose root holds src/, dist/ and the package's own node_modules. Never a walk up to "a"
 * package.json: one the app left at / would have made the whole file system the agent's code.
 * `moduleUrl` and `bundled` are this module's own unless a test says otherwise.
 */
export function agentCodeDir(moduleUrl: string = import.meta.url, bundled: boolean = typeof __ENCLAVE_AGENT_VERSION__ === 'string'): string {
  const here = path.dirname(fileURLToPath(moduleUrl));
  return realpathSync(bundled ? here : path.resolve(here, '../..'));
}

/** How many --read-only directories the wrapper takes (MAX_AGENT_TREES in native/src/die-with-parent.c). */
export const MAX_READ_ONLY_DIRS = 8;

export interface WrapOptions {
  /** The sandbox (--sandbox): see the file comment. */
  sandbox?: boolean;
  /** With the sandbox: the app may open vsock sockets ([egress] app_vsock); otherwise --deny-vsock refuses them. */
  allowVsock?: boolean;
  /** With the sandbox: absolute directories read-only and impossible to rename in the app's namespace (a root agent). */
  readOnly?: readonly string[];
}

/** [file, args] that run `command` through the wrapper, as a child of this process, sandboxed as `opts` say. */
export function wrapCommand(wrapper: string, file: string, args: readonly string[], opts: WrapOptions = {}): [string, string[]] {
  const sandbox = opts.sandbox === true ? [opts.allowVsock === true ? '--sandbox' : '--deny-vsock', ...(opts.readOnly ?? []).flatMap((dir) => ['--read-only', dir])] : [];
  return [wrapper, [...sandbox, String(process.pid), String(EXEC_ERROR_FD), file, ...args]];
}

/** The errno name for the decimal the wrapper wrote ("2" → "ENOENT"); undefined for anything else. */
export function execErrorName(text: string): string | undefined {
  const n = Number(text.trim());
  if (!Number.isInteger(n) || n <= 0) return undefined;
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === n) return name;
  return `errno ${n}`;
}
