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
import type { DialerConnect } from '../egress/flow-client.ts';
import { startEgress, type EgressService } from '../egress/service.ts';
import { devKeySource, encryptedFileKeySource, loadKeyring, type Keyring, type KeySource } from '../crypto/keyring.ts';
import { kmsKeySource, type KmsKeySourceOptions } from '../crypto/kms-keyring.ts';
import { wipeEcdhCache } from '../crypto/ecdh-cache.ts';
import type { HttpForwarder } from '../http/forwarder.ts';
import { createForwarder, limitsFrom } from './forwarder-setup.ts';
import type { LogSink } from '../http/log-sink.ts';
import type { DecryptStage } from '../http/stages/decrypt.ts';
import { DecryptScheduler } from '../crypto/decrypt-scheduler.ts';
import { DecryptPool } from '../crypto/decrypt-pool.ts';
import { startMemoryTrim } from './memory-trim.ts';
import { startSessionWorkers, type SessionWorkers } from './session-workers.ts';
import { SharedAdmission } from '../responder/shared-admission.ts';
import { resolveLimits } from '../responder/limits.ts';
import { nativeAvailable } from '../transport/native.ts';
import { availableParallelism } from 'node:os';
import type { ControlHandler } from '../responder/control.ts';
import type { Forwarder } from '../responder/forwarder.ts';
import { startAgent, type Agent, type ListenTarget } from '../responder/server.ts';
import type { SessionSummary } from '../responder/session.ts';
import { listenVsock } from '../transport/vsock.ts';
import { listenTcp } from '../transport/tcp.ts';
import { listenUnix } from '../transport/unix.ts';
import type { Listener, ListenOptions } from '../transport/types.ts';
import { AppHealthMonitor } from '../http/stages/health.ts';
import { ClockChannelHub } from '../ops/clock-channel.ts';
import { ClockMonitor, type ClockStepper } from '../ops/clock.ts';
import type { AgentPhase, AppSupervision } from '../ops/health.ts';
import { AgentMetrics, setCurrentMetrics } from '../ops/metrics.ts';
import { startOpsServer, type OpsServer } from '../ops/ops-server.ts';
import { AGENT_VERSION } from './nsm.ts';
import { fromBase64 } from '../util/bytes.ts';
import { RuntimeError } from './errors.ts';
import { throwIfBootAborted, unlessBootAborted } from './boot-signals.ts';
// TLS ingress and ACME: imported when configured (they load node:tls, which an agent without them never needs).
import type { TlsIngress } from '../ingress/tls-ingress.ts';
import type { AcmeCertificate } from '../ingress/acme-certificate.ts';

export type RuntimeListen =
  | { kind: 'vsock' }
  | { kind: 'tcp'; host: '127.0.0.1'; publicPort: number; controlPort: number; /** The ops port (default 0: pick). */ opsPort?: number; /** TLS ingress port (default 0: pick). */ tlsPort?: number }
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
  /** keyring.source = "kms": credentials (default: the AWS chain), extra CA roots, retry policy and per-attempt deadline (tests, the local stack). */
  kms?: Pick<KmsKeySourceOptions, 'credentials' | 'extraCa' | 'attempts' | 'backoffMs' | 'requestTimeoutMs'>;
  /** api_key_auth: SHA-256 hex hashes used instead of [api_key_auth] keys (the local stack's development key). */
  apiKeyHashes?: string[];
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
  /** [clock] correct = true steps the clock through this (only `enclave-agent run` gives one: the addon). */
  clockStepper?: ClockStepper;
  /** [log] sink = "vsock": the log stream's counters, for the metrics. */
  logStream?: () => { dropped: number; queuedBytes: number };
  /** Node's process metrics in /metrics (default true). */
  processMetrics?: boolean;
  /**
   * [egress]: where flows go (the host dialer: vsock CID 3 in an enclave, TCP in the local stack). Egress
   * starts when given and [egress] enabled = true (or `always`: the local stack's deny-all proxy when disabled).
   */
  egress?: { dialer: DialerConnect; proxyPort?: number; installRules?: boolean; always?: boolean };
  /** [ingress.acme]: extra roots for the CA's HTTPS endpoint, acme-client's first poll wait, the renewal clock (tests: Pebble). */
  acme?: { extraCa?: string[]; pollMinMs?: number; now?: () => number };
  /** TLS ingress: the attested certificate's clock (tests move it to see rotation; default Date.now). */
  ingress?: { now?: () => number };
  /** A stop signal during boot (boot-signals.ts): what was started is closed and RUNTIME_ABORTED thrown. */
  abort?: AbortSignal;
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
  /** The egress proxy and, in transparent mode, the DNS stub and REDIRECT listener; null when egress is off. */
  readonly egress: EgressService | null;
  readonly keyring: Keyring;
  readonly forwarder: Forwarder;
  /** Sessions open on the public and the control channel. */
  sessionCount(): number;
  /** The ops port (GET /metrics, GET /health, the clock channel): "vsock:*:5009", "127.0.0.1:41235", ".../ops.sock". */
  readonly opsAddress: string;
  readonly opsPort: number | undefined;
  /** TLS ingress (tls_termination = true): "vsock:*:5443", "127.0.0.1:41236", ".../tls.sock"; null when off. */
  readonly tlsAddress: string | null;
  readonly tlsPort: number | undefined;
  readonly metrics: AgentMetrics;
  /** The supervisor's state for /health and its restart count for the metrics (`run`); without it /health goes by the probe alone. */
  superviseApp(state: () => AppSupervision | undefined, restarts: () => number): void;
  /**
   * Stops accepting on both channels, lets sessions finish what is in flight for up to `timeoutMs`, closes
   * the rest and the forwarder. The local API keeps serving (the app may still need it) until close().
   */
  drain(timeoutMs: number): Promise<void>;
  /** Closes everything that is still open (sessions at once, the API). Idempotent. */
  close(): Promise<void>;
}

function keySourceFor(opts: AgentRuntimeOptions, egress: EgressService | null, logger: Logger): KeySource {
  if (opts.keySource !== undefined) return opts.keySource;
  const k = opts.config.keyring;
  if (k.source === 'dev') return devKeySource(opts.stateDir);
  if (k.source === 'kms') {
    // With [egress] enabled (always, inside an enclave) KMS is reached through the explicit proxy: the policy
    // must allow kms.<region>.amazonaws.com:443 (or the endpoint's host).
    const proxyUrl = opts.config.egress.enabled && egress !== null ? new URL(egress.proxyUrl) : null;
    return kmsKeySource({
      file: k.file!,
      region: k.region!,
      endpoint: k.endpoint,
      nsm: opts.nsm,
      proxy: proxyUrl === null ? null : { host: proxyUrl.hostname, port: Number(proxyUrl.port) },
      ...opts.kms,
      onRetry: (attempt, reason) => logger.warn({ attempt, reason }, 'KMS Decrypt did not answer; retrying'),
    });
  }
  if (opts.unsealKey === undefined) {
    throw new RuntimeError('RUNTIME_KEYRING', `keyring.source = "sealed-file" needs an unseal key for ${k.path ?? '(no path)'}; none was given`);
  }
  return encryptedFileKeySource(k.path!, opts.unsealKey);
}

/** On close (after the app stopped): how long open egress flows may take to end before they are cut. */
const EGRESS_CLOSE_GRACE_MS = 1_000;

function opsListen(listen: RuntimeListen, config: Config): (o: ListenOptions) => Promise<Listener> {
  switch (listen.kind) {
    case 'vsock':
      return (o) => listenVsock({ port: config.listen.ops_port }, o);
    case 'tcp':
      return (o) => listenTcp({ host: listen.host, port: listen.opsPort ?? 0 }, o);
    case 'unix':
      return (o) => listenUnix({ path: path.join(listen.dir, 'ops.sock'), mode: 0o600 }, o);
  }
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

function tlsListen(listen: RuntimeListen, config: Config): (o: ListenOptions) => Promise<Listener> {
  switch (listen.kind) {
    case 'vsock':
      return (o) => listenVsock({ port: config.ingress.tls_port }, o);
    case 'tcp':
      return (o) => listenTcp({ host: listen.host, port: listen.tlsPort ?? 0 }, o);
    case 'unix':
      return (o) => listenUnix({ path: path.join(listen.dir, 'tls.sock'), mode: 0o600 }, o);
  }
}

/** [ingress.acme]: the domain's ACME certificate, its CA reached through the explicit egress proxy. */
async function acmeFor(opts: AgentRuntimeOptions, egress: EgressService | null, logger: Logger): Promise<AcmeCertificate | undefined> {
  const a = opts.config.ingress.acme;
  if (a === null) return undefined;
  if (egress === null || !opts.config.egress.enabled) {
    throw new RuntimeError('RUNTIME_BAD_OPTIONS', 'ingress.acme: the CA is reached through egress, which is not running ([egress] enabled = true and a host dialer are needed)');
  }
  const [{ routeAcmeThroughEgress }, { AcmeCertificate }] = await Promise.all([import('../ingress/acme-transport.ts'), import('../ingress/acme-certificate.ts')]);
  const proxy = new URL(egress.proxyUrl);
  const transport = routeAcmeThroughEgress({ proxy: { host: proxy.hostname, port: Number(proxy.port) }, ...(opts.acme?.extraCa === undefined ? {} : { extraCa: opts.acme.extraCa }) });
  return new AcmeCertificate({
    domain: a.domain,
    directoryUrl: a.directory,
    email: a.email,
    termsOfServiceAgreed: a.terms_of_service_agreed,
    retryBackoffMs: a.retry_backoff_ms,
    retryBackoffMaxMs: a.retry_backoff_max_ms,
    transport,
    ...(opts.acme?.pollMinMs === undefined ? {} : { pollMinMs: opts.acme.pollMinMs }),
    ...(opts.acme?.now === undefined ? {} : { now: opts.acme.now }),
    logger,
  });
}

/** Whether TLS ingress connections run on the session workers (workers ≥ 2, HTTP mode). */
function tlsOnWorkers(config: Config, workers: number): boolean {
  return workers > 1 && config.ingress.tls && config.mode === 'http';
}

/**
 * tls_termination = true: the attested TLS ingress on the HTTP forwarder (src/ingress/): on this thread, or
 * handed to the session workers (tls-handoff.ts) when they serve TLS.
 */
async function startIngress(
  opts: AgentRuntimeOptions,
  forwarder: Forwarder,
  egress: EgressService | null,
  logger: Logger,
  workers: { sessionWorkers: SessionWorkers; admission: SharedAdmission } | undefined,
): Promise<TlsIngress | null> {
  const c = opts.config;
  if (!c.ingress.tls) return null;
  if (!('attach' in forwarder)) throw new RuntimeError('RUNTIME_BAD_OPTIONS', 'tls_termination = true needs mode = "http"');
  const http = forwarder as HttpForwarder;
  const acme = await acmeFor(opts, egress, logger);
  // Imported here: the attested certificate is built with pkijs, which an agent without TLS ingress never loads.
  const { AttestedIdentity } = await import('../ingress/attested-identity.ts');
  const identity = new AttestedIdentity({ nsm: opts.nsm, host: c.ingress.host, ...(opts.ingress?.now === undefined ? {} : { now: opts.ingress.now }) });
  if (workers !== undefined && workers.sessionWorkers.tls) {
    const { startTlsHandoff } = await import('./tls-handoff.ts');
    return startTlsHandoff({ listen: tlsListen(opts.listen, c), identity, workers: workers.sessionWorkers, admission: workers.admission, handshakeTimeoutMs: c.limits.handshake_timeout_ms, ...(acme === undefined ? {} : { acme }), logger });
  }
  const { startTlsIngress } = await import('../ingress/tls-ingress.ts');
  return startTlsIngress({
    ...(acme === undefined ? {} : { acme }),
    listen: tlsListen(opts.listen, c),
    identity,
    attach: (socket, ctx) => http.attach(socket, ctx),
    acceptProxyProtocol: c.accept_proxy_protocol,
    handshakeTimeoutMs: c.limits.handshake_timeout_ms,
    ...ingressLimits(c),
    maxConnectionsPerClient: c.limits.max_sessions_per_client,
    logger,
  });
}

/** The TLS ingress's connection limits, from [limits] (process-wide with one thread or several). */
function ingressLimits(c: Config): { maxConnections: number; maxPendingHandshakes: number } {
  return { maxConnections: c.limits.max_sessions, maxPendingHandshakes: c.limits.max_queued_handshakes + c.limits.max_concurrent_handshakes };
}

export async function startAgentRuntime(opts: AgentRuntimeOptions): Promise<AgentRuntime> {
  const { config } = opts;
  const logger = opts.logger ?? pino({ enabled: false });
  const targets = listenTargets(opts.listen, config);
  if (config.api_key_auth.enabled && (opts.apiKeyHashes ?? config.api_key_auth.keys).length === 0) {
    throw new RuntimeError(
      'RUNTIME_NO_API_KEY',
      'api_key_auth = true but no API key is configured: replace it with [api_key_auth] keys = ["<SHA-256 hex of each key>"] (e.g. printf %s "$KEY" | sha256sum); refusing to serve without one',
    );
  }
  // Egress first: inside an enclave the KMS keyring reaches KMS through its explicit proxy.
  let egress: EgressService | null = null;
  const eg = opts.egress;
  if (eg !== undefined && (config.egress.enabled || eg.always === true)) {
    egress = await startEgress({
      egress: config.egress.enabled ? config.egress : { ...config.egress, mode: 'explicit', destinations: [] },
      dialer: eg.dialer,
      ...(eg.proxyPort === undefined ? {} : { proxyPort: eg.proxyPort }),
      ...(eg.installRules === undefined ? {} : { installRules: eg.installRules }),
      lingerTimeoutMs: config.limits.linger_timeout_ms,
      lingerTimeMs: config.limits.linger_time_ms,
      logger,
      ...(opts.trxSink === undefined ? {} : { trxSink: opts.trxSink }),
    });
  }
  let keyring: Keyring;
  try {
    throwIfBootAborted(opts.abort);
    keyring = await unlessBootAborted(loadKeyring(keySourceFor(opts, egress, logger)), opts.abort);
  } catch (err) {
    await egress?.close().catch(() => {});
    throw err;
  }
  const attestationKey = keyring.attestationPublicKey();
  const controlKey = config.control.public_key === null ? undefined : fromBase64(config.control.public_key);

  // One budget for all ev: work (HTTP mode and the local API share the event loop it protects).
  // Bodies are decrypted in worker threads (one per CPU, started on first use), off the sessions' event loop.
  const decryptPool = new DecryptPool(keyring);
  const workers = sessionThreads(config, opts);
  // With session workers, the limits every session shares live in shared memory (exact across threads).
  const tlsWorkers = tlsOnWorkers(config, workers);
  const admission =
    workers > 1
      ? SharedAdmission.create({
          limits: resolveLimits(limitsFrom(config)),
          workers,
          maxConcurrentDecrypts: config.limits.max_concurrent_decrypts,
          ...(tlsWorkers ? { tls: ingressLimits(config) } : {}),
          maxBufferedBodies: config.limits.max_buffered_bodies_bytes,
        })
      : undefined;
  const decryptScheduler = new DecryptScheduler({ maxConcurrent: config.limits.max_concurrent_decrypts, pool: decryptPool, ...(admission === undefined ? {} : { slots: admission.decryptSlots }) });
  const metrics = new AgentMetrics({ mode: config.mode, version: AGENT_VERSION, processMetrics: opts.processMetrics ?? true });
  const forwarder = await createForwarder({
    config,
    logger,
    keyring,
    decryptScheduler,
    observer: metrics,
    ...(admission === undefined ? {} : { bufferedBodies: admission.bufferedBodies }),
    ...(opts.trxSink === undefined ? {} : { trxSink: opts.trxSink }),
    ...(opts.decrypt === undefined ? {} : { decrypt: opts.decrypt }),
    ...(opts.apiKeyHashes === undefined ? {} : { apiKeyHashes: opts.apiKeyHashes }),
  });
  // The sessions' drain closes the forwarder when the last session is done; TLS connections share it and may
  // still be answering then: it closes once the TLS ingress has drained too.
  let ingressDrained: Promise<void> | undefined;
  const sessionsForwarder = Object.create(forwarder) as Forwarder;
  sessionsForwarder.close = async () => {
    await ingressDrained;
    await forwarder.close?.();
  };
  let api: ApiServer | undefined;
  let agent: Agent | undefined;
  let ingress: TlsIngress | null = null;
  let sessionWorkers: SessionWorkers | undefined;
  try {
    if (config.api.enabled) {
      api = await startApiServer({ keyring, nsm: opts.nsm, port: opts.apiPort ?? config.api.port, maxBodyBytes: config.api.max_body_bytes, maxConnections: config.api.max_connections, lingerTimeoutMs: config.limits.linger_timeout_ms, lingerTimeMs: config.limits.linger_time_ms, maxDecryptFields: config.limits.max_decrypt_fields, decryptScheduler, logger, onRequest: (p, status) => metrics.apiRequest(p, status) });
    }
    if (admission !== undefined) {
      sessionWorkers = await startSessionWorkers({
        count: workers,
        config,
        keyring,
        nsm: opts.nsm,
        logger,
        ...(opts.trxSink === undefined ? {} : { trxSink: opts.trxSink }),
        metrics,
        ...(opts.onSessionClosed === undefined ? {} : { onSessionClosed: opts.onSessionClosed }),
        admission,
        decryptPool,
        attestationKey,
        ...(opts.features === undefined ? {} : { features: opts.features }),
        ...(opts.apiKeyHashes === undefined ? {} : { apiKeyHashes: opts.apiKeyHashes }),
        ...(tlsWorkers ? { tls: true } : {}),
      });
      metrics.beforeScrape = sessionWorkers.flushMetrics;
    }
    agent = await startAgent({
      ...(sessionWorkers === undefined || admission === undefined ? {} : { publicResponder: sessionWorkers, controlNonce: admission.controlNonce, outputBudget: admission.budget }),
      listen: targets.public,
      controlListen: targets.control,
      nsm: opts.nsm,
      forwarder: sessionsForwarder,
      limits: limitsFrom(config),
      acceptProxyProtocol: config.accept_proxy_protocol,
      attestationPublicKey: () => attestationKey,
      ...(controlKey === undefined ? {} : { controlPublicKey: controlKey }),
      ...(opts.controlHandler === undefined ? {} : { controlHandler: opts.controlHandler }),
      ...(opts.features === undefined ? {} : { features: opts.features }),
      onSessionClosed: opts.onSessionClosed === undefined ? metrics.sessionClosed : (s) => (metrics.sessionClosed(s), opts.onSessionClosed!(s)),
      logger,
    });
    ingress = await startIngress(opts, forwarder, egress, logger, sessionWorkers === undefined || admission === undefined ? undefined : { sessionWorkers, admission });
  } catch (err) {
    await agent?.close().catch(() => {});
    await sessionWorkers?.close().catch(() => {});
    await egress?.close().catch(() => {});
    await api?.close().catch(() => {});
    await forwarder.close?.().catch(() => {});
    throw err;
  }

  const a = agent;
  const control = a.control!;
  let drained: Promise<void> | undefined;
  let closed: Promise<void> | undefined;

  // The ops port: metrics, health and the clock channel, for the host only (src/ops/).
  let phase: AgentPhase = 'ready';
  let supervision: (() => AppSupervision | undefined) | undefined;
  const probe = 'health' in forwarder ? (forwarder.health as AppHealthMonitor) : rawModeProbe(config, logger);
  probe.start();
  // Handshake admission's live counters (src/responder/admission.ts), when the responder has them.
  const waiting = (r: unknown): number | undefined => (r as { counters?: { handshakesWaiting?: number } }).counters?.handshakesWaiting;
  // One output budget is shared by both responders (startAgent): the public one's figure is the total.
  const queued = (r: unknown): number | undefined => (r as { counters?: { queuedBytes?: number } }).counters?.queuedBytes;
  const stalls = (r: unknown): number => (r as { counters?: { streamStalls?: number } }).counters?.streamStalls ?? 0;
  metrics.sources = {
    sessionsOpen: () => ({ public: a.public.responder.sessionCount, control: control.responder.sessionCount }),
    refusedConnections: () => a.public.responder.refusedCount + control.responder.refusedCount,
    handshakesQueued: () => (waiting(a.public.responder) ?? 0) + (waiting(control.responder) ?? 0),
    outputQueuedBytes: () => queued(a.public.responder) ?? 0,
    streamAppStalls: () => stalls(a.public.responder) + stalls(control.responder),
    appUp: () => probe.current().status,
    ...(opts.logStream === undefined ? {} : { logStream: opts.logStream }),
    ...(sessionWorkers === undefined ? {} : { workerLogDropped: () => sessionWorkers!.droppedLogLines }),
  };
  const clockHub = new ClockChannelHub(() => void clock.sampleNow());
  const clock = new ClockMonitor({ hub: clockHub, config: config.clock, metrics, logger, ...(opts.clockStepper === undefined ? {} : { stepper: opts.clockStepper }) });
  let ops: OpsServer;
  try {
    ops = await startOpsServer({
      listen: opsListen(opts.listen, config),
      metrics,
      health: { phase: () => phase, startedAt: Date.now(), probe, supervision: () => supervision?.() },
      clock: clockHub,
      logger,
    });
  } catch (err) {
    await ingress?.close().catch(() => {});
    await a.close().catch(() => {});
    await egress?.close().catch(() => {});
    await api?.close().catch(() => {});
    await forwarder.close?.().catch(() => {});
    await probe.close();
    throw err;
  }
  clock.start();
  const memoryTrim = startMemoryTrim(sessionWorkers === undefined ? {} : { threads: () => sessionWorkers.loopUtilization });
  setCurrentMetrics(metrics);
  const ev = config.evervault;
  if (Object.values(ev).some((v) => v !== null && (typeof v !== 'object' || Object.values(v).some((x) => x !== null)))) {
    logger.debug({ evervault: ev }, 'enclave.toml: Evervault keys kept as information');
  }
  logger.info(
    { public: a.public.listener.address, control: control.listener.address, tls: ingress?.address ?? null, ops: ops.address, api: api === undefined ? null : `127.0.0.1:${api.port}`, mode: config.mode, keyIds: keyring.keyIds },
    'runtime started',
  );

  return {
    publicAddress: a.public.listener.address,
    controlAddress: control.listener.address,
    publicPort: a.public.listener.port,
    controlPort: control.listener.port,
    apiPort: api?.port ?? null,
    egress,
    keyring,
    forwarder,
    sessionCount: () => a.public.responder.sessionCount + control.responder.sessionCount,
    opsAddress: ops.address,
    opsPort: ops.port,
    tlsAddress: ingress?.address ?? null,
    tlsPort: ingress?.port,
    metrics,
    superviseApp(state, restarts) {
      supervision = state;
      metrics.sources.appRestarts = restarts;
    },
    drain(timeoutMs) {
      // /health answers 503 from here on; the ops port itself stays up until close().
      phase = 'draining';
      metrics.draining(true);
      ingressDrained ??= ingress?.drain(timeoutMs);
      drained ??= Promise.all([ingressDrained, a.drain(timeoutMs)]).then(() => ingress?.close());
      return drained;
    },
    close() {
      closed ??= (async () => {
        phase = 'draining';
        clock.stop();
        memoryTrim?.stop();
        await (drained ?? Promise.all([ingress?.close(), a.close()]));
        // Egress served the app through the drain; the app is stopped now: let its last flows end, cut the rest.
        await egress?.drain(EGRESS_CLOSE_GRACE_MS);
        await api?.close();
        await decryptPool.close();
        wipeEcdhCache(keyring); // the HTTP stage's key agreements (the local API's close wiped them too, if it ran)
        await ops.close();
        await probe.close();
        setCurrentMetrics(null);
      })();
      return closed;
    },
  };
}

/**
 * [limits] workers, resolved: as set, or the CPU count when not set. Handing connections to other threads
 * needs the native addon; without it an unset value means 1, a set value > 1 is refused.
 */
function sessionThreads(config: Config, opts: AgentRuntimeOptions): number {
  const set = config.limits.workers;
  const n = set ?? (nativeAvailable() && opts.decrypt === undefined ? availableParallelism() : 1);
  if (n > 1 && !nativeAvailable()) {
    throw new RuntimeError('RUNTIME_BAD_OPTIONS', `limits.workers = ${n}: handing connections to session threads needs the native addon, which is not built here; set workers = 1`);
  }
  if (n > 1 && opts.decrypt !== undefined) {
    throw new RuntimeError('RUNTIME_BAD_OPTIONS', `limits.workers = ${n}: a replacement decrypt stage runs on the main thread only; set workers = 1`);
  }
  return n;
}

/** Raw mode has no HTTP forwarder (and so no health monitor): the ops /health probes the app the same way. */
function rawModeProbe(config: Config, logger: Logger): AppHealthMonitor {
  const hc = config.healthcheck;
  return new AppHealthMonitor({
    host: '127.0.0.1',
    port: hc?.port ?? config.app.port,
    ...(hc === null ? {} : { path: hc.path, intervalMs: hc.interval_ms }),
    logger,
  });
}
