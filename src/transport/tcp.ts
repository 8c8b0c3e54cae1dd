// TCP listener (development and the host side): one Duplex per accepted connection, TCP_NODELAY on.
import net from 'node:net';
import { AcceptErrors } from './accept-errors.ts';
import { TransportError } from './connect.ts';
import type { Listener, ListenOptions } from './types.ts';

export interface TcpListenAddress {
  /** Default 127.0.0.1: listening on another interface is an explicit choice. */
  host?: string;
  /** 0 picks a free port; read it back from `Listener.port`. */
  port: number;
}

/** Formats host:port, bracketing IPv6 literals. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export async function listenTcp({ host = '127.0.0.1', port }: TcpListenAddress, opts: ListenOptions): Promise<Listener> {
  // handoff: not a byte read here; the fd moves to a worker thread (handoff.ts), which reads it from the start.
  const server = net.createServer({ noDelay: true, pauseOnConnect: opts.handoff === true });
  server.on('connection', (socket) => {
    socket.setNoDelay(true);
    // A reset peer must never become an uncaught 'error' that takes the process down; the handler adds its own.
    socket.on('error', () => {});
    const remote = formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
    try {
      opts.onConnection(socket, { remote, transport: 'tcp' });
    } catch {
      socket.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(new TransportError('TRANSPORT_LISTEN_FAILED', `cannot listen on ${formatHostPort(host, port)}: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const bound = (server.address() as net.AddressInfo).port;
  // After listen, accept errors (EMFILE, ...) must not crash the process; the server keeps listening, and
  // each is counted and reported.
  const errors = new AcceptErrors(opts, formatHostPort(host, bound));
  server.on('error', errors.report);
  return {
    address: formatHostPort(host, bound),
    port: bound,
    get acceptErrors() {
      return errors.count;
    },
    close: () => closeServer(server),
  };
}

/** Stops accepting. Resolves once the listening socket is closed, without waiting for open connections. */
export function closeServer(server: net.Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  server.close(); // closes the listening handle now; its callback would wait for every connection
  return new Promise((resolve) => setImmediate(resolve));
}
