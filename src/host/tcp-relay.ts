/**
 * The host side of TLS ingress: a public TCP port whose connections are relayed, byte for byte, to the agent's
 * TLS port (vsock in production; tcp/unix in development). The relay never sees plaintext — TLS ends inside
 * the enclave. With `proxyProtocol` a PROXY v2 header carrying the client's address goes first on each agent
 * stream (the agent must expect it: accept_proxy_protocol = true).
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import pino, { type Logger } from 'pino';
import { connectStream, describeTarget, type StreamTarget } from '../transport/connect.ts';
import { encodeProxyV2 } from '../transport/proxy-v2.ts';
import { listenOrFail } from './listen.ts';

export interface TcpRelayOptions {
  listen: { host: string; port: number };
  target: StreamTarget;
  proxyProtocol?: boolean;
  /** Concurrent connections; more are closed at once (default 4096). */
  maxConnections?: number;
  /** Connecting to the agent must fit in this (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** Close a connection with no bytes either way for this long; 0 disables (default 600 000 ms). */
  idleTimeoutMs?: number;
  logger?: Logger;
}

export interface TcpRelay {
  /** "127.0.0.1:8444". */
  readonly address: string;
  readonly port: number;
  readonly connections: number;
  close(): Promise<void>;
}

function proxyHeader(sock: net.Socket): Uint8Array {
  const src = sock.remoteAddress;
  const dst = sock.localAddress;
  if (src === undefined || dst === undefined || sock.remotePort === undefined || sock.localPort === undefined) return encodeProxyV2(null);
  const strip = (a: string): string => (a.startsWith('::ffff:') && net.isIPv4(a.slice(7)) ? a.slice(7) : a);
  const [s, d] = [strip(src), strip(dst)];
  // Mixed families (an IPv4 client on a dual-stack socket is already mapped back above): LOCAL.
  if (net.isIP(s) !== net.isIP(d)) return encodeProxyV2(null);
  return encodeProxyV2({ source: { address: s, port: sock.remotePort }, destination: { address: d, port: sock.localPort } });
}

export async function startTcpRelay(opts: TcpRelayOptions): Promise<TcpRelay> {
  const log = (opts.logger ?? pino({ level: 'silent' })).child({ component: 'tls-relay' });
  const max = opts.maxConnections ?? 4096;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 600_000;
  const open = new Set<Duplex>();
  let active = 0;

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    if (active >= max) {
      client.destroy();
      return;
    }
    active++;
    open.add(client);
    let agent: Duplex | undefined;
    client.once('close', () => {
      active--;
      open.delete(client);
      agent?.destroy();
    });
    if (idleTimeoutMs > 0) client.setTimeout(idleTimeoutMs, () => client.destroy());
    connectStream(opts.target, { timeoutMs: connectTimeoutMs }).then(
      (a) => {
        agent = a;
        a.on('error', () => {});
        if (client.destroyed) {
          a.destroy();
          return;
        }
        open.add(a);
        a.once('close', () => {
          open.delete(a);
          client.destroy();
        });
        if (opts.proxyProtocol === true) a.write(proxyHeader(client));
        client.pipe(a);
        a.pipe(client);
        client.resume();
      },
      (err: unknown) => {
        log.warn({ err: (err as { code?: string }).code ?? String(err), agent: describeTarget(opts.target) }, 'agent TLS port unreachable');
        client.destroy();
      },
    );
  });
  await listenOrFail(server, opts.listen);
  server.on('error', (err) => log.error({ err: err.message }, 'relay server error'));
  const port = (server.address() as net.AddressInfo).port;
  const host = opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host;
  log.info({ event: 'listening', address: `${host}:${port}`, agent: describeTarget(opts.target), proxyProtocol: opts.proxyProtocol ?? false }, 'TLS relay listening');
  let closed: Promise<void> | null = null;
  return {
    address: `${host}:${port}`,
    port,
    get connections() {
      return active;
    },
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of open) s.destroy();
      });
      return closed;
    },
  };
}
