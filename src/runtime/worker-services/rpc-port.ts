// Calls and one-way notes over one MessagePort between a session worker thread and a main-thread service
// (one port per service: NSM, transaction log, operational log, metrics, decryption). Each side is an
// endpoint: it may serve methods, call the other side's, and send or receive notes. Replies match calls by
// id in one pending map.
//
// Errors cross as plain data — { name, code, message } plus a whitelist of typed fields (nsmCode, reason,
// detail, limit, errno, syscall) — and are rebuilt as the classes callers test with instanceof: every class
// the NSM layer throws (NsmError, AttestationError, NativeError and NativeUnavailableError from the addon's
// ioctl, CborDecodeError, DerError), EvDecryptError, EvBudgetError, EvPoolError, RangeError, TypeError (and
// WorkerServiceError's own refusals: BAD_MESSAGE, CLOSED). Any other error arrives as a
// WorkerServiceError WORKER_SERVICE_FAILED naming the remote class and code (its message, which by the
// project's rule holds no secret, is kept). Nothing else of an error crosses: no stack, no cause.
//
// A port that closes (the other thread ended, or close() here) rejects every pending call with
// WORKER_SERVICE_CLOSED. A malformed message is counted and ignored: nothing thrown from a message listener.
// The port is unref'd while no call of ours waits for an answer, so an idle service never keeps a thread alive.
import { CborDecodeError } from '../../attestation/cbor.ts';
import { DerError } from '../../attestation/der.ts';
import { AttestationError, NsmError, type AttestationErrorCode } from '../../attestation/errors.ts';
import { EvBudgetError, EvDecryptError, EvPoolError, type EvDecryptReason } from '../../crypto/errors.ts';
import { NativeError, NativeUnavailableError } from '../../transport/native.ts';
import { WorkerServiceError } from './errors.ts';

/** What the endpoint needs of a MessagePort (node:worker_threads' MessagePort has it). */
export interface PortLike {
  postMessage(value: unknown, transfer?: readonly ArrayBuffer[]): void;
  on(event: 'message' | 'close', listener: (value: unknown) => void): unknown;
  off?(event: 'message' | 'close', listener: (value: unknown) => void): unknown;
  ref?(): void;
  unref?(): void;
  close?(): void;
}

/** An error as it crosses the port. */
export interface WireError {
  name: string;
  message: string;
  code?: string;
  nsmCode?: string;
  reason?: string;
  detail?: string;
  limit?: number;
  /** NativeError: the errno name ('ENOENT') and the failed syscall ('open'). */
  errno?: string;
  syscall?: string;
}

type Message =
  | { k: 'call'; id: number; m: string; a: unknown[] }
  | { k: 'ok'; id: number; v: unknown }
  | { k: 'err'; id: number; e: WireError }
  | { k: 'note'; m: string; v: unknown };

export type Method = (...args: unknown[]) => unknown;

export interface RpcEndpointOptions {
  /** Names the service in errors ("nsm", "decrypt", ...). */
  service: string;
  /** Methods the other side may call. Arguments arrive as the other side sent them: check them here (a throw is the answer). */
  methods?: Readonly<Record<string, Method>>;
  /** One-way notes from the other side, by name. A throw is counted as an ignored message. */
  notes?: Readonly<Record<string, (payload: unknown) => void>>;
  /** The port closed (either side), after pending calls were rejected. */
  onClose?: () => void;
}

export interface RpcEndpoint {
  /** Calls the other side's `method`; rejects with the error it raised (rebuilt) or WORKER_SERVICE_CLOSED. */
  /** `transfer`: buffers among the arguments handed over, not copied (detached here: the caller gives them up). */
  call(method: string, args?: readonly unknown[], transfer?: readonly ArrayBuffer[]): Promise<unknown>;
  /** A one-way note; false when it could not be sent (closed, or the payload cannot be cloned). */
  notify(note: string, payload: unknown): boolean;
  /** Calls of ours waiting for an answer. */
  readonly pending: number;
  readonly closed: boolean;
  /** Malformed messages received and ignored. */
  readonly ignored: number;
  /** Detaches from the port, closes it and rejects pending calls with WORKER_SERVICE_CLOSED. Idempotent. */
  close(): void;
}

const TYPED_FIELDS = ['nsmCode', 'reason', 'detail', 'errno', 'syscall'] as const;
/** Codes and reasons are SCREAMING_SNAKE words (AttestationErrorCode, EvDecryptReason): nothing else is rebuilt into them. */
const CODE_WORD = /^[A-Z][A-Z0-9_]{0,63}$/;
const ERRNO_WORD = /^E[A-Z0-9]{1,31}$/;
const SYSCALL_WORD = /^[a-z][a-z0-9_]{0,31}$/;

/** `err` with `message` (for classes whose constructor composes its own message from other parts). */
function withMessage<E extends Error>(err: E, message: string): E {
  Object.defineProperty(err, 'message', { value: message, writable: true, enumerable: false, configurable: true });
  return err;
}

function nativeError(w: WireError): NativeError | undefined {
  if (typeof w.code !== 'string' || !CODE_WORD.test(w.code)) return undefined;
  const errno = typeof w.errno === 'string' && ERRNO_WORD.test(w.errno) ? w.errno : undefined;
  const syscall = typeof w.syscall === 'string' && SYSCALL_WORD.test(w.syscall) ? w.syscall : undefined;
  return new NativeError(w.code, w.message, { errno, syscall });
}

/** `err` as plain data: its class name, code, message and the whitelisted typed fields. */
export function toWireError(err: unknown): WireError {
  if (!(err instanceof Error)) return { name: 'Error', message: typeof err === 'string' ? err : 'a non-Error value was thrown' };
  const e = err as Error & Record<string, unknown>;
  const out: WireError = { name: err.name, message: err.message };
  if (typeof e.code === 'string') out.code = e.code;
  for (const f of TYPED_FIELDS) if (typeof e[f] === 'string') out[f] = e[f];
  if (typeof e.limit === 'number') out.limit = e.limit;
  return out;
}

function rebuild(w: WireError): Error | undefined {
  switch (w.name) {
    case 'NsmError':
      return typeof w.nsmCode === 'string' ? new NsmError(w.nsmCode, w.message) : undefined;
    case 'AttestationError':
      return typeof w.code === 'string' && CODE_WORD.test(w.code) ? new AttestationError(w.code as AttestationErrorCode, w.message) : undefined;
    case 'EvDecryptError':
      return typeof w.reason === 'string' && CODE_WORD.test(w.reason) ? new EvDecryptError(w.reason as EvDecryptReason, w.detail ?? '') : undefined;
    case 'EvBudgetError':
      return typeof w.limit === 'number' ? new EvBudgetError(w.limit) : undefined;
    case 'EvPoolError':
      return w.code === 'EV_POOL_CLOSED' || w.code === 'EV_POOL_WORKER_FAILED' ? new EvPoolError(w.code, w.message) : undefined;
    case 'WorkerServiceError': // the other side refused the call itself (bad arguments) or lost a port of its own
      return w.code === 'WORKER_SERVICE_BAD_MESSAGE' || w.code === 'WORKER_SERVICE_CLOSED' ? new WorkerServiceError(w.code, w.message) : undefined;
    case 'NativeError':
      return nativeError(w);
    case 'NativeUnavailableError':
      return w.code === 'NATIVE_UNAVAILABLE' ? withMessage(new NativeUnavailableError(''), w.message) : undefined;
    case 'CborDecodeError':
      return new CborDecodeError(w.message);
    case 'DerError':
      return w.code === 'DER_MALFORMED' ? new DerError(w.message) : undefined;
    case 'RangeError':
      return new RangeError(w.message);
    case 'TypeError':
      return new TypeError(w.message);
    default:
      return undefined;
  }
}

/** The error `w` describes, as its own class where callers check it (see the file header). */
export function fromWireError(w: WireError, service: string, method: string): Error {
  return (
    rebuild(w) ??
    new WorkerServiceError('WORKER_SERVICE_FAILED', `${service}.${method} failed on the other thread (${w.name}${w.code === undefined ? '' : ` ${w.code}`}): ${w.message}`, {
      name: w.name,
      code: w.code,
    })
  );
}

function isWireError(e: unknown): e is WireError {
  if (typeof e !== 'object' || e === null) return false;
  const w = e as Record<string, unknown>;
  if (typeof w.name !== 'string' || typeof w.message !== 'string') return false;
  if (w.code !== undefined && typeof w.code !== 'string') return false;
  for (const f of TYPED_FIELDS) if (w[f] !== undefined && typeof w[f] !== 'string') return false;
  return w.limit === undefined || typeof w.limit === 'number';
}

const isId = (id: unknown): id is number => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0;

export function rpcEndpoint(port: PortLike, opts: RpcEndpointOptions): RpcEndpoint {
  const { service } = opts;
  const methods = opts.methods ?? {};
  const notes = opts.notes ?? {};
  const pending = new Map<number, { method: string; resolve(v: unknown): void; reject(err: unknown): void }>();
  let nextId = 0;
  let ignored = 0;
  let closed = false;

  const post = (m: Message, transfer?: readonly ArrayBuffer[]): boolean => {
    try {
      if (transfer === undefined) port.postMessage(m);
      else port.postMessage(m, transfer);
      return true;
    } catch {
      return false;
    }
  };

  const answer = (id: number, method: string, run: () => unknown): void => {
    new Promise<unknown>((resolve) => resolve(run())).then(
      (v) => {
        if (closed) return;
        if (!post({ k: 'ok', id, v })) post({ k: 'err', id, e: { name: 'WorkerServiceError', code: 'WORKER_SERVICE_BAD_MESSAGE', message: `${service}.${method}: the answer cannot be sent across threads` } });
      },
      (err: unknown) => {
        if (!closed) post({ k: 'err', id, e: toWireError(err) });
      },
    );
  };

  const settle = (id: unknown, fn: (p: { method: string; resolve(v: unknown): void; reject(err: unknown): void }) => void): void => {
    const p = isId(id) ? pending.get(id) : undefined;
    if (p === undefined) return void ignored++;
    pending.delete(id as number);
    if (pending.size === 0) port.unref?.();
    fn(p);
  };

  const onMessage = (raw: unknown): void => {
    if (closed) return;
    try {
      if (typeof raw !== 'object' || raw === null) return void ignored++;
      const m = raw as Record<string, unknown>;
      switch (m.k) {
        case 'call': {
          if (!isId(m.id)) return void ignored++;
          const id = m.id;
          const name = typeof m.m === 'string' ? m.m : '';
          const fn = Object.hasOwn(methods, name) ? methods[name] : undefined;
          if (fn === undefined || !Array.isArray(m.a)) {
            ignored++;
            post({ k: 'err', id, e: { name: 'WorkerServiceError', code: 'WORKER_SERVICE_BAD_MESSAGE', message: `${service}: no method ${JSON.stringify(name.slice(0, 64))} with these arguments` } });
            return;
          }
          const args = m.a as unknown[];
          answer(id, name, () => fn(...args));
          return;
        }
        case 'ok':
          return settle(m.id, (p) => p.resolve(m.v));
        case 'err':
          return settle(m.id, (p) => p.reject(isWireError(m.e) ? fromWireError(m.e, service, p.method) : new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', `${service}.${p.method}: the other side answered with an unreadable error`)));
        case 'note': {
          const name = typeof m.m === 'string' ? m.m : '';
          const fn = Object.hasOwn(notes, name) ? notes[name] : undefined;
          if (fn === undefined) return void ignored++;
          fn(m.v);
          return;
        }
        default:
          ignored++;
      }
    } catch {
      ignored++; // a note handler refused its payload
    }
  };

  const shut = (): void => {
    if (closed) return;
    closed = true;
    port.off?.('message', onMessage);
    port.off?.('close', shut);
    const waiting = [...pending.values()];
    pending.clear();
    for (const p of waiting) p.reject(new WorkerServiceError('WORKER_SERVICE_CLOSED', `${service}.${p.method}: the port to the other thread closed before it answered`));
    try {
      opts.onClose?.();
    } catch {
      // the owner's hook must not break the close
    }
  };

  port.on('message', onMessage);
  port.on('close', shut);
  port.unref?.(); // after on('message'), which refs a MessagePort

  return {
    call(method, args = [], transfer) {
      if (closed) return Promise.reject(new WorkerServiceError('WORKER_SERVICE_CLOSED', `${service}.${method}: the port to the other thread is closed`));
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { method, resolve, reject });
        if (pending.size === 1) port.ref?.();
        if (!post({ k: 'call', id, m: method, a: [...args] }, transfer)) {
          pending.delete(id);
          if (pending.size === 0) port.unref?.();
          reject(new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', `${service}.${method}: the arguments cannot be sent across threads`));
        }
      });
    },
    notify(note, payload) {
      return !closed && post({ k: 'note', m: note, v: payload });
    },
    get pending() {
      return pending.size;
    },
    get closed() {
      return closed;
    },
    get ignored() {
      return ignored;
    },
    close() {
      if (closed) return;
      shut();
      try {
        port.close?.();
      } catch {
        // already closed
      }
    },
  };
}
