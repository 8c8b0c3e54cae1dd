// TLS ingress: raw connections (vsock in `run`, TCP in the local stack) → optional PROXY v2 header (the
// bridge's, when accept_proxy_protocol) → TLS 1.3/1.2 terminated here with the attested certificate
// (attested-identity.ts) → the very same HTTP pipeline as Noise Data requests and streams, through
// `attach` (src/http/forwarder.ts; its keep-alive fast path, src/http/keep-alive-connection.ts): request id,
// transaction log, client address, API key, decryption, forward. /.well-known/attestation on this port answers
// a document bound to the key being served. drain() (SIGTERM): no new connections, in-flight requests are
// answered, idle keep-alive connections closed.
// With [limits] workers ≥ 2 this runs on each session worker (src/runtime/session-worker.ts) over connections the
// main thread admitted and handed over, with an identity that proxies the main thread's (IngressIdentity) and
// process-wide connection slots (TlsConnectionSlots) and per-client counts (ClientSessionsLike).
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext, type TlsOptions } from 'node:tls';
import type { Logger } from 'pino';
import type { ForwardContext } from '../responder/forwarder.ts';
import { ClientSessions, type ClientSessionsLike } from '../responder/admission.ts';
import type { AttachedConnection } from '../http/keep-alive-connection.ts';
import { readProxyHeader } from '../transport/proxy-v2.ts';
import type { Listener, ListenOptions } from '../transport/types.ts';
import { RateLimitedLog, REFUSAL_LOG_INTERVAL_MS } from '../util/rate-limited-log.ts';
import { clientKey } from '../util/ip-bytes.ts';

/** What a handshake is served by default: the attested certificate's context. */
export interface ServedCertificate {
  readonly context: SecureContext;
}

/**
 * What the ingress uses of its certificate source: AttestedIdentity on the thread that owns the NSM budget, or
 * a session worker's proxy of it (src/runtime/worker-services/identity-proxy.ts).
 */
export interface IngressIdentity {
  /** The default certificate, re-issued first when due. */
  current(): Promise<ServedCertificate>;
  /** current(), or the certificate served so far when re-issuing fails. */
  serving(): Promise<ServedCertificate>;
  readonly served: ServedCertificate | undefined;
  /** The next handshake must wait for serving(). */
  readonly due: boolean;
  /** SPKI DER of the default key. */
  readonly spkiDer: Uint8Array;
  contextFor(servername: string | undefined, client?: string): Promise<SecureContext>;
  documentFor(spkiDer: Uint8Array, nonce?: Uint8Array, client?: string): Promise<Uint8Array>;
  /** ms until the default certificate is due (the rotation timer); absent when another thread rotates it. */
  msUntilDue?(): number;
}

/**
 * Where connections count against maxConnections and maxPendingHandshakes: this ingress's own counts
 * (default), or the process-wide ones of SharedAdmission when the connection came from another thread.
 */
export interface TlsConnectionSlots {
  /** Takes a connection and a handshake slot; false (nothing taken) when either is full. */
  tryOpen(): boolean;
  handshakeEnded(): void;
  closed(): void;
  refused(): void;
  readonly refusedCount: number;
}

function localSlots(maxConnections: number, maxPending: number): TlsConnectionSlots {
  let connections = 0;
  let pending = 0;
  let refused = 0;
  return {
    tryOpen() {
      if (pending >= maxPending || connections >= maxConnections) return false;
      pending++;
      connections++;
      return true;
    },
    handshakeEnded: () => void pending--,
    closed: () => void connections--,
    refused: () => void refused++,
    get refusedCount() {
      return refused;
    },
  };
}

/** After a failed re-issue, or one that came back due already, the next attempt waits this long. */
const ROTATION_RETRY_MS = 30_000;

/**
 * Re-issues `identity`'s default certificate when it is due (and re-checks at least hourly: the clock may be
 * stepped). A certificate that is due the moment it is issued (the NSM's certificate has less than the rotation
 * margin left by this clock) is retried after ROTATION_RETRY_MS, not at once: that would call the NSM in a loop.
 * Returns the stop.
 */
export function startRotationTimer(identity: IngressIdentity & { msUntilDue(): number; readonly dueAtIssue?: boolean }, logger: Logger | undefined): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = (): void => {
    if (stopped) return;
    // Timers cap at 2^31-1 ms.
    timer = setTimeout(() => {
      identity.current().then(
        () => {
          const dueAlready = identity.dueAtIssue === true || identity.msUntilDue() === 0;
          if (dueAlready) logger?.warn('the TLS certificate just issued is due already (the NSM certificate in it expires within the rotation margin by this clock); re-issuing in 30 s');
          if (identity.msUntilDue() > 0) return schedule();
          retry();
        },
        (err: unknown) => {
          logger?.error({ err: (err as { code?: string }).code ?? String(err) }, 'TLS certificate rotation failed; retrying in 30 s');
          retry();
        },
      );
    }, Math.min(identity.msUntilDue() + 1, 3_600_000));
    timer.unref();
  };
  const retry = (): void => {
    if (stopped) return;
    timer = setTimeout(schedule, ROTATION_RETRY_MS);
    timer.unref();
  };
  schedule();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** ALPN protocol of tls-alpn-01 validation (RFC 8737). */
const ACME_TLS_ALPN = 'acme-tls/1';

/**
 * An ACME certificate for one domain (acme-certificate.ts): its context for SNI = domain once obtained,
 * the tls-alpn-01 challenge certificate while validation is pending; started once the listener accepts.
 */
export interface AcmeSni {
  issuedFor(servername: string | undefined): { context: SecureContext } | undefined;
  challengeContext(servername: string | undefined): SecureContext | undefined;
  start(): void;
  stop(): void;
}

export interface TlsIngressOptions {
  listen: (o: ListenOptions) => Promise<Listener>;
  identity: IngressIdentity;
  /** Serves one decrypted connection on the HTTP pipeline (HttpForwarder.attach). */
  attach: (socket: Duplex, ctx: ForwardContext) => AttachedConnection;
  acceptProxyProtocol?: boolean;
  /** [ingress.acme]: SNI = its domain gets the ACME certificate; ALPN acme-tls/1 gets the challenge (RFC 8737). */
  acme?: AcmeSni;
  /** PROXY header + TLS handshake must be done within this (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Connections between accept and the end of their handshake; more are closed at once (default 256). */
  maxPendingHandshakes?: number;
  /** Connections open in all (handshaking or served); more are closed at once (default 1024). */
  maxConnections?: number;
  /** Counts the two limits above elsewhere (process-wide, across threads); replaces them. */
  slots?: TlsConnectionSlots;
  /**
   * Connections open per client — the PROXY v2 source address, an IPv6 /64 counting as one (limits.max_sessions_per_client;
   * default 64): one more is closed right after its header, before any TLS. Without a PROXY header nothing is counted.
   */
  maxConnectionsPerClient?: number;
  /** Counts connections per client elsewhere (process-wide, across threads); replaces maxConnectionsPerClient. */
  clients?: ClientSessionsLike;
  logger?: Logger;
  /**
   * Connections refused (the connection cap, the per-client cap), handshakes refused for their SNI and listener
   * accept errors are logged once per this interval, with counts by cause (default 10 s): a client must not get
   * one log line per connection.
   */
  refusalLogIntervalMs?: number;
}

export interface TlsIngress {
  readonly address: string;
  readonly port: number | undefined;
  readonly identity: IngressIdentity;
  /** Connections refused before a handshake (too many pending, bad PROXY header, failed handshake). */
  readonly refused: number;
  /** Stop accepting (connections being served carry on until drain() or close()). */
  stopAccepting(): Promise<void>;
  /**
   * Graceful stop: no new connections (handshakes in progress are cut); every served connection answers what
   * it has in flight and then closes (idle keep-alive connections at once). Resolves when all are closed, or
   * after `timeoutMs`, when the rest are cut.
   */
  drain(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

const EMPTY = new Uint8Array(0);

export async function startTlsIngress(opts: TlsIngressOptions): Promise<TlsIngress> {
  const identity = opts.identity;
  const logger = opts.logger;
  const timeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const slots = opts.slots ?? localSlots(opts.maxConnections ?? 1024, opts.maxPendingHandshakes ?? 256);
  const clients = opts.clients ?? new ClientSessions(opts.maxConnectionsPerClient ?? 64);
  await identity.current();

  const open = new Set<Duplex>();
  /** Connections past their handshake, served on the HTTP pipeline. */
  const served = new Map<Duplex, AttachedConnection>();
  /** Raw connections before the end of their PROXY header and handshake. */
  const handshaking = new Set<Duplex>();
  let draining = false;
  let closed = false;
  let stopped: Promise<void> | undefined;
  // A proxy's identity rotates on the thread that owns it (it has no msUntilDue): no timer here.
  const stopRotation = identity.msUntilDue === undefined ? undefined : startRotationTimer(identity as IngressIdentity & { msUntilDue(): number }, logger);
  const logEvery = opts.refusalLogIntervalMs ?? REFUSAL_LOG_INTERVAL_MS;
  const refusals = logger === undefined ? undefined : new RateLimitedLog(logger, 'connections refused (TLS ingress)', logEvery);
  const sniRefusals = logger === undefined ? undefined : new RateLimitedLog(logger, 'TLS handshakes refused for their SNI (TLS ingress)', logEvery);
  const acceptErrors = logger === undefined ? undefined : new RateLimitedLog(logger, 'listener accept errors (TLS ingress)', logEvery);

  type SniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
  /** Per connection: `client` (the PROXY header's source) is what the fresh-nonce budget counts by. */
  const sniFor = (client: string | undefined): SniCallback => (servername, cb) => {
    identity.contextFor(servername, client).then(
      (ctx) => cb(null, ctx),
      (err: unknown) => {
        // A bad or over-budget nonce is the client's choice: counted, not one line per handshake.
        sniRefusals?.note((err as { code?: string }).code ?? 'error');
        cb(err as Error);
      },
    );
  };

  const acme = opts.acme;
  /**
   * With ACME, per connection: OpenSSL asks for the ALPN choice before the certificate (Node's SNICallback), so
   * a handshake offering acme-tls/1 for a name with a pending challenge gets the challenge certificate; SNI =
   * the domain gets the ACME certificate once there is one; everything else the attested one. Like
   * ALPNProtocols ['http/1.1'], a client offering neither protocol is refused (no_application_protocol).
   */
  const acmeRouting = (sniCallback: SniCallback): Pick<TlsOptions, 'SNICallback' | 'ALPNCallback'> => {
    let challenge = false;
    return {
      ALPNCallback: ({ servername, protocols }) => {
        if (protocols.includes(ACME_TLS_ALPN)) {
          challenge = acme!.challengeContext(servername) !== undefined;
          return challenge ? ACME_TLS_ALPN : undefined;
        }
        return protocols.includes('http/1.1') ? 'http/1.1' : undefined;
      },
      SNICallback: (servername, cb) => {
        if (challenge) {
          const ctx = acme!.challengeContext(servername);
          cb(ctx === undefined ? new Error('the tls-alpn-01 challenge ended during the handshake') : null, ctx);
          return;
        }
        const issued = acme!.issuedFor(servername);
        if (issued === undefined) return sniCallback(servername, cb);
        cb(null, issued.context);
      },
    };
  };

  /** A fresh document whose user_data is the SPKI of the certificate `tls` was served. */
  const attestServed = (tls: TLSSocket, nonce?: Uint8Array, client?: string): Promise<Uint8Array> => {
    const served = tls.getX509Certificate();
    return identity.documentFor(served === undefined ? identity.spkiDer : new Uint8Array(served.publicKey.export({ type: 'spki', format: 'der' })), nonce, client);
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
      if (client !== undefined) {
        // Before any TLS: one client must not hold every connection slot (as a Noise session's PROXY header).
        // Not yet destroyed, so its 'close' is still to come and gives the count back.
        if (raw.destroyed) throw new Error('closed after the PROXY header');
        const key = clientKey(client.address);
        if (!clients.claim(key)) {
          refusals?.note('connections-per-client');
          throw new Error('connections per client');
        }
        raw.once('close', () => clients.release(key));
      }
      // Rotation due (checked per handshake, and by the timer): the next handshake waits for the new certificate.
      // If the NSM cannot give one, the certificate served so far stays until the timer's retry succeeds.
      const current = identity.due ? await identity.serving() : identity.served!;
      if (raw.destroyed) throw new Error('closed before the handshake');
      const sniCallback = sniFor(client?.address);
      const routing = acme === undefined ? undefined : acmeRouting(sniCallback);
      const tls = new TLSSocket(raw as unknown as Socket, {
        isServer: true,
        secureContext: current.context,
        ...(routing ?? { SNICallback: sniCallback, ALPNProtocols: ['http/1.1'] }),
      });
      tls.on('error', () => tls.destroy());
      await new Promise<void>((resolve, reject) => {
        tls.once('secure', resolve);
        tls.once('close', () => reject(new Error('closed during the handshake')));
      });
      clearTimeout(timer);
      if (tls.alpnProtocol === ACME_TLS_ALPN) {
        // The CA saw the challenge certificate in the handshake; nothing is served on such a connection.
        logger?.info({ servername: tls.servername }, 'ACME tls-alpn-01 challenge answered');
        // Closed outright once the close_notify is out: a peer that never closes must not hold a slot.
        tls.end(() => tls.destroy());
        return;
      }
      const sessionId = randomBytes(4).toString('hex');
      const openedAt = Date.now();
      const ctx: ForwardContext = {
        sessionId: `tls-${sessionId}`,
        kind: 'stream',
        ...(client === undefined ? {} : { client }),
        handshakeHash: EMPTY,
        // Bound to the key this connection was served, read off its certificate: the attested default one, a
        // fresh-nonce one (SNI <nonce>.attest.<host>) or the ACME one.
        attest: () => attestServed(tls),
        attestWithNonce: (nonce) => attestServed(tls, nonce, client?.address),
      };
      if (client !== undefined) {
        // The http server reads the client address off the socket for its own bookkeeping.
        Object.defineProperty(tls, 'remoteAddress', { value: client.address });
        Object.defineProperty(tls, 'remotePort', { value: client.port });
      }
      if (draining) throw new Error('draining');
      // Closed between 'secure' and here: its 'close' has fired already, so nothing would ever untrack it.
      if (tls.destroyed) throw new Error('closed after the handshake');
      open.add(tls);
      tls.once('close', () => {
        // As a Noise session's 'session closed': which thread served it, for how long (the trx log's session_id).
        logger?.debug({ session: ctx.sessionId, durationMs: Date.now() - openedAt }, 'TLS connection closed');
        open.delete(tls);
        served.delete(tls);
        if (served.size === 0) onAllClosed?.();
      });
      served.set(tls, opts.attach(tls, ctx));
    } catch (err) {
      clearTimeout(timer);
      slots.refused();
      logger?.debug({ err: (err as { code?: string }).code ?? String(err) }, 'TLS ingress connection closed before serving');
      raw.destroy();
    }
  }

  let onAllClosed: (() => void) | undefined;

  const listening = opts.listen({
    onConnection: (raw) => {
      raw.on('error', () => {});
      if (!slots.tryOpen()) {
        slots.refused();
        refusals?.note('max-connections');
        raw.destroy();
        return;
      }
      // A stream that has emitted 'close' already (a handed connection may arrive closed) emits it no more.
      const gone = (raw as { closed?: boolean }).closed === true;
      if (gone) slots.closed();
      else raw.once('close', () => slots.closed());
      if (closed || draining || gone) {
        slots.handshakeEnded();
        slots.refused();
        raw.destroy();
        return;
      }
      open.add(raw);
      raw.once('close', () => open.delete(raw));
      handshaking.add(raw);
      void serve(raw).finally(() => {
        slots.handshakeEnded();
        handshaking.delete(raw);
      });
    },
    onError: (err) => acceptErrors?.note((err as { code?: string }).code ?? 'error'),
  });
  // A listener that cannot start leaves no rotation timer calling the NSM behind.
  const listener = await listening.catch((err: unknown) => {
    stopRotation?.();
    throw err;
  });
  acme?.start();

  return {
    address: listener.address,
    port: listener.port,
    identity,
    get refused() {
      return slots.refusedCount;
    },
    stopAccepting() {
      stopped ??= listener.close();
      return stopped;
    },
    async drain(timeoutMs) {
      draining = true;
      stopped ??= listener.close();
      // Connections still in their PROXY header or handshake have asked nothing yet.
      for (const s of handshaking) s.destroy();
      for (const c of served.values()) c.drain();
      let timer: NodeJS.Timeout | undefined;
      await Promise.all([
        stopped,
        Promise.race([
          new Promise<void>((resolve) => {
            onAllClosed = resolve;
            if (served.size === 0) resolve();
          }),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
        ]),
      ]).finally(() => clearTimeout(timer));
      await close();
    },
    close,
  };

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    stopRotation?.();
    acme?.stop();
    refusals?.flush();
    sniRefusals?.flush();
    acceptErrors?.flush();
    await (stopped ??= listener.close());
    for (const s of open) s.destroy();
    open.clear();
  }
}
