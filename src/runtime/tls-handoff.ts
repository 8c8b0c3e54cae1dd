// TLS ingress with [limits] workers ≥ 2: the main thread keeps the TLS listener and the one AttestedIdentity
// (the NSM, the fresh-nonce budget, rotation) and serves no TLS itself. Each connection is admitted against the
// ingress's process-wide limits (maxConnections, maxPendingHandshakes: SharedAdmission.tls), then — before a
// byte is read — its descriptor goes to the least-loaded session worker (src/transport/handoff.ts), which runs
// the handshake and the HTTP pipeline (worker-tls.ts) and gives the slots back.
// Rotation stays exact: a connection arriving while the certificate is due waits here for the new one, which is
// pushed to every worker (identity-proxy.ts) before the connection is handed with its generation.
// [ingress.acme] runs here too (the order, renewals, the tls-alpn-01 challenges); its certificate and pending
// challenges are pushed with the same generations, and each connection first checks (by this thread's clock)
// whether the domain's certificate changed or expired, so a worker serves what this thread would.
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { AcmeCertificate, AcmeIssued } from '../ingress/acme-certificate.ts';
import type { AttestedIdentity } from '../ingress/attested-identity.ts';
import { startRotationTimer, type TlsIngress } from '../ingress/tls-ingress.ts';
import type { SharedAdmission } from '../responder/shared-admission.ts';
import { detachConnection, discardHandedConnection } from '../transport/handoff.ts';
import type { ConnectionInfo, Listener, ListenOptions } from '../transport/types.ts';
import { RateLimitedLog, REFUSAL_LOG_INTERVAL_MS } from '../util/rate-limited-log.ts';
import type { SessionWorkers } from './session-workers.ts';
import { serveIdentity, type AcmeWire, type IdentityServer } from './worker-services/identity-proxy.ts';

export interface TlsHandoffOptions {
  listen: (o: ListenOptions) => Promise<Listener>;
  identity: AttestedIdentity;
  /** Started with `tls: true`. */
  workers: SessionWorkers;
  admission: SharedAdmission;
  /** [ingress.acme]: started once the listener accepts, stopped by close(). */
  acme?: AcmeCertificate;
  /** A connection held here while a due certificate is re-issued is closed after this (default 10 s), as a handshake is. */
  handshakeTimeoutMs?: number;
  logger: Logger;
}

export async function startTlsHandoff(opts: TlsHandoffOptions): Promise<TlsIngress> {
  const { identity, workers, admission, logger } = opts;
  const slots = admission.tls;
  const refusals = new RateLimitedLog(logger, 'connections refused (TLS ingress)', REFUSAL_LOG_INTERVAL_MS);
  const acceptErrors = new RateLimitedLog(logger, 'listener accept errors (TLS ingress)', REFUSAL_LOG_INTERVAL_MS);
  await identity.current();

  const servers: IdentityServer[] = [];
  const acme = opts.acme;
  /** The ACME certificate as last pushed (undefined: none, or expired by this thread's clock). */
  let acmeIssued: AcmeIssued | undefined;
  let generation = 0;
  const acmeState = (): AcmeWire | undefined =>
    acme === undefined ? undefined : { domain: acme.domain, issued: acmeIssued === undefined ? null : { keyPem: acmeIssued.keyPem, chainPem: acmeIssued.chainPem }, challenges: acme.pendingChallenges() };
  const push = (): void => {
    generation++;
    const state = acmeState();
    for (const s of servers) s.push(identity.served!, generation, state);
  };
  push();
  // Threads start on demand (session-workers.ts): each one's port is served, from the generation current then.
  const unsubscribe = workers.onIdentityPort((port) => {
    const server = serveIdentity(port, identity);
    servers.push(server);
    server.push(identity.served!, generation, acmeState());
  });
  identity.onIssued = push;
  if (acme !== undefined) {
    acme.onChange = () => {
      acmeIssued = acme.issuedFor(acme.domain);
      push();
    };
  }
  /** Per connection: what a handshake for the domain would get here (a renewal due starts, as on a handshake). */
  const acmeCurrent = (): void => {
    if (acme === undefined) return;
    const now = acme.issuedFor(acme.domain);
    if (now === acmeIssued) return;
    acmeIssued = now;
    push();
  };
  const stopRotation = startRotationTimer(identity, logger);
  const unhook = (): void => {
    stopRotation();
    unsubscribe();
    identity.onIssued = undefined;
    if (acme !== undefined) acme.onChange = undefined;
    for (const s of servers) s.close();
  };

  let state: 'running' | 'draining' | 'closed' = 'running';
  /** Admitted connections waiting for a due certificate to be re-issued. */
  const held = new Set<Duplex>();

  const refuse = (raw: Duplex, reason: string): void => {
    slots.refused();
    refusals.note(reason);
    raw.destroy();
  };
  /** An admitted connection that goes to no worker: its slots back. */
  const release = (raw: Duplex, reason: string): void => {
    slots.handshakeEnded();
    slots.closed();
    refuse(raw, reason);
  };

  const holdTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
  const hand = (raw: Duplex, info: ConnectionInfo): void => {
    held.delete(raw);
    if (state !== 'running' || raw.destroyed) return release(raw, state === 'running' ? 'closed' : state);
    let connection;
    try {
      connection = detachConnection(raw, info);
    } catch (err) {
      const cause = (err as { cause?: { code?: unknown } }).cause?.code;
      return release(raw, typeof cause === 'string' ? `handoff-failed:${cause}` : 'handoff-failed');
    }
    if (!workers.handTls(connection, generation)) {
      discardHandedConnection(connection);
      release(raw, 'draining');
    }
  };

  const listening = opts.listen({
    handoff: true,
    onConnection: (raw, info) => {
      raw.on('error', () => {});
      if (state !== 'running') return refuse(raw, state);
      if (!slots.tryOpen()) return refuse(raw, 'max-connections');
      acmeCurrent();
      if (!identity.due) return hand(raw, info);
      // Due: the handshake must get the new certificate (or, if the NSM fails, the one served so far).
      held.add(raw);
      // The wait counts toward the handshake timeout, as it does with workers = 1 (tls-ingress.ts serve()).
      const timer = setTimeout(() => raw.destroy(), holdTimeoutMs);
      const go = (): void => {
        clearTimeout(timer);
        hand(raw, info);
      };
      identity.serving().then(go, go);
    },
    onError: (err) => acceptErrors.note((err as { code?: string }).code ?? 'error'),
  });
  // A listener that cannot start leaves nothing behind: no rotation timer calling the NSM, no pushes.
  const listener = await listening.catch((err: unknown) => {
    unhook();
    throw err;
  });
  acme?.start();

  let stopped: Promise<void> | undefined;
  const stopAccepting = (): Promise<void> => (stopped ??= listener.close());
  const close = async (): Promise<void> => {
    if (state === 'closed') return;
    state = 'closed';
    unhook();
    acme?.stop();
    await stopAccepting();
    for (const raw of held) raw.destroy();
    refusals.flush();
    acceptErrors.flush();
  };

  return {
    address: listener.address,
    port: listener.port,
    identity,
    get refused() {
      return slots.refusedCount;
    },
    stopAccepting,
    // The workers drain the connections they serve (SessionWorkers.drain): here, no new ones.
    async drain() {
      if (state === 'running') state = 'draining';
      for (const raw of held) raw.destroy();
      await stopAccepting();
    },
    close,
  };
}
