/**
 * Listener and connect over the native addon, for any family it supports. vsock.ts (production) and
 * unix-native.ts (the same engine over AF_UNIX, how it is tested) are thin wrappers around these.
 */
import { unlinkSync } from 'node:fs';
import { AcceptErrors } from './accept-errors.ts';
import type { ConnectionInfo, Listener, ListenOptions } from './types.ts';
import { loadNative, NativeError, POLL_READABLE, POLL_WRITABLE, toNativeError } from './native.ts';
import type { NativeAddress, NativeBoundAddress, NativeSocket } from './native.ts';
import { NativeStream, pollError } from './native-stream.ts';

/** `onError` (ListenOptions) gets accept/poll errors of the listening socket as NativeError; they are also counted. */
export interface NativeListenOptions extends ListenOptions {
  /** listen(2) backlog. Default 511, as Node. */
  backlog?: number;
}

export interface NativeListener extends Listener {
  /** The bound address as the kernel reports it (the real vsock port when asked for port 0). */
  readonly bound: NativeBoundAddress;
}

/** Accepts per readiness event before yielding to the event loop. */
const ACCEPTS_PER_EVENT = 64;
/** Pause after a resource error (EMFILE, ENFILE, ENOBUFS, ENOMEM): the level-triggered poll would spin. */
const ACCEPT_RETRY_MS = 100;
const RESOURCE_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);

export function describeBound(a: NativeBoundAddress): string {
  if (a.family === 'unix') return a.path;
  return `vsock:${a.cid === 0xffffffff ? '*' : a.cid}:${a.port}`;
}

function describeAddress(a: NativeAddress): string {
  return a.family === 'unix' ? `unix:${a.path}` : `vsock:${a.cid === undefined || a.cid === 0xffffffff ? '*' : a.cid}:${a.port}`;
}

function transportOf(a: { family: 'unix' | 'vsock' }): 'unix' | 'vsock' {
  return a.family;
}

function peerOf(sock: NativeSocket, transport: 'unix' | 'vsock'): ConnectionInfo {
  if (transport === 'unix') return { remote: 'unix', transport };
  try {
    const p = sock.peer();
    if (p.family === 'vsock') return { remote: `vsock:${p.cid}:${p.port}`, transport, peerCid: p.cid };
  } catch {
    // reported as unknown: a server that filters on the CID refuses it
  }
  return { remote: 'vsock:?', transport };
}

class NativeListenerImpl implements NativeListener {
  readonly address: string;
  readonly port: number | undefined;
  readonly bound: NativeBoundAddress;
  #sock: NativeSocket | null;
  #transport: 'unix' | 'vsock';
  #opts: NativeListenOptions;
  #retry: NodeJS.Timeout | undefined;
  readonly #errors: AcceptErrors;

  constructor(sock: NativeSocket, bound: NativeBoundAddress, opts: NativeListenOptions) {
    this.#sock = sock;
    this.bound = bound;
    this.#transport = transportOf(bound);
    this.#opts = opts;
    this.address = describeBound(bound);
    this.#errors = new AcceptErrors(opts, this.address);
    this.port = bound.family === 'vsock' ? bound.port : undefined;
    sock.setCallback(this.#onEvent);
    sock.poll(POLL_READABLE);
  }

  readonly #onEvent = (status: number): void => {
    if (this.#sock === null) return;
    if (status < 0) {
      // libuv stopped the handle on the error; report it and re-arm after a pause.
      this.#report(pollError(status, 'accept'));
      this.#pause();
      return;
    }
    for (let i = 0; i < ACCEPTS_PER_EVENT; i++) {
      const sock = this.#sock;
      if (sock === null) return;
      let conn: NativeSocket | null;
      try {
        conn = sock.accept();
      } catch (err) {
        const e = toNativeError(err);
        this.#report(e);
        if (RESOURCE_ERRORS.has(e.code)) this.#pause();
        return;
      }
      if (conn === null) return;
      const stream = new NativeStream(conn, peerOf(conn, this.#transport));
      // A reset peer must never become an uncaught 'error'; the handler adds its own listeners.
      stream.on('error', () => {});
      try {
        this.#opts.onConnection(stream, stream.info);
      } catch {
        stream.destroy();
      }
    }
  };

  get acceptErrors(): number {
    return this.#errors.count;
  }

  #report(err: NativeError): void {
    this.#errors.report(err);
  }

  #pause(): void {
    if (this.#retry !== undefined) return;
    this.#sock?.poll(0);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#sock?.poll(POLL_READABLE);
    }, ACCEPT_RETRY_MS);
    this.#retry.unref();
  }

  close(): Promise<void> {
    const sock = this.#sock;
    this.#sock = null;
    if (this.#retry !== undefined) clearTimeout(this.#retry);
    if (sock !== null) {
      sock.close();
      // Like libuv for a unix listener: the name we bound goes away with it.
      if (this.bound.family === 'unix' && this.bound.path !== '') {
        try {
          unlinkSync(this.bound.path);
        } catch {
          // already gone
        }
      }
    }
    return Promise.resolve();
  }
}

/** Binds and listens; connections arrive as NativeStream (a Duplex) through opts.onConnection. Rejects with a NativeError. */
export function listenNative(addr: NativeAddress, opts: NativeListenOptions): Promise<NativeListener> {
  return new Promise((resolve) => resolve(listenNow(addr, opts)));
}

function listenNow(addr: NativeAddress, opts: NativeListenOptions): NativeListener {
  const native = loadNative();
  let sock: NativeSocket;
  try {
    sock = native.listen(addr, opts.backlog ?? 511);
  } catch (err) {
    const e = toNativeError(err);
    throw new NativeError(e.code, `cannot listen on ${describeAddress(addr)}: ${e.message}`, { cause: err, errno: e.errno, syscall: e.syscall });
  }
  let bound: NativeBoundAddress;
  try {
    bound = sock.address();
    if (bound.family === 'unix' && addr.family === 'unix' && bound.path === '') bound = { family: 'unix', path: addr.path };
  } catch (err) {
    sock.close();
    throw toNativeError(err);
  }
  return new NativeListenerImpl(sock, bound, opts);
}

/** Connects (non-blocking) and resolves with the connected stream; rejects with a NativeError (ECONNREFUSED, ...). */
export function connectNative(addr: NativeAddress): Promise<NativeStream> {
  const native = loadNative();
  return new Promise<NativeStream>((resolve, reject) => {
    let sock: NativeSocket;
    try {
      sock = native.connect(addr);
    } catch (err) {
      const e = toNativeError(err);
      reject(new NativeError(e.code, `cannot connect to ${describeAddress(addr)}: ${e.message}`, { cause: err, errno: e.errno, syscall: e.syscall }));
      return;
    }
    const transport = transportOf(addr);
    sock.setCallback((status: number) => {
      sock.poll(0);
      try {
        if (status < 0) throw pollError(status, 'connect');
        sock.connectResult();
      } catch (err) {
        sock.close();
        const e = toNativeError(err);
        reject(new NativeError(e.code, `cannot connect to ${describeAddress(addr)}: ${e.message}`, { cause: err, errno: e.errno, syscall: e.syscall }));
        return;
      }
      resolve(new NativeStream(sock, { remote: transport === 'unix' ? 'unix' : describeAddress(addr), transport }));
    });
    sock.poll(POLL_WRITABLE);
  });
}
