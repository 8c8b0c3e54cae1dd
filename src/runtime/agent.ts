// The runtime assembly, shared by `enclave-agent run` (inside the enclave: vsock, /dev/nsm) and
// `enclave-agent start` (the local stack: TCP, the NSM simulator). From one validated Config it wires:
//   keyring (dev file or sealed blob)  → bound into every attestation document's public_key
//   forwarder by config.mode           → http: the in-process HTTP pipeline; raw: bytes to the app's port
//   public + control responders        → on vsock ports / TCP ports / Unix sockets
//   the 127.0.0.1:<api.port> local API → encrypt/decrypt/attestation for the app
// It does not start the app (supervisor.ts) nor handle signals (drain.ts).
import path from 'node:path';
import pino, { type Logger } from 'pino';
import type { Nsm } from '../attestation/nsm.ts';
import { startApiServer, type ApiServer } from '../api/server.ts';
import type { Config } from '../config.ts';
import { devKeySource, encryptedFileKeySource, loadKeyring, type Keyring, type KeySource } from '../crypto/keyring.ts';
import { createHttpForwarder } from '../http/forwarder.ts';
import type { LogSink } from '../http/log-sink.ts';
import type { DecryptStage } from '../http/stages/decrypt.ts';
import { createDecryptStage } from '../http/stages/decrypt-ev.ts';
import { DecryptScheduler } from '../crypto/decrypt-scheduler.ts';
import type { ControlHandler } from '../responder/control.ts';
import type { Forwarder } from '../responder/forwarder.ts';
import type { Limits } from '../responder/limits.ts';
import { createRawForwarder } from '../responder/raw-forwarder.ts';
import { startAgent, type Agent, type ListenTarget } from '../responder/server.ts';
import type { SessionSummary } from '../responder/session.ts';
import { listenVsock } from '../transport/vsock.ts';
import { fromBase64 } from '../util/bytes.ts';
import { RuntimeError } from './errors.ts';

export type RuntimeListen =
  | { kind: 'vsock' }
  | { kind: 'tcp'; host: '127.0.0.1'; publicPort: number; controlPort: number }
  | { kind: 'unix'; dir: string };

export interface AgentRuntimeOptions {
  config: Config;
  /** vsock: config.listen ports on any CID. tcp: 127.0.0.1 ports (0 = pick). unix: <dir>/public.sock, <dir>/control.sock (0600). */
  listen: RuntimeListen;
  nsm: Nsm;
  /** Development keys (keys.json) live here. */
  stateDir: string;
  /** Operational log (default: disabled). */
  logger?: Logger;
  /** Transaction records in HTTP mode (default: dropped). */
  trxSink?: LogSink;
  /** Overrides config.keyring (tests, embedders, KMS later). */
  keySource?: KeySource;
  /** keyring.source = "sealed-file": the 32-byte key that opens keyring.path. */
  unsealKey?: Uint8Array;
  /** Overrides config.api.port (0 picks a free port). */
  apiPort?: number;
  /** Replaces HTTP mode's ev: decryption stage (default: createDecryptStage(keyring), ENCRYPTION.md §3). */
  decrypt?: DecryptStage;
  /** Executes verified Control commands on the control channel. */
  controlHandler?: ControlHandler;
  /** Attestation.features (default the responder's: ['bstr']). */
  features?: string[];
  /** Metrics/tests: after each session. */
  onSessionClosed?: (summary: SessionSummary) => void;
}

export interface AgentRuntime {
  /** "vsock:*:5000", "127.0.0.1:41234", "/run/agent/public.sock". */
  readonly publicAddress: string;
  readonly controlAddress: string;
  /** TCP/vsock: the bound ports. */
  readonly publicPort: number | undefined;
  readonly controlPort: number | undefined;
  /** The local API's port, null when [api] enabled = false. */
  readonly apiPort: number | null;
  readonly keyring: Keyring;
  readonly forwarder: Forwarder;
  /** Sessions open on the public and the control channel. */
  sessionCount(): number;
  /**
   * Stops accepting on both channels, lets sessions finish what is in flight for up to `timeoutMs`, closes
   * the rest and the forwarder. The local API keeps serving (the app may still need it) until close().
   */
  drain(timeoutMs: number): Promise<void>;
  /** Closes everything that is still open (sessions at once, the API). Idempotent. */
  close(): Promise<void>;
}

function keySourceFor(opts: AgentRuntimeOptions): KeySource {
  if (opts.keySource !== undefined) return opts.keySource;
  const k = opts.config.keyring;
  if (k.source === 'dev') return devKeySource(opts.stateDir);
  if (opts.unsealKey === undefined) {
    throw new RuntimeError('RUNTIME_KEYRING', `keyring.source = "sealed-file" needs an unseal key for ${k.path ?? '(no path)'}; none was given`);
  }
  return encryptedFileKeySource(k.path!, opts.unsealKey);
}

/**
 * HTTP mode answers a silent app itself (504 JSON after upstream_timeout_ms); the session's whole-response
 * timer is only the backstop, so it runs this much longer — at the same value it fired first and the client
 * got a bare Error instead of the 504.
 */
const HTTP_DATA_TIMEOUT_MARGIN_MS = 5_000;

function limitsFrom(config: Config): Partial<Limits> {
  const l = config.limits;
  const upstream = config.app.upstream_timeout_ms;
  return {
    maxSessions: l.max_sessions,
    maxInFlight: l.max_in_flight,
    handshakeTimeoutMs: l.handshake_timeout_ms,
    idleTimeoutMs: l.idle_timeout_ms,
    dataResponseTimeoutMs: config.mode === 'http' ? upstream + HTTP_DATA_TIMEOUT_MARGIN_MS : upstream,
  };
}

function listenTargets(listen: RuntimeListen, config: Config): { public: ListenTarget; control: ListenTarget } {
  switch (listen.kind) {
    case 'vsock':
      return {
        public: (o) => listenVsock({ port: config.listen.public_port }, o),
        control: (o) => listenVsock({ port: config.listen.control_port }, o),
      };
    case 'tcp':
      if (listen.host !== '127.0.0.1') throw new RuntimeError('RUNTIME_BAD_OPTIONS', `listen.host: only 127.0.0.1 stands in for vsock, found ${String(listen.host)}`);
      return { public: { host: listen.host, port: listen.publicPort }, control: { host: listen.host, port: listen.controlPort } };
    case 'unix':
      return { public: { path: path.join(listen.dir, 'public.sock'), mode: 0o600 }, control: { path: path.join(listen.dir, 'control.sock'), mode: 0o600 } };
  }
}

function createForwarder(opts: AgentRuntimeOptions, logger: Logger, keyring: Keyring, decryptScheduler: DecryptScheduler): Forwarder {
  const c = opts.config;
  if (c.mode === 'raw') {
    return createRawForwarder({ appPort: c.app.port, startupGraceMs: c.app.startup_grace_ms, forwardProxyProtocol: c.forward_proxy_protocol });
  }
  const hc = c.healthcheck;
  return createHttpForwarder({
    appPort: c.app.port,
    trxLogging: c.trx_logging,
    trustedHeaders: c.trusted_headers,
    maxBufferedBodyBytes: c.limits.max_buffered_body_bytes,
    maxRequestBodyBytes: c.limits.max_request_bytes,
    upstreamTimeoutMs: c.app.upstream_timeout_ms,
    appStartupGraceMs: c.app.startup_grace_ms,
    logSink: opts.trxSink ?? { write() {}, async close() {} },
    logger,
    ...(hc === null ? {} : { healthcheck: { path: hc.path, ...(hc.port === null ? {} : { port: hc.port }), intervalMs: hc.interval_ms } }),
    decrypt: opts.decrypt ?? createDecryptStage(keyring, { maxFields: c.limits.max_decrypt_fields, scheduler: decryptScheduler, logger }),
  });
}

export async function startAgentRuntime(opts: AgentRuntimeOptions): Promise<AgentRuntime> {
  const { config } = opts;
  const logger = opts.logger ?? pino({ enabled: false });
  const targets = listenTargets(opts.listen, config);
  const keyring = await loadKeyring(keySourceFor(opts));
  const attestationKey = keyring.attestationPublicKey();
  const controlKey = config.control.public_key === null ? undefined : fromBase64(config.control.public_key);

  // One budget for all ev: work (HTTP mode and the local API share the event loop it protects).
  const decryptScheduler = new DecryptScheduler({ maxConcurrent: config.limits.max_concurrent_decrypts });
  const forwarder = createForwarder(opts, logger, keyring, decryptScheduler);
  let api: ApiServer | undefined;
  let agent: Agent | undefined;
  try {
    if (config.api.enabled) {
      api = await startApiServer({ keyring, nsm: opts.nsm, port: opts.apiPort ?? config.api.port, maxBodyBytes: config.api.max_body_bytes, maxDecryptFields: config.limits.max_decrypt_fields, decryptScheduler, logger });
    }
    agent = await startAgent({
      listen: targets.public,
      controlListen: targets.control,
      nsm: opts.nsm,
      forwarder,
      limits: limitsFrom(config),
      acceptProxyProtocol: config.accept_proxy_protocol,
      attestationPublicKey: () => attestationKey,
      ...(controlKey === undefined ? {} : { controlPublicKey: controlKey }),
      ...(opts.controlHandler === undefined ? {} : { controlHandler: opts.controlHandler }),
      ...(opts.features === undefined ? {} : { features: opts.features }),
      ...(opts.onSessionClosed === undefined ? {} : { onSessionClosed: opts.onSessionClosed }),
      logger,
    });
  } catch (err) {
    await api?.close().catch(() => {});
    await forwarder.close?.().catch(() => {});
    throw err;
  }

  const a = agent;
  const control = a.control!;
  let drained: Promise<void> | undefined;
  let closed: Promise<void> | undefined;
  logger.info(
    { public: a.public.listener.address, control: control.listener.address, api: api === undefined ? null : `127.0.0.1:${api.port}`, mode: config.mode, keyIds: keyring.keyIds },
    'runtime started',
  );

  return {
    publicAddress: a.public.listener.address,
    controlAddress: control.listener.address,
    publicPort: a.public.listener.port,
    controlPort: control.listener.port,
    apiPort: api?.port ?? null,
    keyring,
    forwarder,
    sessionCount: () => a.public.responder.sessionCount + control.responder.sessionCount,
    drain(timeoutMs) {
      drained ??= a.drain(timeoutMs);
      return drained;
    },
    close() {
      closed ??= (async () => {
        await (drained ?? a.close());
        await api?.close();
      })();
      return closed;
    },
  };
}
