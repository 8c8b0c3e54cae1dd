/**
 * Moving an accepted connection to another thread of this process: the main thread keeps the listeners and
 * hands each connection's file descriptor, before a byte is read, to a session worker (node:worker_threads),
 * which builds its own Duplex over it. A HandedConnection is plain data (it survives postMessage); the fd in
 * it is owned by whoever holds the message: adoptConnection takes it, discardHandedConnection closes it.
 *
 * Node sockets: the listener must not start reading (ListenOptions.handoff → pauseOnConnect); Node has no way
 * to take an fd out of a net.Socket, so the addon dups it (F_DUPFD_CLOEXEC) and the socket is destroyed (its
 * close releases only its own descriptor: no FIN, no RST). The worker wraps the dup in a new net.Socket.
 * Addon sockets (vsock, and AF_UNIX through the same code): NativeStream.detach() releases the poll handle and
 * keeps the fd; the worker's copy of the addon adopts it.
 *
 * A receiving thread that is terminated (a stop bound expired while it was stalled) never reads the
 * connections still queued to it: HandoffLedger (sender) and HandoffReceipts (receiver) make every handed fd end
 * up either taken by the receiver or closed by the sender once the receiver has exited — never both.
 */
import { closeSync, fstatSync, type BigIntStats } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { TransportError } from './connect.ts';
import { loadNative, toNativeError } from './native.ts';
import type { NativeSocket } from './native.ts';
import { NativeStream } from './native-stream.ts';
import type { ConnectionInfo } from './types.ts';

export type HandedConnection = (
  | { kind: 'native'; fd: number; family: 'vsock' | 'unix'; info: ConnectionInfo }
  | { kind: 'socket'; fd: number; info: ConnectionInfo } // a Node net.Socket's fd (TCP or unix)
) & {
  /** Its id in the sender's HandoffLedger: the receiving thread confirms it (HandoffReceipts) once it took the fd. */
  handoff?: number;
};

/** The parts of net.Socket's handle read here (internal, stable since Node 0.x on Unix). */
interface NodeHandle {
  fd?: number;
  reading?: boolean;
}

function failed(info: ConnectionInfo, why: string, cause?: unknown): TransportError {
  return new TransportError('TRANSPORT_HANDOFF_FAILED', `cannot hand off the connection from ${info.remote}: ${why}`, { cause });
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * A copy with nothing postMessage could refuse (ConnectionInfo objects may carry more than their fields); the
 * vsock peer CID goes with it, for the receiving thread to know who it serves.
 */
function plainInfo(info: ConnectionInfo): ConnectionInfo {
  const peerCid = info.peerCid;
  return { remote: String(info.remote), transport: info.transport, ...(typeof peerCid === 'number' && Number.isSafeInteger(peerCid) ? { peerCid } : {}) };
}

function detachNodeSocket(socket: net.Socket, info: ConnectionInfo): HandedConnection {
  const handle = (socket as unknown as { _handle?: NodeHandle | null })._handle;
  if (socket.destroyed || socket.connecting || handle === null || handle === undefined) throw failed(info, 'the socket is closed or not connected');
  // A TLS socket's fd carries records of a session that lives in this thread: the bytes alone are no connection.
  if ((socket as { encrypted?: boolean }).encrypted === true) throw failed(info, 'a TLS socket cannot be handed');
  if (typeof handle.fd !== 'number' || handle.fd < 0) throw failed(info, 'the socket has no file descriptor (not TCP or unix)');
  if (handle.reading === true || socket.readableFlowing === true || socket.bytesRead > 0 || socket.readableLength > 0) {
    throw failed(info, 'the socket is already reading (listen with handoff: true)');
  }
  if (socket.bytesWritten > 0 || socket.writableLength > 0 || socket.writableEnded) throw failed(info, 'the socket was already written or ended');
  let fd: number;
  try {
    fd = loadNative().dupFd(handle.fd);
  } catch (err) {
    throw failed(info, `dup failed: ${reason(err)}`, toNativeError(err));
  }
  socket.destroy(); // closes the original descriptor only; the connection lives on in the dup
  return { kind: 'socket', fd, info: plainInfo(info) };
}

/**
 * Takes the fd out of a connection accepted a moment ago (nothing read yet); the stream is emptied/destroyed;
 * the caller owns the fd. Throws a typed TransportError (code 'TRANSPORT_HANDOFF_FAILED') when the stream
 * cannot be handed (already reading, closed, unknown type).
 */
export function detachConnection(stream: Duplex, info: ConnectionInfo): HandedConnection {
  if (stream instanceof NativeStream) {
    const transport = stream.info.transport;
    if (transport !== 'vsock' && transport !== 'unix') throw failed(info, `a native stream of transport ${transport}`);
    let fd: number;
    try {
      fd = stream.detach();
    } catch (err) {
      throw failed(info, reason(err), err);
    }
    return { kind: 'native', fd, family: transport, info: plainInfo(info) };
  }
  if (stream instanceof net.Socket) return detachNodeSocket(stream, info);
  throw failed(info, `a ${stream.constructor.name} has no file descriptor to hand`);
}

function validFd(fd: unknown): fd is number {
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 && fd <= 0x7fffffff;
}

function adoptNodeSocket(h: HandedConnection & { kind: 'socket' }, info: ConnectionInfo): net.Socket {
  let socket: net.Socket;
  try {
    // net.Socket would take a pipe (FIFO) as a Pipe handle: only a socket is a connection.
    if (!fstatSync(h.fd).isSocket()) throw new Error(`fd ${h.fd} is not a socket`);
    // Node refuses (ERR_INVALID_FD_TYPE) anything but a TCP or unix stream socket. allowHalfOpen stays Node's
    // default, as on the sockets net.createServer hands out (listenTcp/listenUnix): the session behaves the same.
    socket = new net.Socket({ fd: h.fd, readable: true, writable: true });
  } catch (err) {
    discardHandedConnection(h);
    throw failed(info, `adopting fd ${h.fd} failed: ${reason(err)}`, err);
  }
  if (info.transport === 'tcp') socket.setNoDelay(true);
  // As listenTcp/listenUnix: a reset peer must never become an uncaught 'error'; the handler adds its own.
  socket.on('error', () => {});
  return socket;
}

function adoptNative(h: HandedConnection & { kind: 'native' }, info: ConnectionInfo): NativeStream {
  let sock: NativeSocket;
  try {
    sock = loadNative().adopt(h.fd, h.family); // this thread's copy of the addon, polled on this thread's loop
  } catch (err) {
    discardHandedConnection(h); // adopt leaves the fd open on every failure
    throw failed(info, `adopting fd ${h.fd} failed: ${reason(err)}`, toNativeError(err));
  }
  let stream: NativeStream;
  try {
    stream = new NativeStream(sock, info);
  } catch (err) {
    sock.close(); // the socket owns the fd now: close it through the socket, exactly once
    throw failed(info, `wrapping fd ${h.fd} failed: ${reason(err)}`, err);
  }
  // As the native listener: a reset peer must never become an uncaught 'error'; the handler adds its own.
  stream.on('error', () => {});
  return stream;
}

/**
 * In any thread of this process: a Duplex over the handed fd (takes ownership; on failure closes the fd and
 * throws TransportError). TCP gets setNoDelay(true) and the same 'error' guard listenTcp adds.
 */
export function adoptConnection(h: HandedConnection): Duplex {
  const info = plainInfo(h.info);
  if (!validFd(h.fd)) throw failed(info, `${String(h.fd)} is not a file descriptor`);
  if (h.kind === 'socket') return adoptNodeSocket(h, info);
  if (h.kind === 'native') return adoptNative(h, info);
  discardHandedConnection(h);
  throw failed(info, `unknown kind ${String((h as { kind: unknown }).kind)}`);
}

/** Closes the fd of a connection nobody adopted (e.g. its worker died). Never throws. */
export function discardHandedConnection(h: HandedConnection): void {
  try {
    if (validFd(h.fd)) closeSync(h.fd);
  } catch {
    // already closed: nothing left to release
  }
}

/** Which open file an fd refers to: a closed number may be reused by then, the (device, inode) of a live socket is not. */
interface FileIdentity {
  readonly fd: number;
  readonly dev: bigint;
  readonly ino: bigint;
}

function statOf(fd: number): BigIntStats | undefined {
  try {
    return fstatSync(fd, { bigint: true });
  } catch {
    return undefined; // not open (any more)
  }
}

/**
 * The sending thread's account of the connections it posted to ONE receiving thread and that thread has not
 * confirmed taking. Once the receiver has exited (its thread joined: nothing of it runs any more), sweep()
 * closes the fds of the unconfirmed ones that still refer to the socket handed. A confirmation that did not
 * arrive (the receiver was terminated between taking an fd and posting its receipt) is thus never a double
 * close: if the receiver's teardown closed the fd, its number is free or another file's, and is left alone.
 */
export class HandoffLedger {
  readonly #open = new Map<number, FileIdentity | undefined>();
  #next = 1;
  #swept = false;

  /** Notes `h` (sets h.handoff) before it is posted. After sweep() the receiver is gone: `h`'s fd is closed here. */
  record(h: HandedConnection): void {
    if (this.#swept) return discardHandedConnection(h);
    const id = this.#next++;
    h.handoff = id;
    const st = validFd(h.fd) ? statOf(h.fd) : undefined;
    this.#open.set(id, st === undefined ? undefined : { fd: h.fd, dev: st.dev, ino: st.ino });
  }

  /** The receiver's receipts (HandoffReceipts): those fds are its own now. Anything else in `ids` is ignored. */
  confirm(ids: unknown): void {
    if (!Array.isArray(ids)) return;
    for (const id of ids) if (typeof id === 'number') this.#open.delete(id);
  }

  /** Hand-offs posted and not confirmed. */
  get outstanding(): number {
    return this.#open.size;
  }

  /** Only once the receiver has exited: closes the unconfirmed fds still open on their socket; returns how many. */
  sweep(): number {
    this.#swept = true;
    let closed = 0;
    for (const id of this.#open.values()) {
      if (id === undefined) continue;
      const now = statOf(id.fd);
      if (now === undefined || now.dev !== id.dev || now.ino !== id.ino) continue; // the receiver closed it
      try {
        closeSync(id.fd);
        closed++;
      } catch {
        // closed meanwhile: nothing left to release
      }
    }
    this.#open.clear();
    return closed;
  }
}

/**
 * The receiving thread's receipts for HandoffLedger: taken(h) as it adopts (or discards) a handed connection,
 * in the same turn; the ids go back in one message per turn.
 */
export class HandoffReceipts {
  readonly #send: (ids: number[]) => void;
  #ids: number[] = [];

  constructor(send: (ids: number[]) => void) {
    this.#send = send;
  }

  taken(h: HandedConnection): void {
    if (typeof h.handoff !== 'number') return;
    if (this.#ids.push(h.handoff) === 1) setImmediate(() => this.flush());
  }

  /** Sends what is pending now (otherwise at the end of the turn). */
  flush(): void {
    if (this.#ids.length === 0) return;
    const ids = this.#ids;
    this.#ids = [];
    this.#send(ids);
  }
}
