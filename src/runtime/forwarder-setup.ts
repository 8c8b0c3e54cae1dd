// The forwarder and the session limits built from one Config: shared by the main thread (agent.ts) and the
// session workers (session-worker.ts), so a session is served the same way whichever thread runs it.
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { Keyring } from '../crypto/keyring.ts';
import type { DecryptScheduler } from '../crypto/decrypt-scheduler.ts';
import { withholdSecretValues } from '../crypto/secret-ciphertexts.ts';
import type { LogSink } from '../http/log-sink.ts';
import type { BufferedBodiesLike, DecryptStage } from '../http/stages/decrypt.ts';
import type { ExchangeFacts } from '../ops/metrics.ts';
import type { Forwarder } from '../responder/forwarder.ts';
import type { Limits } from '../responder/limits.ts';
import { createRawForwarder } from '../responder/raw-forwarder.ts';

/**
 * HTTP mode answers a silent app itself (504 JSON after upstream_timeout_ms); the session's whole-response
 * timer is only the backstop, so it runs this much longer — at the same value it fired first and the client
 * got a bare Error instead of the 504.
 */
const HTTP_DATA_TIMEOUT_MARGIN_MS = 5_000;

export function limitsFrom(config: Config): Partial<Limits> {
  const l = config.limits;
  const upstream = config.app.upstream_timeout_ms;
  return {
    maxSessions: l.max_sessions,
    maxInFlight: l.max_in_flight,
    handshakeTimeoutMs: l.handshake_timeout_ms,
    idleTimeoutMs: l.idle_timeout_ms,
    maxSessionsPerClient: l.max_sessions_per_client,
    writeStallTimeoutMs: l.write_stall_timeout_ms,
    maxQueuedBytes: l.max_queued_bytes,
    maxConcurrentHandshakes: l.max_concurrent_handshakes,
    maxQueuedHandshakes: l.max_queued_handshakes,
    lingerTimeoutMs: l.linger_timeout_ms,
    lingerTimeMs: l.linger_time_ms,
    dataResponseTimeoutMs: config.mode === 'http' ? upstream + HTTP_DATA_TIMEOUT_MARGIN_MS : upstream,
  };
}

/** What the forwarder reports to the metrics (AgentMetrics, or a session worker's recorder). */
export interface ForwarderObserver {
  observeExchange(ex: ExchangeFacts): void;
  rawRequest(kind: 'data' | 'stream'): void;
}

export interface ForwarderSetup {
  config: Config;
  logger: Logger;
  keyring: Keyring;
  decryptScheduler: DecryptScheduler;
  observer: ForwarderObserver;
  /** Transaction records in HTTP mode (default: dropped). */
  trxSink?: LogSink;
  /** Replaces the ev: decryption stage (tests, embedders). */
  decrypt?: DecryptStage;
  /** api_key_auth: hashes used instead of [api_key_auth] keys. */
  apiKeyHashes?: string[];
  /** False in a session worker: only the main thread probes the app on a timer. Default true. */
  periodicHealthcheck?: boolean;
  /** With session threads: the process-wide budget of buffered request bodies (SharedAdmission's). */
  bufferedBodies?: BufferedBodiesLike;
}

/** Raw mode: counts each Data request and stream handed to the app (the forwarder itself is unchanged). */
function countedRaw(inner: Forwarder, observer: ForwarderObserver): Forwarder {
  const counted = Object.create(inner) as Forwarder;
  counted.connect = (ctx) => {
    observer.rawRequest(ctx.kind);
    return inner.connect(ctx);
  };
  return counted;
}

/**
 * The forwarder for `s.config.mode`. Async: HTTP mode's (src/http/, which loads node:http) is imported only then,
 * so a raw-mode session thread never loads Node's HTTP modules (a thread holds what it loaded for its life).
 */
export async function createForwarder(s: ForwarderSetup): Promise<Forwarder> {
  const c = s.config;
  // [secrets] values are the app's, never a client's: from here on, no request, local API call or decrypt pool
  // worker decrypts them with this keyring (secret-ciphertexts.ts). Here because both the main thread and each
  // session worker build their forwarder from the Config, before they serve anything.
  withholdSecretValues(s.keyring, Object.values(c.secrets));
  if (c.mode === 'raw') {
    return countedRaw(createRawForwarder({ appPort: c.app.port, startupGraceMs: c.app.startup_grace_ms, forwardProxyProtocol: c.forward_proxy_protocol }), s.observer);
  }
  const { createHttpModeForwarder } = await import('./http-forwarder-setup.ts');
  return createHttpModeForwarder(s);
}
