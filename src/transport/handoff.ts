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
 */
import { closeSync, fstatSync } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { TransportError } from './connect.ts';
import { loadNative, toNativeError } from './native.ts';
import type { NativeSocket } from './native.ts';
import { NativeStream } from './native-stream.ts';
import type { ConnectionInfo } from './types.ts';

export type HandedConnection =
  | { kind: 'native'; fd: number; family: 'vsock' | 'unix'; info: ConnectionInfo }
  | { kind: 'socket'; fd: number; info: ConnectionInfo }; // a Node net.Socket's fd (TCP or unix)

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

/** A copy with nothing postMessage could refuse (ConnectionInfo objects may carry more than the two fields). */
function plainInfo(info: ConnectionInfo): ConnectionInfo {
  return { remote: String(info.remote), transport: info.transport };
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
  const info: ConnectionInfo = { remote: String(h.info.remote), transport: h.info.transport };
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
