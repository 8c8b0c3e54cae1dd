/**
 * enclave.toml → one validated, typed Config. Every key is declared once in SCHEMA (type, default, bounds, doc);
 * unknown keys are errors naming the key, because a typo must never silently disable a security setting.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parse as parseToml, TomlError } from 'smol-toml';
import { AgentError } from './errors.ts';
import { EgressError } from './egress/errors.ts';
import { checkTransparentPorts, EgressPolicy, parseDestination } from './egress/policy.ts';
import { checkKmsSecrets, checkSecretEntry, SecretsError } from './crypto/secrets.ts';
import { didYouMean } from './util/suggest.ts';

export class ConfigError extends AgentError {}

export type Mode = 'http' | 'raw';
export type RestartPolicy = 'never' | 'on-failure' | 'always';

export interface Config {
  version: number;
  name: string;
  debug: boolean;
  mode: Mode;
  trx_logging: boolean;
  forward_proxy_protocol: boolean;
  accept_proxy_protocol: boolean;
  trusted_headers: string[];
  healthcheck: { path: string; port: number | null; interval_ms: number } | null;
  app: {
    port: number;
    command: string[];
    restart: RestartPolicy;
    startup_grace_ms: number;
    upstream_timeout_ms: number;
    /** After the app was sent its stop signal: SIGKILL its process group if it is still running after this long. */
    stop_timeout_ms: number;
    /** Delay before the first restart; doubles per consecutive failure up to restart_backoff_max_ms. */
    restart_backoff_ms: number;
    restart_backoff_max_ms: number;
    /** More than max_restarts restarts within restart_window_ms: give up and exit with the app's code. */
    max_restarts: number;
    restart_window_ms: number;
    /**
     * `run` starts the app in its sandbox (default true; native/src/die-with-parent.c): no way into the agent's
     * memory, descriptors or NSM, capabilities cut. false: the documented opt-out, the app runs with all the
     * agent's privileges (a root app can read the keys).
     */
    sandbox: boolean;
  };
  /** ops_port: the host-only ops channel (GET /metrics, GET /health, the clock channel; src/ops/). */
  listen: { public_port: number; control_port: number; ops_port: number; drain_timeout_ms: number };
  /** Drift against the host's clock (src/ops/clock.ts). The host controls this input: see README "Operating it". */
  clock: { interval_ms: number; warn_ms: number; correct: boolean; max_step_ms: number; allow_backwards: boolean };
  /** Access-Control-Allow-Origin of /.well-known/attestation (Evervault's [attestation_cors] origin). */
  attestation_cors: { origin: string };
  /** Written by Evervault's `ev enclave` CLI for its own tools; kept as information, logged once at debug. */
  evervault: {
    uuid: string | null;
    app_uuid: string | null;
    team_uuid: string | null;
    dockerfile: string | null;
    scaling: { desired_replicas: number | null };
    signing: { certPath: string | null; keyPath: string | null };
    runtime: { data_plane_version: string | null; installer_version: string | null };
    HashAlgorithm: string | null;
    signature: string | null;
  };
  api: { enabled: boolean; port: number; max_body_bytes: number; max_connections: number };
  /**
   * TLS ingress (src/ingress/): `tls` is Evervault's top-level `tls_termination`; tls_port is the vsock port in
   * `run` (the bridge relays a public TCP port to it); host is the default certificate's name.
   */
  ingress: { tls: boolean; tls_port: number; host: string; acme: AcmeConfig | null };
  /**
   * Evervault's `api_key_auth = true`, or the table `[api_key_auth] keys = ["<sha256 hex>", ...]` (which implies
   * enabled; TOML cannot hold both forms): requests need an `api-key` header whose SHA-256 is listed. Enabled
   * with no key: `run` refuses to boot, `start` generates a development key.
   */
  api_key_auth: { enabled: boolean; keys: string[] };
  limits: {
    max_sessions: number;
    max_in_flight: number;
    /** HTTP mode: largest request body forwarded (Content-Length or chunked); more → 413. Raw mode: unused. */
    max_request_bytes: number;
    max_buffered_body_bytes: number;
    /** HTTP mode: bytes of request bodies buffered at once, every request of every thread together; more → 503. */
    max_buffered_bodies_bytes: number;
    /** Most ev: values decrypted for one request (HTTP mode: headers and body; local API /decrypt) or encrypted by /encrypt; more → 413. */
    max_decrypt_fields: number;
    /** Most requests (HTTP mode and local API /encrypt, /decrypt) doing ev: work at once; more → 503 / 429. */
    max_concurrent_decrypts: number;
    handshake_timeout_ms: number;
    idle_timeout_ms: number;
    /** Sessions per client address (the bridge's PROXY v2 source), and apart TLS ingress connections; more are closed before any crypto. */
    max_sessions_per_client: number;
    /** Queued output toward a client that does not finish writing one message within this closes the session. */
    write_stall_timeout_ms: number;
    /** Encrypted output queued toward all clients together; past it new requests get Error. */
    max_queued_bytes: number;
    /**
     * Handshakes run per turn of an event loop (so per session thread, with [limits] workers); more wait in
     * the queue below.
     */
    max_concurrent_handshakes: number;
    /** Connections waiting for a handshake slot; more are closed before any crypto. */
    max_queued_handshakes: number;
    /**
     * Lingering close (src/transport/lingering-close.ts) of a connection the agent ends after its last answer —
     * TLS ingress (fast path and http.Server fallback), Noise sessions, and the refusals of the local API (past
     * [api] max_connections) and of the egress proxy: closed once no client byte came for linger_timeout_ms, and
     * linger_time_ms after the answer went out at the latest.
     */
    linger_timeout_ms: number;
    linger_time_ms: number;
    /**
     * Session threads: public-channel sessions are sharded across this many worker threads (the listener hands
     * each accepted connection to one); 1 runs them on the main thread. null (not set): the CPU count, or 1
     * where the native addon that hands connections over is not built (the runtime resolves it).
     */
    workers: number | null;
  };
  /** kms: the sealed-keyring file `keys seal` wrote (`file`), opened with KMS in `region` (optional `endpoint`, https). */
  keyring: { source: 'dev' | 'sealed-file' | 'kms'; path: string | null; file: string | null; region: string | null; endpoint: string | null };
  /** [secrets]: the app's environment variables, as ev: or KMS-sealed kms: values `run` decrypts once the keyring is open. */
  secrets: Readonly<Record<string, string>>;
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'; sink: 'stdout' | 'file' | 'vsock'; path: string | null; vsock_port: number };
  control: { public_key: string | null };
  attestation: { PCR0: string | null; PCR1: string | null; PCR2: string | null; PCR8: string | null; HashAlgorithm: string | null; signature: string | null };
  egress: {
    enabled: boolean;
    /** The allow-list (src/egress/policy.ts grammar), each entry validated at load. */
    destinations: string[];
    /** explicit: the HTTP(S)_PROXY on 127.0.0.1:proxy_port only; transparent: also iptables REDIRECT + DNS stub (root, in `run`). */
    mode: 'explicit' | 'transparent';
    proxy_port: number;
    transparent_port: number;
    /** The host dialer's vsock port on the parent (CID 3). */
    host_port: number;
    connect_timeout_ms: number;
    /** App connections the explicit proxy and the transparent listener set up at once (head, dial, SNI), together (src/egress/connection-slots.ts); more are refused. */
    max_proxy_connections: number;
    /** Egress flows with an open upstream at once, both listeners together (src/egress/connection-slots.ts); more are refused. */
    max_flows: number;
    /** A TLS flow to a name entry must carry that name as its SNI. */
    sni_check: boolean;
    /** The app may open vsock sockets itself (default false: its sandbox refuses them, so egress is its only way out). */
    app_vsock: boolean;
  };
}

/**
 * [ingress.acme]: a browser-trusted certificate for `domain` from an ACME CA (src/ingress/acme-certificate.ts),
 * served by TLS ingress to SNI = domain; every other SNI keeps the attested certificate. The CA is reached
 * through the egress proxy, so [egress] must allow the directory's host and port.
 */
export interface AcmeConfig {
  domain: string;
  /** The CA's directory URL (https), e.g. Let's Encrypt's https://acme-v02.api.letsencrypt.org/directory. */
  directory: string;
  /** The account's contact (mailto:), optional. */
  email: string | null;
  /** Sent as termsOfServiceAgreed when the account is created; Let's Encrypt refuses an account without it. */
  terms_of_service_agreed: boolean;
  /** After a failed attempt: wait this long, doubling per consecutive failure up to retry_backoff_max_ms. */
  retry_backoff_ms: number;
  retry_backoff_max_ms: number;
}

// ---- schema -------------------------------------------------------------------------------------------

type Field =
  | { kind: 'int'; default: number; min: number; max: number }
  | { kind: 'bool'; default: boolean }
  | { kind: 'string'; default: string | null; pattern?: RegExp; nonEmpty?: boolean }
  | { kind: 'enum'; default: string; values: readonly string[] }
  | { kind: 'strings'; default: string[]; pattern?: RegExp }
  | { kind: 'table'; fields: Schema }
  | { kind: 'custom'; default: unknown; parse: (value: unknown, key: string) => unknown };
type Schema = Record<string, Field>;

const int = (def: number, min: number, max: number): Field => ({ kind: 'int', default: def, min, max });
const bool = (def: boolean): Field => ({ kind: 'bool', default: def });
const str = (def: string | null, pattern?: RegExp): Field => ({ kind: 'string', default: def, pattern });
const oneOf = (def: string, values: readonly string[]): Field => ({ kind: 'enum', default: def, values });
const PORT_MAX = 65535;
const HEX48 = /^[0-9a-fA-F]{96}$/;
const SEC = 1000;
const MiB = 1024 * 1024;
const HOSTNAME = /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * What Evervault's `ev enclave init`/`build` writes (evervault-cli crates/ev-enclave/src/config.rs), so such a
 * file loads unchanged. Read at the top level, then moved: uuids, dockerfile, [scaling], [signing], [runtime]
 * into config.evervault (information for other tools); [service] port, [attestation_cors] origin and [acceptor]
 * onto the agent's own keys (applyEvervaultKeys); tls_termination onto ingress.tls (TLS ingress, src/ingress/);
 * api_key_auth stays (src/http/stages/api-key.ts; its keys come from [api_key_auth] keys, not from [secrets]).
 */
const EVERVAULT_SCHEMA: Schema = {
  uuid: str(null),
  app_uuid: str(null),
  team_uuid: str(null),
  dockerfile: str(null),
  tls_termination: bool(false),
  api_key_auth: { kind: 'custom', default: { enabled: false, keys: [] }, parse: parseApiKeyAuth },
  scaling: { kind: 'table', fields: { desired_replicas: { kind: 'custom', default: null, parse: (v, k) => readField(int(0, 0, 10_000), v, k) } } },
  signing: { kind: 'table', fields: { certPath: str(null), keyPath: str(null) } },
  runtime: { kind: 'table', fields: { data_plane_version: str(null), installer_version: str(null) } },
  service: { kind: 'table', fields: { port: { kind: 'custom', default: null, parse: (v, k) => readField(int(0, 1, PORT_MAX), v, k) } } },
  attestation_cors: { kind: 'table', fields: { origin: str('*', /^(\*|null|https?:\/\/[^\s/]+)$/) } },
  acceptor: {
    kind: 'table',
    fields: {
      max_concurrent_connections: { kind: 'custom', default: null, parse: (v, k) => readField(int(0, 1, 100_000), v, k) },
      max_concurrent_handshakes: { kind: 'custom', default: null, parse: (v, k) => readField(int(0, 1, 100_000), v, k) },
      /** Seconds, as Evervault's acceptor takes it. */
      handshake_timeout: { kind: 'custom', default: null, parse: (v, k) => readField(int(0, 1, 600), v, k) },
    },
  },
};

const SCHEMA: Schema = {
  version: int(1, 1, 1),
  name: { kind: 'string', default: 'enclave', nonEmpty: true, pattern: /^[A-Za-z0-9._-]{1,64}$/ },
  debug: bool(false),
  mode: oneOf('http', ['http', 'raw']),
  trx_logging: bool(true),
  forward_proxy_protocol: bool(false),
  accept_proxy_protocol: bool(false),
  trusted_headers: { kind: 'strings', default: [], pattern: /^[A-Za-z0-9!#$%&'*+.^_`|~-]+\*?$/ },
  healthcheck: { kind: 'custom', default: null, parse: parseHealthcheck },
  app: {
    kind: 'table',
    fields: {
      port: int(8008, 1, PORT_MAX),
      command: { kind: 'strings', default: [] },
      restart: oneOf('on-failure', ['never', 'on-failure', 'always']),
      startup_grace_ms: int(30 * SEC, 0, 600 * SEC),
      upstream_timeout_ms: int(60 * SEC, 100, 3600 * SEC),
      stop_timeout_ms: int(10 * SEC, 0, 600 * SEC),
      restart_backoff_ms: int(500, 0, 600 * SEC),
      restart_backoff_max_ms: int(30 * SEC, 0, 3600 * SEC),
      max_restarts: int(5, 0, 10_000),
      restart_window_ms: int(60 * SEC, 1 * SEC, 86_400 * SEC),
      sandbox: bool(true),
    },
  },
  listen: {
    kind: 'table',
    fields: { public_port: int(5000, 1, PORT_MAX), control_port: int(5007, 1, PORT_MAX), ops_port: int(5009, 1, PORT_MAX), drain_timeout_ms: int(30 * SEC, 0, 3600 * SEC) },
  },
  clock: {
    kind: 'table',
    fields: {
      interval_ms: int(60 * SEC, 1 * SEC, 86_400 * SEC),
      warn_ms: int(1 * SEC, 1, 3600 * SEC),
      correct: bool(false),
      max_step_ms: int(5 * SEC, 1, 3600 * SEC),
      allow_backwards: bool(false),
    },
  },
  ...EVERVAULT_SCHEMA,
  ingress: {
    kind: 'table',
    fields: { tls_port: int(5443, 1, PORT_MAX), host: { kind: 'string', default: 'localhost', pattern: HOSTNAME }, acme: { kind: 'custom', default: null, parse: parseAcme } },
  },
  api: { kind: 'table', fields: { enabled: bool(true), port: int(9999, 0, PORT_MAX), max_body_bytes: int(1 * MiB, 1024, 256 * MiB), max_connections: int(256, 1, 65536) } },
  limits: {
    kind: 'table',
    fields: {
      max_sessions: int(1024, 1, 100_000),
      max_in_flight: int(64, 1, 10_000),
      max_request_bytes: int(16 * MiB, 1024, 1024 * MiB),
      max_buffered_body_bytes: int(8 * MiB, 1024, 1024 * MiB),
      max_buffered_bodies_bytes: int(256 * MiB, 1024, 64 * 1024 * MiB),
      max_decrypt_fields: int(1024, 1, 1_000_000),
      max_concurrent_decrypts: int(16, 1, 10_000),
      handshake_timeout_ms: int(10 * SEC, 100, 600 * SEC),
      idle_timeout_ms: int(300 * SEC, 1 * SEC, 86_400 * SEC),
      max_sessions_per_client: int(64, 1, 100_000),
      write_stall_timeout_ms: int(30 * SEC, 100, 3600 * SEC),
      max_queued_bytes: int(256 * MiB, 1 * MiB, 64 * 1024 * MiB),
      max_concurrent_handshakes: int(4 * availableParallelism(), 1, 100_000),
      max_queued_handshakes: int(256, 0, 100_000),
      linger_timeout_ms: int(5 * SEC, 100, 600 * SEC),
      linger_time_ms: int(30 * SEC, 100, 3600 * SEC),
      workers: { kind: 'custom', default: null, parse: (v, k) => readField(int(1, 1, 64), v, k) },
    },
  },
  keyring: { kind: 'table', fields: { source: oneOf('dev', ['dev', 'sealed-file', 'kms']), path: str(null), file: str(null), region: str(null, /^[a-z]{2}(-[a-z]+)+-\d{1,2}$/), endpoint: str(null, /^https:\/\/[^\s/]+\/?$/) } },
  secrets: { kind: 'custom', default: Object.freeze({}), parse: parseSecrets },
  log: {
    kind: 'table',
    fields: {
      level: oneOf('info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace']),
      sink: oneOf('stdout', ['stdout', 'file', 'vsock']),
      path: str(null),
      vsock_port: int(5008, 1, 0xffffffff),
    },
  },
  control: { kind: 'table', fields: { public_key: str(null) } },
  attestation: {
    kind: 'table',
    // HashAlgorithm and signature: what `ev enclave build` writes next to the PCRs (information).
    fields: { PCR0: str(null, HEX48), PCR1: str(null, HEX48), PCR2: str(null, HEX48), PCR8: str(null, HEX48), HashAlgorithm: str(null), signature: str(null) },
  },
  egress: {
    kind: 'table',
    fields: {
      enabled: bool(false),
      destinations: { kind: 'custom', default: [], parse: parseDestinations },
      mode: oneOf('explicit', ['explicit', 'transparent']),
      proxy_port: int(3128, 1, PORT_MAX),
      transparent_port: int(15001, 1, PORT_MAX),
      host_port: int(8001, 1, 0xffffffff),
      connect_timeout_ms: int(10 * SEC, 100, 120 * SEC),
      max_proxy_connections: int(1024, 1, 100_000),
      max_flows: int(1024, 1, 100_000),
      sni_check: bool(false),
      app_vsock: bool(false),
    },
  },
};

function describe(value: unknown): string {
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return value instanceof Date ? 'a date' : 'a table';
  return `${typeof value} ${JSON.stringify(value)}`;
}

function bad(key: string, expected: string, value: unknown): never {
  throw new ConfigError('CONFIG_BAD_VALUE', `${key}: expected ${expected}, found ${describe(value)}`);
}

/** bad() for keys where an operator may have put a secret (an API key, a plaintext): the type only, never the value. */
function badSecretPlace(key: string, expected: string, value: unknown): never {
  const type = typeof value === 'object' ? describe(value) : `a ${typeof value}`;
  throw new ConfigError('CONFIG_BAD_VALUE', `${key}: expected ${expected}, found ${type} (value not shown)`);
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

/** [egress] destinations: an array of strings, each a valid entry; the error names the entry. */
function parseDestinations(value: unknown, key: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) bad(key, 'an array of strings', value);
  for (const entry of value as string[]) {
    try {
      parseDestination(entry);
    } catch (err) {
      if (err instanceof EgressError) throw new ConfigError('CONFIG_BAD_VALUE', err.message);
      throw err;
    }
  }
  return [...(value as string[])];
}

const ACME_SCHEMA: Schema = {
  // tls-alpn-01 validates one exact name: no wildcard.
  domain: { kind: 'string', default: null, pattern: HOSTNAME },
  directory: str(null, /^https:\/\/[^\s/?#]+(\/[^\s?#]*)?$/),
  email: str(null, /^[^\s@:]+@[^\s@]+$/),
  terms_of_service_agreed: bool(false),
  retry_backoff_ms: int(60 * SEC, 100, 3600 * SEC),
  retry_backoff_max_ms: int(3600 * SEC, 100, 86_400 * SEC),
};

/** [ingress.acme]: domain and directory required; the cross-table rules (TLS ingress, egress) are in configFromObject. */
function parseAcme(value: unknown, key: string): AcmeConfig {
  const acme = readTable(ACME_SCHEMA, value, key) as unknown as AcmeConfig;
  if (acme.domain === null) throw new ConfigError('CONFIG_BAD_VALUE', `${key}.domain: required (the operator's domain the certificate is for)`);
  if (acme.directory === null) throw new ConfigError('CONFIG_BAD_VALUE', `${key}.directory: required (the CA's ACME directory URL, https)`);
  if (acme.retry_backoff_max_ms < acme.retry_backoff_ms) {
    throw new ConfigError('CONFIG_BAD_VALUE', `${key}.retry_backoff_max_ms: must be at least ${key}.retry_backoff_ms (${acme.retry_backoff_ms}), found ${acme.retry_backoff_max_ms}`);
  }
  return { ...acme, domain: acme.domain.toLowerCase() };
}

/** [ingress.acme] needs TLS ingress, and egress allowing the directory's host:port (the CA is reached through it). */
function checkAcme(config: Config): void {
  const acme = config.ingress.acme;
  if (acme === null) return;
  if (!config.ingress.tls) throw new ConfigError('CONFIG_BAD_VALUE', 'ingress.acme: the certificate is served by TLS ingress; it needs tls_termination = true');
  const url = new URL(acme.directory);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = url.port === '' ? 443 : Number(url.port);
  const where = `${url.host}${url.port === '' ? ':443' : ''}`;
  if (!config.egress.enabled) {
    throw new ConfigError('CONFIG_BAD_VALUE', `ingress.acme.directory: the CA is reached through egress; set [egress] enabled = true with "${where}" in destinations`);
  }
  const policy = new EgressPolicy(config.egress.destinations);
  if (policy.matchName(host, port) === null && policy.matchIp(host, port) === null) {
    throw new ConfigError('CONFIG_BAD_VALUE', `ingress.acme.directory: ${where} is not allowed by egress.destinations; add "${where}"`);
  }
}

/** api_key_auth: true/false (Evervault), or a table { enabled = true, keys = [SHA-256 hex, ...] }. */
function parseApiKeyAuth(value: unknown, key: string): Config['api_key_auth'] {
  if (typeof value === 'boolean') return { enabled: value, keys: [] };
  // Never echo a value here: someone may have put a key itself where its hash or a boolean belongs.
  if (!isTable(value)) badSecretPlace(key, 'true, false or a table { keys = ["<sha256 hex>", ...] }', value);
  for (const k of Object.keys(value)) if (k !== 'enabled' && k !== 'keys') throw new ConfigError('CONFIG_UNKNOWN_KEY', `unknown key "${key}.${k}"`);
  if (value.enabled !== undefined && typeof value.enabled !== 'boolean') badSecretPlace(`${key}.enabled`, 'true or false', value.enabled);
  const enabled = readField(bool(true), value.enabled, `${key}.enabled`) as boolean;
  const keys = value.keys ?? [];
  if (!Array.isArray(keys)) badSecretPlace(`${key}.keys`, 'an array of SHA-256 hex strings', keys);
  keys.forEach((h, i) => {
    // Never echo the value: someone may have put a key itself here instead of its hash.
    if (typeof h !== 'string' || !/^[0-9a-fA-F]{64}$/.test(h)) {
      throw new ConfigError('CONFIG_BAD_VALUE', `${key}.keys[${i}]: expected the SHA-256 of a key as 64 hex digits (not the key itself; value not shown)`);
    }
  });
  return { enabled, keys: (keys as string[]).map((h) => h.toLowerCase()) };
}

/** [secrets] NAME = "ev:…": names checked, values well-formed ev: strings (never quoted in an error). */
function parseSecrets(value: unknown, key: string): Readonly<Record<string, string>> {
  if (!isTable(value)) badSecretPlace(key, 'a table of NAME = "ev:…" entries', value);
  const out: Record<string, string> = {};
  for (const [name, v] of Object.entries(value)) {
    try {
      out[name] = checkSecretEntry(name, v);
    } catch (err) {
      if (err instanceof SecretsError) throw new ConfigError('CONFIG_BAD_VALUE', err.message);
      throw err;
    }
  }
  return Object.freeze(out);
}

function parseHealthcheck(value: unknown, key: string): Config['healthcheck'] {
  const path = typeof value === 'string' ? value : isTable(value) ? value.path : undefined;
  if (typeof path !== 'string' || !path.startsWith('/')) bad(key, 'a path starting with "/" or { path, port }', value);
  if (isTable(value)) {
    const known = new Set(['path', 'port', 'interval_ms']);
    for (const k of Object.keys(value)) if (!known.has(k)) throw new ConfigError('CONFIG_UNKNOWN_KEY', `unknown key "${key}.${k}"`);
  }
  const sub = isTable(value) ? value : {};
  const port = sub.port === undefined ? null : (readField(int(0, 1, PORT_MAX), sub.port, `${key}.port`) as number);
  const interval = readField(int(10 * SEC, 100, 3600 * SEC), sub.interval_ms, `${key}.interval_ms`) as number;
  return { path, port, interval_ms: interval };
}

function readField(field: Field, value: unknown, key: string): unknown {
  if (field.kind === 'table') return readTable(field.fields, value === undefined ? {} : value, key);
  if (value === undefined) return field.kind === 'strings' ? [...field.default] : field.default;
  switch (field.kind) {
    case 'int':
      if (typeof value !== 'number' || !Number.isInteger(value)) bad(key, 'an integer', value);
      if (value < field.min || value > field.max) bad(key, `an integer in ${field.min}..${field.max}`, value);
      return value;
    case 'bool':
      if (typeof value !== 'boolean') bad(key, 'true or false', value);
      return value;
    case 'string':
      if (typeof value !== 'string') bad(key, 'a string', value);
      if (field.nonEmpty && value.length === 0) bad(key, 'a non-empty string', value);
      if (field.pattern && !field.pattern.test(value)) bad(key, `a string matching ${field.pattern}`, value);
      return value;
    case 'enum':
      if (typeof value !== 'string' || !field.values.includes(value)) bad(key, `one of ${field.values.map((v) => `"${v}"`).join(', ')}`, value);
      return value;
    case 'strings':
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) bad(key, 'an array of strings', value);
      for (const v of value as string[]) if (field.pattern && !field.pattern.test(v)) bad(`${key}[]`, `a string matching ${field.pattern}`, v);
      return [...(value as string[])];
    case 'custom':
      return field.parse(value, key);
  }
}

function readTable(schema: Schema, value: unknown, prefix: string): Record<string, unknown> {
  if (!isTable(value)) bad(prefix || '(root)', 'a table', value);
  for (const k of Object.keys(value)) {
    if (!(k in schema)) throw new ConfigError('CONFIG_UNKNOWN_KEY', `unknown key "${prefix ? `${prefix}.` : ''}${k}"${didYouMean(k, Object.keys(schema))}`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, field] of Object.entries(schema)) out[k] = readField(field, value[k], prefix ? `${prefix}.${k}` : k);
  return out;
}

// ---- public API ---------------------------------------------------------------------------------------

/** Where an Evervault key and the agent's own key both set one value, they must agree. */
function alias(ownKey: string, own: unknown, evKey: string, ev: number, current: number): number {
  if (own !== undefined && own !== ev) {
    throw new ConfigError('CONFIG_BAD_VALUE', `${evKey}: ${ev} contradicts ${ownKey} = ${String(own)} (they set the same value; keep one)`);
  }
  return own === undefined ? ev : current;
}

/** Moves the Evervault keys (EVERVAULT_SCHEMA) off the top level: onto the agent's keys or into config.evervault. */
function applyEvervaultKeys(config: Config, doc: Record<string, unknown>): void {
  const raw = config as unknown as Record<string, unknown>;
  const take = <T>(key: string): T => {
    const v = raw[key] as T;
    delete raw[key];
    return v;
  };
  (config.ingress as { tls: boolean }).tls = take<boolean>('tls_termination');
  if (config.ingress.tls && config.mode !== 'http') {
    throw new ConfigError('CONFIG_BAD_VALUE', 'tls_termination = true: TLS ingress serves the HTTP pipeline; it needs mode = "http"');
  }
  if (config.api_key_auth.enabled && config.mode !== 'http') {
    throw new ConfigError('CONFIG_BAD_VALUE', 'api_key_auth: API-key auth is an HTTP stage; it needs mode = "http"');
  }
  const sub = (key: string): Record<string, unknown> => (isTable(doc[key]) ? (doc[key] as Record<string, unknown>) : {});
  const service = take<{ port: number | null }>('service');
  if (service.port !== null) config.app.port = alias('app.port', sub('app').port, 'service.port', service.port, config.app.port);
  const acceptor = take<{ max_concurrent_connections: number | null; max_concurrent_handshakes: number | null; handshake_timeout: number | null }>('acceptor');
  const limitsDoc = sub('limits');
  if (acceptor.max_concurrent_connections !== null) {
    config.limits.max_sessions = alias('limits.max_sessions', limitsDoc.max_sessions, 'acceptor.max_concurrent_connections', acceptor.max_concurrent_connections, config.limits.max_sessions);
  }
  if (acceptor.handshake_timeout !== null) {
    const ms = acceptor.handshake_timeout * SEC;
    config.limits.handshake_timeout_ms = alias('limits.handshake_timeout_ms', limitsDoc.handshake_timeout_ms, 'acceptor.handshake_timeout (seconds) × 1000', ms, config.limits.handshake_timeout_ms);
  }
  if (acceptor.max_concurrent_handshakes !== null) {
    const limits = config.limits as unknown as Record<string, number>;
    if (!('max_concurrent_handshakes' in limits)) {
      throw new ConfigError('CONFIG_UNSUPPORTED', 'acceptor.max_concurrent_handshakes: handshake admission is not supported yet; remove the key');
    }
    limits.max_concurrent_handshakes = alias('limits.max_concurrent_handshakes', limitsDoc.max_concurrent_handshakes, 'acceptor.max_concurrent_handshakes', acceptor.max_concurrent_handshakes, limits.max_concurrent_handshakes!);
  }
  const { HashAlgorithm, signature } = config.attestation;
  config.evervault = {
    uuid: take('uuid'),
    app_uuid: take('app_uuid'),
    team_uuid: take('team_uuid'),
    dockerfile: take('dockerfile'),
    scaling: take('scaling'),
    signing: take('signing'),
    runtime: take('runtime'),
    HashAlgorithm,
    signature,
  };
}

/** Validates an already-parsed TOML document (or `{}` for all defaults). */
export function configFromObject(doc: unknown, env: Record<string, string | undefined> = {}): Config {
  const config = readTable(SCHEMA, doc, '') as unknown as Config;
  applyEvervaultKeys(config, doc as Record<string, unknown>);
  const ports = [config.listen.public_port, config.listen.control_port];
  if (config.ingress.tls && [...ports, config.listen.ops_port].includes(config.ingress.tls_port)) {
    throw new ConfigError('CONFIG_BAD_VALUE', `ingress.tls_port: must differ from listen.public_port, control_port and ops_port (${config.ingress.tls_port})`);
  }
  if (ports.includes(config.listen.ops_port)) {
    throw new ConfigError('CONFIG_BAD_VALUE', `listen.ops_port: must differ from listen.public_port and listen.control_port (${config.listen.ops_port})`);
  }
  // Cross-field rules the schema cannot express.
  if (config.listen.public_port === config.listen.control_port) {
    throw new ConfigError('CONFIG_BAD_VALUE', `listen.control_port: must differ from listen.public_port (both ${config.listen.public_port})`);
  }
  if (config.app.restart_backoff_max_ms < config.app.restart_backoff_ms) {
    throw new ConfigError(
      'CONFIG_BAD_VALUE',
      `app.restart_backoff_max_ms: must be at least app.restart_backoff_ms (${config.app.restart_backoff_ms}), found ${config.app.restart_backoff_max_ms}`,
    );
  }
  if (config.keyring.source === 'sealed-file' && !config.keyring.path) {
    throw new ConfigError('CONFIG_BAD_VALUE', 'keyring.path: required when keyring.source = "sealed-file"');
  }
  if (config.keyring.source === 'kms') {
    if (!config.keyring.file) throw new ConfigError('CONFIG_BAD_VALUE', 'keyring.file: required when keyring.source = "kms" (the file `enclave-agent keys seal` wrote)');
    if (!config.keyring.region) throw new ConfigError('CONFIG_BAD_VALUE', 'keyring.region: required when keyring.source = "kms"');
  } else {
    for (const k of ['file', 'region', 'endpoint'] as const) {
      if (config.keyring[k] !== null) throw new ConfigError('CONFIG_BAD_VALUE', `keyring.${k}: only used with keyring.source = "kms" (source is "${config.keyring.source}")`);
    }
  }
  // [secrets] kms: values are opened with the KMS keyring's region, endpoint and credentials.
  try {
    checkKmsSecrets(config.secrets, config.keyring);
  } catch (err) {
    if (err instanceof SecretsError) throw new ConfigError('CONFIG_BAD_VALUE', err.message);
    throw err;
  }
  if (!config.app.sandbox && config.egress.enabled && !config.egress.app_vsock) {
    throw new ConfigError('CONFIG_BAD_VALUE', 'app.sandbox: false lets the app open vsock and go around [egress]; set egress.app_vsock = true as well to say so');
  }
  if (config.egress.mode === 'transparent' && !config.egress.enabled) {
    throw new ConfigError('CONFIG_BAD_VALUE', 'egress.mode: "transparent" needs egress.enabled = true');
  }
  if (config.egress.mode === 'transparent') {
    try {
      checkTransparentPorts(config.egress.destinations.map(parseDestination));
    } catch (err) {
      if (err instanceof EgressError) throw new ConfigError('CONFIG_BAD_VALUE', err.message);
      throw err;
    }
  }
  checkAcme(config);
  if (config.limits.linger_timeout_ms > config.limits.linger_time_ms) {
    throw new ConfigError('CONFIG_BAD_VALUE', `limits.linger_timeout_ms: expected at most limits.linger_time_ms (${config.limits.linger_time_ms}), the longest linger in all, found ${config.limits.linger_timeout_ms}`);
  }
  if (config.limits.max_buffered_bodies_bytes < config.limits.max_buffered_body_bytes) {
    throw new ConfigError('CONFIG_BAD_VALUE', `limits.max_buffered_bodies_bytes: expected at least limits.max_buffered_body_bytes (${config.limits.max_buffered_body_bytes}): one such body must fit, found ${config.limits.max_buffered_bodies_bytes}`);
  }
  if (config.log.sink === 'file' && !config.log.path) {
    throw new ConfigError('CONFIG_BAD_VALUE', 'log.path: required when log.sink = "file"');
  }
  const flag = env.FORWARD_PROXY_PROTOCOL;
  if (flag !== undefined) {
    if (!/^(1|0|true|false)$/i.test(flag)) bad('env FORWARD_PROXY_PROTOCOL', 'true/false/1/0', flag);
    config.forward_proxy_protocol = /^(1|true)$/i.test(flag);
  }
  return config;
}

/** Parses TOML text; `source` names the file in error messages. */
export function parseConfig(text: string, source = 'enclave.toml', env: Record<string, string | undefined> = {}): Config {
  let doc: unknown;
  try {
    doc = parseToml(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : '';
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ConfigError('CONFIG_PARSE', `${source}: invalid TOML${where}: ${reason}`);
  }
  try {
    return configFromObject(doc, env);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.code, `${source}: ${err.message}`);
    throw err;
  }
}

/** Reads and validates a config file; with no path, every default. */
export function loadConfig(path?: string, env: Record<string, string | undefined> = process.env): Config {
  if (path === undefined) return configFromObject({}, env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ConfigError('CONFIG_READ', `cannot read ${path} (${code})`);
  }
  return parseConfig(text, path, env);
}

/**
 * The pinned PCRs of `[attestation]`, when PCR0..2 are all set and the enclave is not a debug one. With
 * debug = true (Evervault writes the build's PCRs and debug together) they are information: a debug enclave
 * reports all-zero PCRs, so pinning the build's values could only fail.
 */
export function pinnedPcrs(config: Config): { PCR0: string; PCR1: string; PCR2: string; PCR8?: string } | null {
  if (config.debug) return null;
  const { PCR0, PCR1, PCR2, PCR8 } = config.attestation;
  if (!PCR0 || !PCR1 || !PCR2) return null;
  return PCR8 ? { PCR0, PCR1, PCR2, PCR8 } : { PCR0, PCR1, PCR2 };
}
