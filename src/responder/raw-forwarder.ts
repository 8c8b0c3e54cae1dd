// Raw mode: every Data request and every stream is one TCP connection to the app on loopback.
//
// Start-up grace: until the app has accepted a connection once, a refused connection is retried every
// `retryIntervalMs` until `startupGraceMs` after the forwarder was created (the agent usually starts before
// the app is listening). After the first success, a refused connection fails at once: the app crashed or
// was stopped, and the client should hear that now rather than after a long wait.
//
// Sockets are half-open capable (allowHalfOpen): the app may send EOF while the client keeps writing on a
// stream. Data requests are not half-closed after the payload (`halfCloseData = false`, like the Enclavia
// server): uvicorn and others abort a request whose connection was shut down for writing; the client's
// `Connection: close` makes the app close after its response instead.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { encodeProxyV2 } from '../transport/proxy-v2.ts';
import { ForwardError, ResponderError } from './errors.ts';
import type { ForwardContext, Forwarder } from './forwarder.ts';

export interface RawForwarderOptions {
  appPort: number;
  /** Default 127.0.0.1. */
  appHost?: string;
  /** Default 30 000 ms from creation. */
  startupGraceMs?: number;
  /** Default 100 ms. */
  retryIntervalMs?: number;
  /** One attempt's connect timeout. Default 5 000 ms. */
  connectTimeoutMs?: number;
  /** Write a PROXY v2 header (client address from the session) before the request. Default: env FORWARD_PROXY_PROTOCOL=true. */
  forwardProxyProtocol?: boolean;
  /** Half-close the app connection after a Data payload. Default false (see above). */
  halfCloseData?: boolean;
}

export interface RawForwarder extends Forwarder {
  /** True once the app has accepted a connection. */
  readonly appAnswered: boolean;
}

export function createRawForwarder(opts: RawForwarderOptions): RawForwarder {
  const port = opts.appPort;
  if (!Number.isInteger(port) || port < 1 || port > 0xffff) {
    throw new ResponderError('RESPONDER_BAD_OPTIONS', `appPort: expected an integer in 1..65535, found ${String(port)}`);
  }
  const host = opts.appHost ?? '127.0.0.1';
  const graceMs = opts.startupGraceMs ?? 30_000;
  const retryMs = opts.retryIntervalMs ?? 100;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
  const proxyProtocol = opts.forwardProxyProtocol ?? process.env.FORWARD_PROXY_PROTOCOL === 'true';
  const where = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  const graceEnds = Date.now() + graceMs;
  let answered = false;

  const attempt = (signal: AbortSignal | undefined): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
      const cleanup = (): void => {
        clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        signal?.removeEventListener('abort', onAbort);
      };
      const onConnect = (): void => {
        cleanup();
        resolve(socket);
      };
      const onError = (err: NodeJS.ErrnoException): void => {
        cleanup();
        socket.destroy();
        reject(err);
      };
      const onAbort = (): void => {
        cleanup();
        socket.destroy();
        reject(new ForwardError('FORWARD_ABORTED', 'the session closed while connecting to the app'));
      };
      const timer = setTimeout(() => {
        cleanup();
        socket.destroy();
        reject(new ForwardError('FORWARD_CONNECT_TIMEOUT', `app at ${where} did not accept the connection within ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      socket.once('connect', onConnect);
      socket.once('error', onError);
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  const sleep = (ms: number, signal: AbortSignal | undefined): Promise<void> =>
    new Promise((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(new ForwardError('FORWARD_ABORTED', 'the session closed while waiting for the app to start'));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });

  return {
    halfCloseData: opts.halfCloseData ?? false,
    get appAnswered() {
      return answered;
    },
    async connect(ctx: ForwardContext): Promise<Duplex> {
      const signal = ctx.signal;
      if (signal?.aborted) throw new ForwardError('FORWARD_ABORTED', 'the session is closed');
      let socket: net.Socket;
      for (;;) {
        try {
          socket = await attempt(signal);
          break;
        } catch (err) {
          if (err instanceof ForwardError) throw err;
          const code = (err as NodeJS.ErrnoException).code ?? 'error';
          if (code === 'ECONNREFUSED' && !answered && Date.now() + retryMs < graceEnds) {
            await sleep(retryMs, signal);
            continue;
          }
          throw new ForwardError('FORWARD_APP_UNREACHABLE', `app unreachable at ${where} (${code})`, { cause: err });
        }
      }
      answered = true;
      // Whatever happens later on this socket, an 'error' without a listener must not crash the process.
      socket.on('error', () => {});
      if (proxyProtocol) {
        try {
          // Destination: the app's own address (the client's original destination is not known here).
          const app = { address: socket.remoteAddress ?? host, port: socket.remotePort ?? port };
          const header = encodeProxyV2(ctx.client === undefined ? null : { source: ctx.client, destination: app });
          socket.write(header);
        } catch (err) {
          socket.destroy();
          throw new ForwardError('FORWARD_PROXY_HEADER', `cannot build the PROXY v2 header for the app (${(err as { code?: string }).code ?? 'error'})`, { cause: err });
        }
      }
      return socket;
    },
    async close() {
      // No pool: every connection belongs to a session, which closes its own.
    },
  };
}
