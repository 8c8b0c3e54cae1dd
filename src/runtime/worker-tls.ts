// A session worker's TLS ingress (tls_termination = true, [limits] workers ≥ 2): the same startTlsIngress the
// main thread runs with one thread, fed by the TLS connections the main thread admitted and handed over
// (tls-handoff.ts), served on this thread's HTTP forwarder, with the main thread's attested identity through
// identity-proxy.ts. Each connection holds a connection and a handshake slot of the process-wide TLS limits
// (SharedAdmission.tls), taken by the main thread and given back here, and — once its PROXY header is read here —
// one of its client's (SharedAdmission.tlsClients).
import type { Duplex } from 'node:stream';
import type { Config } from '../config.ts';
import type { HttpForwarder } from '../http/forwarder.ts';
import { startTlsIngress, type TlsConnectionSlots, type TlsIngress } from '../ingress/tls-ingress.ts';
import type { Logger } from 'pino';
import type { SharedAdmission } from '../responder/shared-admission.ts';
import { adoptConnection, type HandedConnection } from '../transport/handoff.ts';
import type { ConnectionInfo, ListenOptions } from '../transport/types.ts';
import { remoteIdentity } from './worker-services/identity-proxy.ts';
import type { PortLike } from './worker-services/rpc-port.ts';

export interface WorkerTlsOptions {
  index: number;
  identityPort: PortLike;
  admission: SharedAdmission;
  forwarder: HttpForwarder;
  config: Config;
  logger: Logger;
  /** A handed TLS connection closed (or was never served): the main thread's count of this worker's load. */
  closed: () => void;
}

export interface WorkerTls {
  /** A connection the main thread handed, to be served no certificate older than `generation`. */
  accept(connection: HandedConnection, generation: number): void;
  /** Drains (or closes) the TLS ingress; resolves when its connections are done. */
  stop(how: 'drain' | 'close', timeoutMs: number): Promise<void>;
}

export function startWorkerTls(opts: WorkerTlsOptions): WorkerTls {
  const { admission, logger } = opts;
  const identity = remoteIdentity(opts.identityPort);
  const slots: TlsConnectionSlots = {
    tryOpen: () => true, // the main thread took both slots before it handed the connection
    handshakeEnded: () => admission.tls.handshakeEnded(),
    closed: () => {
      admission.tls.closed();
      opts.closed();
    },
    refused: () => admission.tls.refused(),
    get refusedCount() {
      return admission.tls.refusedCount;
    },
  };
  /** A handed connection this thread will not serve: its slots back, counted as refused. */
  const refuse = (stream: Duplex | undefined): void => {
    slots.handshakeEnded();
    slots.refused();
    stream?.destroy();
    slots.closed();
  };

  let feed: ListenOptions | undefined;
  let failed = false;
  const early: [Duplex, ConnectionInfo][] = [];
  const started: Promise<TlsIngress | undefined> = startTlsIngress({
    listen: (o) => {
      feed = o;
      for (const [s, info] of early.splice(0)) o.onConnection(s, info);
      // Nothing to close: the main thread stops handing connections; any still arriving are refused by the ingress.
      return Promise.resolve({ address: `worker ${opts.index}`, close: () => Promise.resolve() });
    },
    identity,
    attach: (socket, ctx) => opts.forwarder.attach(socket, ctx),
    acceptProxyProtocol: opts.config.accept_proxy_protocol,
    handshakeTimeoutMs: opts.config.limits.handshake_timeout_ms,
    // [ingress.acme]: the domain's certificate and the tls-alpn-01 challenges, as the main thread pushed them.
    ...(opts.config.ingress.acme === null ? {} : { acme: identity.acme }),
    slots,
    clients: admission.tlsClients,
    logger,
  }).catch((err: unknown) => {
    failed = true;
    for (const [s] of early.splice(0)) refuse(s);
    logger.error({ err: (err as { code?: string }).code ?? String(err) }, 'TLS ingress did not start on this worker');
    return undefined;
  });

  return {
    accept(connection, generation) {
      let stream: Duplex;
      try {
        stream = adoptConnection(connection);
      } catch (err) {
        refuse(undefined);
        logger.warn({ remote: connection.info.remote, err: (err as { code?: string }).code ?? 'error' }, 'cannot adopt a handed TLS connection');
        return;
      }
      identity.want(generation);
      if (feed !== undefined) feed.onConnection(stream, connection.info);
      else if (failed) refuse(stream);
      else early.push([stream, connection.info]);
    },
    async stop(how, timeoutMs) {
      // Stopped before the first certificate arrived (the main thread's ingress did not start): nothing waits.
      if (identity.served === undefined) identity.close();
      const ingress = await started;
      if (how === 'drain') await ingress?.drain(timeoutMs);
      else await ingress?.close();
      identity.close();
    },
  };
}
