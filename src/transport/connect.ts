// Opening a byte stream to an agent (or any stream endpoint): tcp, unix or vsock, resolved once connected.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { AgentError } from '../errors.ts';
import type * as VsockModule from './vsock.ts';

export type TransportErrorCode =
  | 'TRANSPORT_LISTEN_FAILED'
  | 'TRANSPORT_ADDRESS_IN_USE'
  | 'TRANSPORT_PATH_NOT_SOCKET'
  | 'TRANSPORT_CONNECT_FAILED'
  | 'TRANSPORT_CONNECT_TIMEOUT'
  | 'TRANSPORT_VSOCK_UNAVAILABLE'
  | 'TRANSPORT_BAD_TARGET'
  | 'TRANSPORT_HANDOFF_FAILED';

/** The error class of the tcp/unix listeners and of connectStream. */
export class TransportError extends AgentError {
  declare readonly code: TransportErrorCode;
  constructor(code: TransportErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export type StreamTarget =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'vsock'; cid: number; port: number };

export interface ConnectOptions {
  /** Give up connecting after this long. Default 10 000 ms. */
  timeoutMs?: number;
}

/** "tcp:127.0.0.1:5000", "unix:/run/agent.sock", "vsock:16:5000" — for logs and errors. */
export function describeTarget(t: StreamTarget): string {
  switch (t.kind) {
    case 'tcp':
      return `tcp:${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
    case 'unix':
      return `unix:${t.path}`;
    case 'vsock':
      return `vsock:${t.cid}:${t.port}`;
  }
}

/** Connects to `target` and resolves with the connected Duplex (TCP_NODELAY set for tcp). */
export async function connectStream(target: StreamTarget, opts: ConnectOptions = {}): Promise<Duplex> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  if (target.kind === 'vsock') {
    if (!Number.isInteger(target.cid) || target.cid < 0 || target.cid > 0xffffffff || !validPort(target.port)) {
      throw new TransportError('TRANSPORT_BAD_TARGET', `expected a vsock cid in 0..2^32-1 and port in 1..2^32-1, found ${describeTarget(target)}`);
    }
    // Loaded on first use only: it wraps the native addon, and machines without it still use tcp/unix.
    let mod: typeof VsockModule;
    try {
      mod = await import('./vsock.ts');
    } catch (err) {
      throw new TransportError('TRANSPORT_VSOCK_UNAVAILABLE', `vsock support is not available here: ${(err as Error).message}`, { cause: err });
    }
    return withTimeout(mod.connectVsock({ cid: target.cid, port: target.port }), timeoutMs, target);
  }
  if (target.kind === 'tcp' && (!validPort(target.port) || target.port > 0xffff)) {
    throw new TransportError('TRANSPORT_BAD_TARGET', `expected a TCP port in 1..65535, found ${target.port}`);
  }
  const socket = target.kind === 'tcp' ? net.connect({ host: target.host, port: target.port, noDelay: true }) : net.connect({ path: target.path });
  return new Promise<Duplex>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TransportError('TRANSPORT_CONNECT_TIMEOUT', `no connection to ${describeTarget(target)} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      if (target.kind === 'tcp') socket.setNoDelay(true);
      resolve(socket);
    });
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new TransportError('TRANSPORT_CONNECT_FAILED', `cannot connect to ${describeTarget(target)}: ${err.code ?? err.message}`, { cause: err }));
    };
    socket.once('error', onError);
  });
}

const validPort = (p: number): boolean => Number.isInteger(p) && p >= 1 && p <= 0xffffffff;

function withTimeout(p: Promise<Duplex>, ms: number, target: StreamTarget): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    let expired = false;
    const timer = setTimeout(() => {
      expired = true;
      reject(new TransportError('TRANSPORT_CONNECT_TIMEOUT', `no connection to ${describeTarget(target)} within ${ms} ms`));
    }, ms);
    p.then(
      (s) => {
        clearTimeout(timer);
        if (expired) s.destroy();
        else resolve(s);
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (err instanceof AgentError) reject(err);
        else reject(new TransportError('TRANSPORT_CONNECT_FAILED', `cannot connect to ${describeTarget(target)}: ${(err as Error).message}`, { cause: err }));
      },
    );
  });
}

/** Parses "tcp:HOST:PORT", "tcp:[v6]:PORT", "unix:/path", "vsock:CID:PORT". */
export function parseTarget(text: string): StreamTarget {
  const bad = (why: string): TransportError =>
    new TransportError('TRANSPORT_BAD_TARGET', `expected tcp:HOST:PORT, unix:/path or vsock:CID:PORT, found ${JSON.stringify(text)} (${why})`);
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (colon < 0) throw bad('no scheme');
  if (kind === 'unix') {
    if (rest === '') throw bad('empty path');
    return { kind: 'unix', path: rest };
  }
  if (kind !== 'tcp' && kind !== 'vsock') throw bad(`unknown scheme "${kind}"`);
  const m = kind === 'tcp' ? /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(rest) : /^()(\d+):(\d+)$/.exec(rest);
  if (!m) throw bad('bad address');
  const port = Number(m[3]);
  if (kind === 'tcp') {
    if (port < 1 || port > 0xffff) throw bad('port out of range');
    return { kind: 'tcp', host: m[1] ?? m[2]!, port };
  }
  const cid = Number(m[2]);
  // 0xffffffff is VMADDR_CID_ANY: a way to listen, never a peer to connect to.
  if (cid >= 0xffffffff || port < 1 || port > 0xffffffff) throw bad('cid or port out of range');
  return { kind: 'vsock', cid, port };
}
