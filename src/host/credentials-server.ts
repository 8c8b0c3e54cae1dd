// The bridge's credentials service: answers the enclave's GetCredentials requests with short-lived AWS
// credentials from the parent instance's own credential chain (the instance role through IMDSv2 on EC2),
// refreshed before they expire. It listens on a host-only vsock port: reachable from the enclaves on this
// instance, never from the network. Every enclave on the instance reaches that port (and a debug-mode build, which
// KMS would refuse, still runs next to the role), so over vsock it answers only the CID of the agent it serves:
// any other peer, or one whose CID cannot be read, is closed unanswered. Without that CID it does not start.
// Credentials are never logged; a malformed frame closes its connection only.
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import pino from 'pino';
import { listenTcp } from '../transport/tcp.ts';
import type { ConnectionInfo, Listener, ListenOptions } from '../transport/types.ts';
import { listenUnix } from '../transport/unix.ts';
import { refreshingCredentials, type RefreshingCredentials } from './credentials-cache.ts';
import { CredentialsError } from './credentials-errors.ts';
import { isLoopbackHost } from './listen.ts';
import { ForeignPeers, servedCid } from './vsock-peer.ts';
import { credentialsAnswer, encodeFrame, errorAnswer, FrameReader, GET_CREDENTIALS, MAX_REQUEST_BYTES, type CredentialSource } from './credentials-protocol.ts';

/** Over vsock, `agentCid` is the CID of the enclave whose agent is served: the only peer answered. */
export type CredentialsListen = { kind: 'tcp'; host?: string; port: number } | { kind: 'unix'; path: string } | { kind: 'vsock'; port: number; agentCid: number };

/** Refresh once fewer than 5 minutes remain (instance-role credentials live for hours). */
export const BRIDGE_REFRESH_MARGIN_MS = 5 * 60_000;
/** A connection with no complete request for this long is closed. */
const IDLE_TIMEOUT_MS = 30_000;
/** Requests queued on one connection before it counts as a flood and is closed. */
const MAX_QUEUED_REQUESTS = 8;
/**
 * Answer bytes a peer may leave unread (beyond the socket's own buffers) before its connection is closed. The
 * agent reads each answer before it asks again; a peer that keeps asking and never reads would otherwise grow
 * this process's memory by an answer (a few KiB) per 30-byte request.
 */
const MAX_UNSENT_BYTES = 64 * 1024;

export interface CredentialsServerOptions {
  listen: CredentialsListen;
  /** Default: the AWS SDK's default credential chain (env, shared files, SSO, process, web identity, ECS, IMDSv2). */
  source?: CredentialSource;
  logger?: Logger;
  refreshMarginMs?: number;
  now?: () => number;
  idleTimeoutMs?: number;
  /** Opens the listener for `listen` (default: the tcp, unix or vsock listener). Tests stand in one that reports vsock peers. */
  listenWith?: (where: CredentialsListen, opts: ListenOptions) => Promise<Listener>;
}

export interface CredentialsServer {
  readonly address: string;
  readonly port: number | undefined;
  /** The cache in front of the source (its `fetches` say how often the chain was asked). */
  readonly credentials: RefreshingCredentials;
  /**
   * Requests answered with credentials / connections closed for a malformed frame / chain failures / vsock
   * connections closed unanswered because the peer is not the agent's CID.
   */
  readonly counters: { served: number; refused: number; failed: number; foreignPeers: number };
  close(): Promise<void>;
}

/** The parent's credential chain, loaded only when no source is given (tests give one). */
async function defaultChain(): Promise<CredentialSource> {
  const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
  // IMDS: the SDK's 1 s and no retry are tight on a busy parent; a refresh runs at most every few minutes.
  const chain = defaultProvider({ timeout: 3_000, maxRetries: 2 });
  return async (options) => {
    const c = await chain(options);
    return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken === undefined ? {} : { sessionToken: c.sessionToken }), ...(c.expiration === undefined ? {} : { expiration: c.expiration }) };
  };
}

async function listenOn(where: CredentialsListen, opts: ListenOptions): Promise<Listener> {
  switch (where.kind) {
    case 'tcp': {
      // TCP stands in for vsock on a development machine: on any other address, whoever reaches the port
      // would be handed this host's AWS credentials.
      const host = where.host ?? '127.0.0.1';
      if (!isLoopbackHost(host)) throw new CredentialsError('CREDENTIALS_BAD_OPTIONS', `credentials over tcp listen on loopback only (127.0.0.1, ::1, localhost), found ${host}: use vsock or a unix socket`);
      return listenTcp({ host, port: where.port }, opts);
    }
    case 'unix':
      return listenUnix({ path: where.path, mode: 0o600 }, opts);
    case 'vsock': {
      const { listenVsock } = await import('../transport/vsock.ts');
      return listenVsock({ port: where.port }, opts);
    }
  }
}

/** The only peer CID served over vsock; refuses options that would leave it unknown (every enclave served). */
function agentCidOf(where: CredentialsListen): number | undefined {
  if (where.kind !== 'vsock') return undefined;
  return servedCid((where as { agentCid?: unknown }).agentCid, (reason) => new CredentialsError('CREDENTIALS_BAD_OPTIONS', `credentials over vsock answer only the agent's enclave CID, ${reason}`));
}

export async function startCredentialsServer(opts: CredentialsServerOptions): Promise<CredentialsServer> {
  const agentCid = agentCidOf(opts.listen);
  const logger = opts.logger ?? pino({ level: 'silent' });
  const source = opts.source ?? (await defaultChain());
  const now = opts.now ?? Date.now;
  const credentials = refreshingCredentials(source, {
    refreshMarginMs: opts.refreshMarginMs ?? BRIDGE_REFRESH_MARGIN_MS,
    ...(opts.now === undefined ? {} : { now: opts.now }),
    onStaleServed: (err) => logger.warn({ type: 'credentials', error: errorName(err) }, 'credential refresh failed; serving the cached credentials until they expire'),
  });
  const counters = { served: 0, refused: 0, failed: 0, foreignPeers: 0 };
  const foreign = new ForeignPeers(agentCid, logger, "credentials connection from a CID other than the agent's; closed unanswered");
  const streams = new Set<Duplex>();
  const idleMs = opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS;

  const onConnection = (stream: Duplex, info: ConnectionInfo): void => {
    if (foreign.refuse(stream, info)) {
      counters.foreignPeers = foreign.count;
      return;
    }
    streams.add(stream);
    const reader = new FrameReader(MAX_REQUEST_BYTES);
    let queue = Promise.resolve();
    let queued = 0;
    let idle = setTimeout(() => stream.destroy(), idleMs);
    const refuse = (reason: string): void => {
      counters.refused++;
      // The reason names the frame's fault (length, not JSON, unknown operation), never its content.
      logger.warn({ type: 'credentials', remote: info.remote, reason }, 'credentials request refused; connection closed');
      stream.destroy();
    };
    const answer = async (): Promise<void> => {
      try {
        const c = await credentials();
        if (stream.destroyed) return;
        if (stream.writableLength > MAX_UNSENT_BYTES) return refuse('answers not read');
        counters.served++;
        logger.debug({ type: 'credentials', remote: info.remote, expires: c.expiration?.toISOString() ?? null }, 'credentials served');
        stream.write(encodeFrame(credentialsAnswer(c, now())));
      } catch (err) {
        counters.failed++;
        logger.error({ type: 'credentials', error: errorName(err) }, "the host's credential chain gave no credentials");
        if (!stream.destroyed) stream.write(encodeFrame(errorAnswer('CREDENTIALS_UNAVAILABLE', `the host's credential chain failed (${errorName(err)})`)));
      }
    };
    stream.on('data', (chunk: Buffer) => {
      let frames;
      try {
        frames = reader.push(chunk);
      } catch (err) {
        refuse(err instanceof CredentialsError ? err.code : 'CREDENTIALS_BAD_FRAME');
        return;
      }
      for (const f of frames) {
        if (f.Operation !== GET_CREDENTIALS) return refuse('unknown Operation');
        if (++queued > MAX_QUEUED_REQUESTS) return refuse('too many queued requests');
        clearTimeout(idle);
        idle = setTimeout(() => stream.destroy(), idleMs);
        queue = queue.then(answer).finally(() => queued--);
      }
    });
    stream.on('error', () => stream.destroy());
    stream.on('close', () => {
      clearTimeout(idle);
      streams.delete(stream);
    });
  };

  const listener = await (opts.listenWith ?? listenOn)(opts.listen, { onConnection, onError: (err) => logger.warn({ type: 'credentials', error: err.message }, 'credentials accept failed') });
  logger.info({ type: 'credentials', address: listener.address }, 'credentials service listening');
  return {
    address: listener.address,
    port: listener.port,
    credentials,
    counters,
    async close() {
      await listener.close();
      for (const s of streams) s.destroy();
    },
  };
}

/** A source error's class and code: SDK messages may quote files or URLs, never worth the risk in a log. */
function errorName(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${err.name} ${code}` : err.name;
  }
  return typeof err;
}
