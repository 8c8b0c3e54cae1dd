// Unix domain socket listener (development, local tooling): one Duplex per accepted connection.
import { randomBytes } from 'node:crypto';
import { lstat, rename, unlink, chmod } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { AcceptErrors } from './accept-errors.ts';
import { TransportError } from './connect.ts';
import { closeServer } from './tcp.ts';
import type { Listener, ListenOptions } from './types.ts';

export interface UnixListenAddress {
  path: string;
  /**
   * File mode for the socket, e.g. 0o600 (owner only). The socket is bound under a temporary name, chmod-ed,
   * then renamed into place, so no client can connect before the mode applies.
   */
  mode?: number;
}

export async function listenUnix({ path: sockPath, mode }: UnixListenAddress, opts: ListenOptions): Promise<Listener> {
  await removeStaleSocket(sockPath);
  const bindPath = mode === undefined ? sockPath : path.join(path.dirname(sockPath), `.${path.basename(sockPath)}.${randomBytes(6).toString('hex')}`);
  // handoff: not a byte read here; the fd moves to a worker thread (handoff.ts), which reads it from the start.
  const server = net.createServer({ pauseOnConnect: opts.handoff === true });
  server.on('connection', (socket) => {
    socket.on('error', () => {});
    try {
      opts.onConnection(socket, { remote: 'unix', transport: 'unix' });
    } catch {
      socket.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(new TransportError('TRANSPORT_LISTEN_FAILED', `cannot listen on ${sockPath}: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ path: bindPath }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // Accept errors (EMFILE, ...) are counted and reported; the server keeps listening.
  const errors = new AcceptErrors(opts, sockPath);
  server.on('error', errors.report);
  if (mode !== undefined) {
    try {
      await chmod(bindPath, mode);
      await rename(bindPath, sockPath);
    } catch (err) {
      await closeServer(server);
      await unlink(bindPath).catch(() => {});
      throw new TransportError('TRANSPORT_LISTEN_FAILED', `cannot set mode ${mode.toString(8)} on ${sockPath}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
    }
  }
  return {
    address: sockPath,
    get acceptErrors() {
      return errors.count;
    },
    async close() {
      const wasListening = server.listening;
      await closeServer(server);
      // libuv unlinks the name it bound; after a rename that name is gone, so remove the final path ourselves.
      if (wasListening && mode !== undefined) await unlink(sockPath).catch(() => {});
    },
  };
}

/**
 * A socket file left by a dead process blocks bind() with EADDRINUSE. Remove it only when it is a socket
 * and nothing answers on it; refuse to touch any other kind of file or a live socket.
 */
async function removeStaleSocket(sockPath: string): Promise<void> {
  let st;
  try {
    st = await lstat(sockPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new TransportError('TRANSPORT_LISTEN_FAILED', `cannot inspect ${sockPath}: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
  }
  if (!st.isSocket()) {
    throw new TransportError('TRANSPORT_PATH_NOT_SOCKET', `${sockPath} exists and is not a socket; refusing to replace it`);
  }
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path: sockPath });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new TransportError('TRANSPORT_ADDRESS_IN_USE', `${sockPath} is a live socket: another process is listening on it`);
  await unlink(sockPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw new TransportError('TRANSPORT_LISTEN_FAILED', `cannot remove stale socket ${sockPath}: ${err.code}`, { cause: err });
  });
}
