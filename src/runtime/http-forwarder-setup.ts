// HTTP mode's forwarder built from a Config (forwarder-setup.ts imports this module only in HTTP mode: it loads
// src/http/, and with it node:http, which a raw-mode session thread has no use for).
import { createHttpForwarder } from '../http/forwarder.ts';
import { createDecryptStage } from '../http/stages/decrypt-ev.ts';
import type { Forwarder } from '../responder/forwarder.ts';
import type { ForwarderSetup } from './forwarder-setup.ts';

export function createHttpModeForwarder(s: ForwarderSetup): Forwarder {
  const c = s.config;
  const hc = c.healthcheck;
  return createHttpForwarder({
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
    decrypt: s.decrypt ?? createDecryptStage(s.keyring, { maxFields: c.limits.max_decrypt_fields, scheduler: s.decryptScheduler, logger: s.logger }),
    corsOrigin: c.attestation_cors.origin,
    ...(c.api_key_auth.enabled ? { apiKeyHashes: s.apiKeyHashes ?? c.api_key_auth.keys } : {}),
    observe: (ex) => s.observer.observeExchange(ex),
  });
}
