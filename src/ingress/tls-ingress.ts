// TLS ingress: raw connections (vsock in `run`, TCP in the local stack) → optional PROXY v2 header (the
// bridge's, when accept_proxy_protocol) → TLS 1.3/1.2 terminated here with the attested certificate
// (attested-identity.ts) → the very same HTTP pipeline as Noise Data requests and streams, through
// `attach` (src/http/forwarder.ts): request id, transaction log, client address, API key, decryption,
// forward. /.well-known/attestation on this port answers a document bound to the key being served.
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ForwardContext } from '../responder/forwarder.ts';
import { readProxyHeader } from '../transport/proxy-v2.ts';
import type { Listener, ListenOptions } from '../transport/types.ts';
import type { AttestedIdentity } from './attested-identity.ts';

export interface TlsIngressOptions {
  listen: (o: ListenOptions) => Promise<Listener>;
  identity: AttestedIdentity;
  /** Serves one decrypted connection on the HTTP pipeline (HttpForwarder.attach). */
  attach: (socket: Duplex, ctx: ForwardContext) => void;
  acceptProxyProtocol?: boolean;
  /** PROXY header + TLS handshake must be done within this (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Connections between accept and the end of their handshake; more are closed at once (default 256). */
  maxPendingHandshakes?: number;
  /** Connections open in all (handshaking or served); more are closed at once (default 1024). */
  maxConnections?: number;
  logger?: Logger;
}

export interface TlsIngress {
  readonly address: string;
  readonly port: number | undefined;
  readonly identity: AttestedIdentity;
  /** Connections refused before a handshake (too many pending, bad PROXY header, failed handshake). */
  readonly refused: number;
  /** Drain: stop accepting (connections being served carry on until close()). */
  stopAccepting(): Promise<void>;
  close(): Promise<void>;
}

const EMPTY = new Uint8Array(0);

export async function startTlsIngress(opts: TlsIngressOptions): Promise<TlsIngress> {
  const identity = opts.identity;
  const logger = opts.logger;
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const maxPending = opts.maxPendingHandshakes ?? 256;
  const maxConnections = opts.maxConnections ?? 1024;
  await identity.current();

  const open = new Set<Duplex>();
  let pending = 0;
  let connections = 0;
  let refused = 0;
  let closed = false;
  let stopped: Promise<void> | undefined;
  let rotationTimer: NodeJS.Timeout | undefined;
  const scheduleRotation = (): void => {
    if (closed) return;
    // Timers cap at 2^31-1 ms; re-check at least hourly (the clock may be stepped).
    rotationTimer = setTimeout(() => {
      identity.current().then(scheduleRotation, (err: unknown) => {
        logger?.error({ err: (err as { code?: string }).code ?? String(err) }, 'TLS certificate rotation failed; retrying in 30 s');
        rotationTimer = setTimeout(scheduleRotation, 30_000);
        rotationTimer.unref();
      });
    }, Math.min(identity.msUntilDue() + 1, 3_600_000));
    rotationTimer.unref();
  };
  scheduleRotation();

  const sniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void => {
    identity.contextFor(servername).then(
      (ctx) => cb(null, ctx),
      (err: unknown) => {
        logger?.warn({ err: (err as { code?: string }).code ?? String(err) }, 'TLS handshake refused for its SNI');
        cb(err as Error);
      },
    );
  };

  async function serve(raw: Duplex): Promise<void> {
    const timer = setTimeout(() => raw.destroy(), timeoutMs);
    try {
      let client: ForwardContext['client'];
      if (opts.acceptProxyProtocol === true) {
        const { header, rest } = await readProxyHeader(raw, timeoutMs);
        if (header.command === 'PROXY' && header.source !== undefined) client = header.source;
        if (rest.length > 0) raw.unshift(Buffer.from(rest));
      }
      // Rotation due (checked per handshake, and by the timer): the next handshake waits for the new certificate.
      // If the NSM cannot give one, the certificate served so far stays until the timer's retry succeeds.
      const current = identity.due ? await identity.serving() : identity.served!;
      if (raw.destroyed) throw new Error('closed before the handshake');
      const tls = new TLSSocket(raw as unknown as Socket, {
        isServer: true,
        secureContext: current.context,
        SNICallback: sniCallback,
        ALPNProtocols: ['http/1.1'],
      });
      tls.on('error', () => tls.destroy());
      await new Promise<void>((resolve, reject) => {
        tls.once('secure', resolve);
        tls.once('close', () => reject(new Error('closed during the handshake')));
      });
      clearTimeout(timer);
      const sessionId = randomBytes(4).toString('hex');
      const ctx: ForwardContext = {
        sessionId: `tls-${sessionId}`,
        kind: 'stream',
        ...(client === undefined ? {} : { client }),
        handshakeHash: EMPTY,
        attest: () => identity.wellKnownDocument(),
      };
      if (client !== undefined) {
        // The http server reads the client address off the socket for its own bookkeeping.
        Object.defineProperty(tls, 'remoteAddress', { value: client.address });
        Object.defineProperty(tls, 'remotePort', { value: client.port });
      }
      open.add(tls);
      tls.once('close', () => open.delete(tls));
      opts.attach(tls, ctx);
    } catch (err) {
      clearTimeout(timer);
      refused++;
      logger?.debug({ err: (err as { code?: string }).code ?? String(err) }, 'TLS ingress connection closed before serving');
      raw.destroy();
    }
  }

  const listener = await opts.listen({
    onConnection: (raw) => {
      raw.on('error', () => {});
      if (closed || pending >= maxPending || connections >= maxConnections) {
        refused++;
        raw.destroy();
        return;
      }
      pending++;
      connections++;
      raw.once('close', () => connections--);
      open.add(raw);
      raw.once('close', () => open.delete(raw));
      void serve(raw).finally(() => pending--);
    },
    onError: (err) => logger?.warn({ err: String(err) }, 'TLS ingress accept failed'),
  });

  return {
    address: listener.address,
    port: listener.port,
    identity,
    get refused() {
      return refused;
    },
    stopAccepting() {
      stopped ??= listener.close();
      return stopped;
    },
    async close() {
      if (closed) return;
      closed = true;
      clearTimeout(rotationTimer);
      await (stopped ??= listener.close());
      for (const s of open) s.destroy();
      open.clear();
    },
  };
}
