/**
 * The native addon (native/, built by scripts/build-native.mjs at install): AF_VSOCK/AF_UNIX sockets on
 * libuv poll handles, the /dev/nsm ioctl, loopback bring-up. Loaded lazily on first use, so a machine where
 * the optional build failed still runs everything else; using it there throws NativeUnavailableError.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { AgentError } from '../errors.ts';

/** Events for NativeSocket.poll(): libuv's UV_READABLE / UV_WRITABLE. */
export const POLL_READABLE = 1;
export const POLL_WRITABLE = 2;

export type NativeAddress = { family: 'unix'; path: string } | { family: 'vsock'; cid?: number; port: number };
export type NativeBoundAddress = { family: 'unix'; path: string } | { family: 'vsock'; cid: number; port: number };

/** One socket owned by the addon (see native/src/socket.c for the exact contract). */
export interface NativeSocket {
  /** The descriptor, -1 once closed (diagnostics only: never close it yourself). */
  readonly fd: number;
  /** `status` < 0 is a libuv error (-errno); `events` is a mask of POLL_READABLE | POLL_WRITABLE. */
  setCallback(cb: (status: number, events: number) => void): void;
  /** Level-triggered readiness to watch: 0 stops. */
  poll(events: number): void;
  /** A chunk (≤ 64 KiB), null at EOF, undefined when nothing is ready (EAGAIN). */
  read(): Buffer | null | undefined;
  /** ONE send() of at most MAX_WRITE bytes from `buf[offset..]`: bytes taken, or -1 when full (EAGAIN). */
  write(buf: Uint8Array, offset: number): number;
  /** An accepted connection, or null when none is pending. */
  accept(): NativeSocket | null;
  /** After a connect() became writable: throws the connect error (ECONNREFUSED, ETIMEDOUT, ...), if any. */
  connectResult(): void;
  /** shutdown(SHUT_WR): the peer reads EOF; we can still read. */
  shutdown(): void;
  /** Stops polling and closes the fd. Idempotent. */
  close(): void;
  /**
   * close() without closing the fd, which it returns: the poll handle is stopped and released, the object then
   * behaves as closed (fd -1, methods throw EBADF). -1 when already closed or detached. The caller owns the fd.
   */
  detach(): number;
  address(): NativeBoundAddress;
  peer(): NativeBoundAddress;
}

export interface NativeStats {
  /** send() calls issued, bytes accepted, and the largest length ever passed to one send(). */
  writes: number;
  bytesWritten: number;
  maxWrite: number;
  eagainWrites: number;
  /** read() calls that returned data or EOF, and those that found nothing (EAGAIN). */
  reads: number;
  eagainReads: number;
  bytesRead: number;
  maxRead: number;
  /** Sockets created and closed since load (live sockets = opened - closed). */
  opened: number;
  closed: number;
}

/** One relay of native/src/splice.c: bytes both ways between two stream sockets, off the JS thread. */
export interface NativeSpliceRelay {
  /** Starts the relay thread; `onEnd` runs once when both directions ended, or on the first error or cancel. */
  start(onEnd: (outcome: NativeSpliceOutcome) => void): void;
  /** Bytes moved so far. */
  counts(): { aToB: number; bToA: number };
  /** Before start(): gives everything back (onEnd never runs). After: ends the relay (error ECANCELED). */
  cancel(): void;
}

export interface NativeSpliceOutcome {
  aToB: number;
  bToA: number;
  /** Both directions ended with a half-close passed on, no error. */
  clean: boolean;
  /** Why not clean: an errno error ({ code: 'ECONNRESET', syscall: 'splice' }, 'ECANCELED' for cancel()). */
  error?: Error & { code?: string; syscall?: string };
}

export interface NativeSpliceStats {
  /** Relays started, running or prepared now, refused at the limit, and the limit. */
  started: number;
  active: number;
  refused: number;
  limit: number;
  /** The largest length ever passed to one splice() into a non-TCP (vsock, UNIX) socket: ≤ maxWrite. */
  maxCappedWrite: number;
}

export interface NativeBinding {
  readonly MAX_WRITE: number;
  readonly NSM_REQUEST_MAX: number;
  readonly NSM_RESPONSE_MAX: number;
  listen(addr: NativeAddress, backlog?: number): NativeSocket;
  connect(addr: NativeAddress): NativeSocket;
  /**
   * A NativeSocket owning `fd` (one detach()ed on another thread, in this process): checks SO_DOMAIN is the named
   * family and SO_TYPE is SOCK_STREAM, sets O_NONBLOCK and FD_CLOEXEC. Throws (EINVAL for another family or type,
   * ENOTSOCK for a pipe or file, EBADF, a RangeError for a number that is no fd) and then leaves the fd open.
   */
  adopt(fd: number, family: 'vsock' | 'unix'): NativeSocket;
  /** fcntl(fd, F_DUPFD_CLOEXEC, 0): a second descriptor for the same open socket/file. */
  dupFd(fd: number): number;
  stats(): NativeStats;
  resetStats(): void;
  nsmRequest(request: Uint8Array, devicePath?: string): Promise<Buffer>;
  bringUpLoopback(): { changed: ('address' | 'netmask' | 'up')[] };
  /** Prepares a relay between two stream sockets (it works on its own dups); no splice() into a non-TCP socket
   * moves more than maxWrite bytes. `ended`: 1 = a → b, 2 = b → a is already finished (EOF passed on). Throws,
   * touching nothing, when an fd is not a non-blocking TCP/UNIX/VSOCK stream socket (EINVAL) or at the relay limit
   * (ERR_SPLICE_RELAY_LIMIT). */
  spliceRelay(fdA: number, fdB: number, maxWrite: number, ended?: number): NativeSpliceRelay;
  spliceStats(): NativeSpliceStats;
  resetSpliceStats(): void;
}

/** Errors of the native layer. `code` is the errno name ('ECONNRESET', 'EPERM', ...) or NATIVE_*. */
export class NativeError extends AgentError {
  /** The errno name for system errors ('ECONNRESET'), undefined otherwise. */
  readonly errno: string | undefined;
  readonly syscall: string | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; errno?: string; syscall?: string }) {
    super(code, message, options);
    this.errno = options?.errno;
    this.syscall = options?.syscall;
  }
}

export class NativeUnavailableError extends NativeError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('NATIVE_UNAVAILABLE', `vsock/NSM unavailable: the native addon was not built (${reason})`, options);
  }
}

interface SystemErrorLike {
  message: string;
  code?: unknown;
  syscall?: unknown;
}

/** Turns an addon exception (Error with code/syscall, like Node's) into a NativeError; keeps NativeErrors. */
export function toNativeError(err: unknown): NativeError {
  if (err instanceof NativeError) return err;
  const e = (typeof err === 'object' && err !== null ? err : { message: String(err) }) as SystemErrorLike;
  const code = typeof e.code === 'string' ? e.code : 'NATIVE_ERROR';
  const syscall = typeof e.syscall === 'string' ? e.syscall : undefined;
  const errno = /^E[A-Z0-9]+$/.test(code) ? code : undefined;
  return new NativeError(code, e.message, { cause: err, errno, syscall });
}

/** Where the addon is: $ENCLAVE_AGENT_NATIVE_ADDON, else native/build/Release next to this checkout. */
export function addonPath(): string {
  return (
    process.env.ENCLAVE_AGENT_NATIVE_ADDON ??
    fileURLToPath(new URL('../../native/build/Release/enclave_native.node', import.meta.url))
  );
}

let cached: { binding: NativeBinding } | { error: NativeUnavailableError } | undefined;

/** The addon, loaded on first call. Throws NativeUnavailableError when it is missing or will not load. */
export function loadNative(): NativeBinding {
  if (cached === undefined) {
    const file = addonPath();
    if (process.platform !== 'linux') {
      cached = { error: new NativeUnavailableError(`AF_VSOCK and /dev/nsm need Linux, this is ${process.platform}`) };
    } else if (!existsSync(file)) {
      cached = { error: new NativeUnavailableError(`${file} does not exist; run \`node scripts/build-native.mjs\` and read native/build-native.log`) };
    } else {
      try {
        cached = { binding: createRequire(import.meta.url)(file) as NativeBinding };
      } catch (err) {
        cached = { error: new NativeUnavailableError(`loading ${file} failed: ${(err as Error).message}`, { cause: err }) };
      }
    }
  }
  if ('error' in cached) throw cached.error;
  return cached.binding;
}

/** True when the addon loads (tests skip on false; production fails loudly through loadNative()). */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

/** Syscall counters of the addon (write sizes as issued to the kernel). */
export function nativeStats(): NativeStats {
  return loadNative().stats();
}

/**
 * Raises `lo` with 127.0.0.1/8 (enclaves boot with it down). Idempotent; returns the steps it had to take.
 * Throws NativeError with code 'EPERM' without CAP_NET_ADMIN.
 */
export function bringUpLoopback(): { changed: ('address' | 'netmask' | 'up')[] } {
  const native = loadNative();
  try {
    return native.bringUpLoopback();
  } catch (err) {
    throw toNativeError(err);
  }
}
