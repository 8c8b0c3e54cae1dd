// HTTP mode's forwarder built from a Config (forwarder-setup.ts imports this module only in HTTP mode: it loads
// src/http/, and with it node:http, which a raw-mode session thread has no use for).
import { createHttpForwarder } from '../http/forwarder.ts';
import { createDecryptStage, REFUSALS_MESSAGE } from '../http/stages/decrypt-ev.ts';
import type { Forwarder } from '../responder/forwarder.ts';
import { RateLimitedLog } from '../util/rate-limited-log.ts';
import type { ForwarderSetup } from './forwarder-setup.ts';

export function createHttpModeForwarder(s: ForwarderSetup): Forwarder {
  const c = s.config;
  const hc = c.healthcheck;
  // Refused ev: values are counted into one line per interval; close() writes the last interval's counts, as every
  // other refusal log's owner does at close (its timer is unref'd: a stopping thread or process would drop them).
  const refusalLog = s.decrypt === undefined ? new RateLimitedLog(s.logger, REFUSALS_MESSAGE) : undefined;
  const forwarder = createHttpForwarder({
    appPort: c.app.port,
    trxLogging: c.trx_logging,
    trustedHeaders: c.trusted_headers,
    maxBufferedBodyBytes: c.limits.max_buffered_body_bytes,
    maxBufferedBodiesBytes: c.limits.max_buffered_bodies_bytes,
    ...(s.bufferedBodies === undefined ? {} : { bufferedBodies: s.bufferedBodies }),
    maxRequestBodyBytes: c.limits.max_request_bytes,
    upstreamTimeoutMs: c.app.upstream_timeout_ms,
    lingerTimeoutMs: c.limits.linger_timeout_ms,
    lingerTimeMs: c.limits.linger_time_ms,
    appStartupGraceMs: c.app.startup_grace_ms,
    logSink: s.trxSink ?? { write() {}, async close() {} },
    logger: s.logger,
    ...(hc === null ? {} : { healthcheck: { path: hc.path, ...(hc.port === null ? {} : { port: hc.port }), intervalMs: hc.interval_ms, periodic: s.periodicHealthcheck !== false } }),
    decrypt: s.decrypt ?? createDecryptStage(s.keyring, { maxFields: c.limits.max_decrypt_fields, scheduler: s.decryptScheduler, logger: s.logger, refusalLog }),
    corsOrigin: c.attestation_cors.origin,
    ...(c.api_key_auth.enabled ? { apiKeyHashes: s.apiKeyHashes ?? c.api_key_auth.keys } : {}),
    observe: (ex) => s.observer.observeExchange(ex),
  });
  if (refusalLog === undefined) return forwarder;
  const close = forwarder.close.bind(forwarder);
  forwarder.close = () => close().finally(refusalLog.flush);
  return forwarder;
}
