/**
 * `enclave-agent start` (what `npm start` runs): the local stack in one process on loopback — the agent
 * (src/runtime/agent.ts with TCP listeners standing in for vsock), the NSM simulator, the host bridge, and the
 * built-in demo app when nothing listens on the app port. Prints the bridge URL, the PCRs to pin, the simulator
 * root and a fetch line to copy (or, with --json, one JSON line once everything is ready). SIGINT/SIGTERM drain
 * and stop everything and exit 0; a second signal forces.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import { createNsmSimulator } from '../attestation/simulator.ts';
import { loadConfig, type Config } from '../config.ts';
import { AgentError } from '../errors.ts';
import { startBridge, type Bridge } from '../host/bridge.ts';
import { startActivityService, teeLogSink, type ActivityService } from '../host/activity-service.ts';
import { startEgressDialer, type EgressDialer } from '../host/egress-dialer.ts';
import { EgressPolicy } from '../egress/policy.ts';
import { connectStream } from '../transport/connect.ts';
import type { LogSink } from '../http/log-sink.ts';
import { startAgentRuntime, type AgentRuntime, type AgentRuntimeOptions } from '../runtime/agent.ts';
import { toBase64 } from '../util/bytes.ts';
import { startTcpRelay, type TcpRelay } from '../host/tcp-relay.ts';
import { randomBytes } from 'node:crypto';
import { apiKeyHash } from '../http/stages/api-key.ts';
import { startDemoApp, type DemoApp } from '../runtime/demo-app.ts';
import { createShutdown, installSignalHandlers } from '../runtime/drain.ts';
import { resolveStateDir } from './keys-public.ts';
import { parseFlags, portFlag, resolveConfigPath, shellWord } from './flags.ts';
import { chooseLocalApp, localIdentity, pcrHex, readConfigText, type LocalApp, type PcrHex } from './pcrs.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';

const DEFAULT_BRIDGE_PORT = 8443;
/** The bridge's ops port: GET /health and GET /metrics of the agent, re-served (src/host/ops-proxy.ts). */
const DEFAULT_OPS_PORT = 8444;
const DEFAULT_DASHBOARD_PORT = 8445;
/** Ctrl-C should not wait [listen] drain_timeout_ms (30 s by default) for a development stack. */
const START_DRAIN_CAP_MS = 5_000;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const HELP = `Usage: enclave-agent start [options]

Runs the local stack on 127.0.0.1, in one process: the agent (TCP listeners standing in for vsock), the NSM
simulator, and the host WebSocket bridge, forwarding to the app port of enclave.toml. When nothing listens
on that port, a built-in demo app answers there: GET / (a JSON greeting), POST /echo (exactly what the app
received, as JSON), GET /health. Prints the bridge URL, the PCRs to pin, the simulator's root certificate
and an \`enclave-agent fetch\` line to copy; the PCRs are also written to <state dir>/pcrs.json.
Ctrl-C (SIGINT) or SIGTERM stops everything and exits 0; a second one forces.

Options:
  --config FILE        enclave.toml. Default: $ENCLAVE_AGENT_CONFIG, else ./enclave.toml if it exists.
  --state-dir DIR      Development keys and the simulator's CA. Default: $ENCLAVE_AGENT_STATE_DIR, else ./.state
  --bridge-port N      Where clients connect: ws://127.0.0.1:N/ (default ${DEFAULT_BRIDGE_PORT}; 0 picks a free port)
  --ops-port N         GET /health and GET /metrics for a load balancer and Prometheus: http://127.0.0.1:N/
                       (default ${DEFAULT_OPS_PORT}, or a free one with --bridge-port 0; 0 picks a free port)
  --dashboard-port N   The activity page (requests, traffic, enclave): http://127.0.0.1:N/ (default
                       ${DEFAULT_DASHBOARD_PORT}, or a free one with --bridge-port 0); records kept in <state dir>/activity.db
  --agent-port N       The agent's public TCP listener, standing in for vsock (default [listen] public_port)
  --control-port N     The control listener (default [listen] control_port; 0 when --agent-port is given)
  --app-port N         The app port (default [app] port); 0 runs the demo app on a free port
  --api-port N         The local encrypt/decrypt API (default [api] port)
  --debug              Debug-mode enclave: PCR0/1/2/8 all zero (the fetch line it prints uses fetch --debug)
  --log-level LEVEL    Operational log on stderr: fatal|error|warn|info|debug|trace|silent (default warn).
                       Request records (trx_logging) go to stderr too: one line each, JSON with --json.
  --json               Print exactly one JSON line once ready:
                       {"bridgeUrl", "agentAddress", "rootPem", "pcrs": {"PCR0", "PCR1", "PCR2", "PCR8"},
                        "appPort", "apiUrl", "metricsUrl", "healthUrl", "pcrsFile", "app", "egressProxy",
                        "dashboardUrl", "httpsUrl" (null unless tls_termination = true),
                        "apiKey" (the development key when api_key_auth = true has no keys, else null),
                        "publicKeys": {"p256", "secp256k1"} (the running agent's current ev: keys, base64: what
                        clients encrypt to), "retiredPublicKeys": [{"p256", "secp256k1"}, …] (older pairs kept
                        by \`keys rotate\` for decryption only, newest first; [] before any rotation)}

Egress: the host egress dialer runs in this process (TCP standing in for vsock) and the explicit egress proxy
on a free 127.0.0.1 port ("egressProxy"), enforcing [egress] destinations (every destination refused when
[egress] is not enabled; transparent mode needs \`run\` as root, so start serves the explicit proxy). The demo
app's GET /fetch?url=URL fetches through it.

[log] sink in enclave.toml is ignored here: start always logs to stderr.`;

export interface LocalStackOptions {
  /** enclave.toml path; undefined = every default. */
  configPath: string | undefined;
  stateDir: string;
  bridgePort: number;
  /** The bridge's ops port (default ${DEFAULT_OPS_PORT}; 0 picks one). */
  opsPort?: number;
  agentPort: number | undefined;
  controlPort: number | undefined;
  appPort: number | undefined;
  apiPort: number | undefined;
  debug: boolean;
  logger: Logger;
  trxSink?: LogSink;
  /** [keyring] source = "kms": credentials, extra CA roots, retries (tests); default the AWS chain and bundled roots. */
  kms?: AgentRuntimeOptions['kms'];
}

export interface LocalStack {
  readonly bridgeUrl: string;
  /** The agent's public listener, "127.0.0.1:<port>". */
  readonly agentAddress: string;
  readonly controlAddress: string;
  /** The simulator's root certificate (PEM file): what clients give as --root. */
  readonly rootPem: string;
  readonly pcrs: PcrHex;
  /** <stateDir>/pcrs.json, the --pcrs FILE for clients. */
  readonly pcrsFile: string;
  readonly appPort: number;
  readonly app: LocalApp;
  /** http://127.0.0.1:<port> of the local API, null when [api] enabled = false. */
  readonly apiUrl: string | null;
  /** The bridge's ops port: http://127.0.0.1:<port>/metrics and /health. */
  readonly metricsUrl: string;
  readonly healthUrl: string;
  /** http://127.0.0.1:<port> of the explicit egress proxy. */
  readonly egressProxy: string;
  /** tls_termination = true: https://localhost:<port>/ (the relay standing in for the bridge's --tls-listen); else null. */
  readonly httpsUrl: string | null;
  readonly tlsRelay: TcpRelay | null;
  /** api_key_auth = true with no [api_key_auth] keys: the development key generated for this run; else null. */
  readonly apiKey: string | null;
  readonly egressDialer: EgressDialer;
  readonly config: Config;
  readonly runtime: AgentRuntime;
  readonly bridge: Bridge;
  readonly demo: DemoApp | null;
}

/** Starts the simulator, the demo app (if needed), the agent runtime and the bridge. Undoes what started on failure. */
export async function startLocalStack(opts: LocalStackOptions): Promise<LocalStack> {
  const loaded = loadConfig(opts.configPath);
  const debug = loaded.debug || opts.debug;
  const appPortWanted = opts.appPort ?? loaded.app.port;
  const app = await chooseLocalApp(appPortWanted);
  const identity = localIdentity(readConfigText(opts.configPath), app);
  const nsm = await createNsmSimulator({ stateDir: path.join(opts.stateDir, 'nsm-simulator'), identity, debug });

  let demo: DemoApp | null = null;
  let runtime: AgentRuntime | undefined;
  let egressDialer: EgressDialer | undefined;
  let egressProxy: string | null = null;
  let tlsRelay: TcpRelay | null = null;
  let apiKey: string | null = null;
  try {
    // A demo app that another `start` already runs on that port is reused, not started twice.
    if (app.kind === 'demo' && app.running !== true) {
      demo = await startDemoApp({ port: appPortWanted, name: loaded.name, maxBodyBytes: loaded.limits.max_request_bytes, egressProxy: () => egressProxy });
    }
    const appPort = demo?.port ?? appPortWanted;
    const config: Config = { ...loaded, debug, app: { ...loaded.app, port: appPort }, egress: { ...loaded.egress, mode: 'explicit' } };
    // Loopback and private servers the policy names by IP entry are reachable in development too; nothing else non-global.
    const namedPrefixes = new EgressPolicy(config.egress.enabled ? config.egress.destinations : []).destinations.flatMap((d) => (d.kind === 'ip' ? [d.prefix] : []));
    egressDialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, allowNonGlobal: namedPrefixes, logger: opts.logger });
    const dialerPort = egressDialer.port!;

    const publicPort = opts.agentPort ?? config.listen.public_port;
    const controlPort = opts.controlPort ?? (opts.agentPort !== undefined ? 0 : config.listen.control_port);
    if (publicPort !== 0 && publicPort === controlPort) throw new CliUsageError(`--agent-port and --control-port must differ (both ${publicPort})`);
    // api_key_auth without keys: `run` refuses to boot; the local stack makes a development key and prints it.
    apiKey = config.api_key_auth.enabled && config.api_key_auth.keys.length === 0 ? `dev-${randomBytes(24).toString('base64url')}` : null;
    runtime = await startAgentRuntime({
      ...(apiKey === null ? {} : { apiKeyHashes: [apiKeyHash(apiKey)] }),
      config,
      // The agent's ops port is internal here (the bridge re-serves it): any free port.
      listen: { kind: 'tcp', host: '127.0.0.1', publicPort, controlPort, opsPort: 0 },
      nsm,
      stateDir: opts.stateDir,
      logger: opts.logger,
      ...(opts.trxSink === undefined ? {} : { trxSink: opts.trxSink }),
      ...(opts.apiPort === undefined ? {} : { apiPort: opts.apiPort }),
      ...(opts.kms === undefined ? {} : { kms: opts.kms }),
      egress: { dialer: () => connectStream({ kind: 'tcp', host: '127.0.0.1', port: dialerPort }), proxyPort: 0, always: true },
    });
    egressProxy = runtime.egress!.proxyUrl;
    const bridge = await startBridge({
      listen: { host: '127.0.0.1', port: opts.bridgePort },
      target: { kind: 'tcp', host: '127.0.0.1', port: runtime.publicPort! },
      proxyProtocol: config.accept_proxy_protocol,
      logger: opts.logger,
      ops: { listen: { host: '127.0.0.1', port: opts.opsPort ?? DEFAULT_OPS_PORT }, target: { kind: 'tcp', host: '127.0.0.1', port: runtime.opsPort! } },
    });

    // TLS ingress: a relay in front of the agent's TLS port, as `bridge --tls-listen` in production.
    tlsRelay = runtime.tlsPort === undefined
      ? null
      : await startTcpRelay({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: runtime.tlsPort }, proxyProtocol: config.accept_proxy_protocol, logger: opts.logger });
    const pcrs = pcrHex(identity, debug);
    const pcrsFile = path.join(opts.stateDir, 'pcrs.json');
    await mkdir(opts.stateDir, { recursive: true, mode: 0o700 });
    await writeFile(pcrsFile, JSON.stringify(pcrs, null, 2) + '\n');
    return {
      bridgeUrl: bridge.url,
      agentAddress: runtime.publicAddress,
      controlAddress: runtime.controlAddress,
      rootPem: nsm.rootPath,
      pcrs,
      pcrsFile,
      appPort,
      app,
      apiUrl: runtime.apiPort === null ? null : `http://127.0.0.1:${runtime.apiPort}`,
      metricsUrl: `${bridge.opsUrl!}/metrics`,
      healthUrl: `${bridge.opsUrl!}/health`,
      egressProxy,
      httpsUrl: tlsRelay === null ? null : `https://localhost:${tlsRelay.port}/`,
      tlsRelay,
      apiKey,
      egressDialer,
      config,
      runtime,
      bridge,
      demo,
    };
  } catch (err) {
    await tlsRelay?.close().catch(() => {});
    await runtime?.close().catch(() => {});
    await egressDialer?.close().catch(() => {});
    await demo?.close().catch(() => {});
    throw err;
  }
}

/** The running agent's ev: public keys (compressed points, base64): equal on replicas sharing a KMS-sealed keyring. */
export function publicKeysBase64(stack: Pick<LocalStack, 'runtime'>): { p256: string; secp256k1: string } {
  const k = stack.runtime.keyring.publicKeys();
  return { p256: toBase64(k.p256), secp256k1: toBase64(k.secp256k1) };
}

/** The retired pairs (`keys rotate`), newest first: the agent still decrypts with them, nobody should encrypt to them. */
export function retiredPublicKeysBase64(stack: Pick<LocalStack, 'runtime'>): { p256: string; secp256k1: string }[] {
  return stack.runtime.keyring.retiredPublicKeys().map((k) => ({ p256: toBase64(k.p256), secp256k1: toBase64(k.secp256k1) }));
}

/** A path as short as possible for a line to copy: relative to the cwd when inside it. */
function shortPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

/** The `fetch` line start prints (and the README shows). */
export function fetchLine(stack: Pick<LocalStack, 'bridgeUrl' | 'pcrsFile' | 'rootPem'>, debug: boolean, route = '/'): string {
  const words = ['npx', 'enclave-agent', 'fetch', stack.bridgeUrl, route, '--pcrs', shortPath(stack.pcrsFile), '--root', shortPath(stack.rootPem)];
  if (debug) words.push('--debug');
  return words.map(shellWord).join(' ');
}

function humanTrxSink(io: CliIo): LogSink {
  return {
    write(record) {
      const r = record as { method?: string; path?: string; status?: number; elapsed_ms?: number; bytes_in?: number; bytes_out?: number; remote_ip?: string | null; error?: unknown };
      const status = r.status === 0 || r.status === undefined ? 'no response' : String(r.status);
      const from = r.remote_ip ? ` from ${r.remote_ip}` : '';
      const err = r.error === undefined ? '' : ` (${typeof r.error === 'string' ? r.error : JSON.stringify(r.error)})`;
      io.err(`[request] ${r.method ?? ''} ${r.path ?? ''} → ${status} in ${(r.elapsed_ms ?? 0).toFixed(1)} ms, ${r.bytes_in ?? 0} B in, ${r.bytes_out ?? 0} B out${from}${err}`);
    },
    async close() {},
  };
}

function jsonTrxSink(): LogSink {
  const trx = pino({ base: null, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, pino.destination({ dest: 2, sync: true }));
  return {
    write: (record) => trx.info(record),
    async close() {},
  };
}

export async function runStart(args: string[], io: CliIo): Promise<number> {
  const { values } = parseFlags(args, {
    config: { type: 'string' },
    'state-dir': { type: 'string' },
    'bridge-port': { type: 'string' },
    'ops-port': { type: 'string' },
    'dashboard-port': { type: 'string' },
    'agent-port': { type: 'string' },
    'control-port': { type: 'string' },
    'app-port': { type: 'string' },
    'api-port': { type: 'string' },
    debug: { type: 'boolean', default: false },
    'log-level': { type: 'string' },
    json: { type: 'boolean', default: false },
  });
  const logLevel = values['log-level'] ?? 'warn';
  if (!LOG_LEVELS.includes(logLevel)) throw new CliUsageError(`--log-level expects ${LOG_LEVELS.join('|')}, found "${logLevel}"`);
  const optPort = (flag: string, text: string | undefined): number | undefined => (text === undefined ? undefined : portFlag(flag, text, 0));
  const logger = pino({ level: logLevel, base: { name: 'enclave-agent-start' } }, pino.destination({ dest: 2, sync: true }));
  const configPath = resolveConfigPath(values.config);

  let stack: LocalStack;
  let activity: ActivityService | undefined;
  try {
    // The activity page: every request record also goes to <state dir>/activity.db (src/host/activity-*.ts).
    const stateDir = resolveStateDir(values['state-dir']);
    await mkdir(stateDir, { recursive: true, mode: 0o700 });
    activity = await startActivityService({
      file: path.join(stateDir, 'activity.db'),
      ui: { host: '127.0.0.1', port: portFlag('--dashboard-port', values['dashboard-port'], values['bridge-port'] === '0' ? 0 : DEFAULT_DASHBOARD_PORT) },
      logger,
    });
    stack = await startLocalStack({
      configPath,
      stateDir: resolveStateDir(values['state-dir']),
      bridgePort: portFlag('--bridge-port', values['bridge-port'], DEFAULT_BRIDGE_PORT),
      // With --bridge-port 0 (tests, several stacks at once) the ops port is a free one too, unless given.
      opsPort: portFlag('--ops-port', values['ops-port'], values['bridge-port'] === '0' ? 0 : DEFAULT_OPS_PORT),
      agentPort: optPort('--agent-port', values['agent-port']),
      controlPort: optPort('--control-port', values['control-port']),
      appPort: optPort('--app-port', values['app-port']),
      apiPort: optPort('--api-port', values['api-port']),
      debug: values.debug,
      logger,
      trxSink: teeLogSink(values.json ? jsonTrxSink() : humanTrxSink(io), activity.sink()),
    });
  } catch (err) {
    await activity?.close();
    if (err instanceof AgentError && /LISTEN_FAILED$/.test(err.code) && /EADDRINUSE/.test(err.message)) {
      io.err(`enclave-agent start: ${err.code}: ${err.message} (another enclave-agent start running? --bridge-port, --ops-port, --dashboard-port, --agent-port, --app-port and --api-port choose others; 0 picks a free one)`);
      return 1;
    }
    throw err;
  }
  const debug = stack.config.debug;
  const dashboard = activity!;
  dashboard.setOps(stack.healthUrl.replace(/\/health$/, ''));
  Object.assign(dashboard.enclave.info, { name: stack.config.name, mode: stack.config.mode, pcrs: stack.pcrs, pcrsSource: 'the local stack (simulated NSM)', startedAt: Date.now() });

  if (values.json) {
    io.out(
      JSON.stringify({
        bridgeUrl: stack.bridgeUrl,
        agentAddress: stack.agentAddress,
        rootPem: stack.rootPem,
        pcrs: stack.pcrs,
        appPort: stack.appPort,
        apiUrl: stack.apiUrl,
        metricsUrl: stack.metricsUrl,
        healthUrl: stack.healthUrl,
        pcrsFile: stack.pcrsFile,
        app: stack.app.kind === 'demo' ? 'demo' : `127.0.0.1:${stack.appPort}`,
        egressProxy: stack.egressProxy,
        httpsUrl: stack.httpsUrl,
        apiKey: stack.apiKey,
        dashboardUrl: dashboard.url,
        debug,
        publicKeys: publicKeysBase64(stack),
        retiredPublicKeys: retiredPublicKeysBase64(stack),
      }),
    );
  } else {
    const appLine =
      stack.demo !== null
        ? `demo app on 127.0.0.1:${stack.appPort} (nothing else listened there): GET /, POST /echo, GET /fetch?url=, GET /health`
        : stack.app.kind === 'demo'
          ? `the demo app already running on 127.0.0.1:${stack.appPort}`
          : `your app on 127.0.0.1:${stack.appPort}`;
    io.out(`enclave-agent local stack "${stack.config.name}" is up (${stack.config.mode} mode, simulated NSM${debug ? ', DEBUG enclave' : ''})`);
    io.out(`  bridge     ${stack.bridgeUrl}  (clients connect here)`);
    if (stack.httpsUrl !== null) io.out(`  https      ${stack.httpsUrl}  (TLS ingress: attested self-signed certificate; curl -k, or verify the document in it)`);
    if (stack.apiKey !== null) io.out(`  api key    ${stack.apiKey}  (api_key_auth: development key for this run; send it as the api-key header)`);
    io.out(`  agent      ${stack.agentAddress}  (TCP standing in for vsock port ${stack.config.listen.public_port}${stack.config.accept_proxy_protocol ? '; PROXY v2 from the bridge' : ''})`);
    io.out(`  app        ${appLine}`);
    if (stack.apiUrl !== null) io.out(`  local API  ${stack.apiUrl}  (POST /encrypt, /decrypt, /attestation-doc, for the app)`);
    io.out(`  ops        ${stack.healthUrl}, ${stack.metricsUrl}  (load balancer, Prometheus)`);
    const eg = stack.config.egress;
    io.out(`  egress     ${stack.egressProxy}  (HTTP_PROXY/HTTPS_PROXY for the app; ${eg.enabled ? `${eg.destinations.length} destination(s) allowed` : '[egress] not enabled: every destination refused'})`);
    io.out(`  dashboard  ${dashboard.url}  (activity page: your requests as they happen, traffic, the enclave)`);
    io.out(`  root       ${stack.rootPem}`);
    io.out(`             (the simulator's CA: clients trust it with --root; never trusted by default)`);
    io.out(`  PCRs       to pin, also in ${stack.pcrsFile}${debug ? ' (debug enclave: all zero)' : ''}`);
    for (const [k, v] of Object.entries(stack.pcrs)) io.out(`    ${k}     ${v}`);
    io.out('');
    io.out('Try it (attested, end-to-end encrypted; other terminal, same directory):');
    if (stack.app.kind === 'demo') {
      io.out(`  ${fetchLine(stack, debug)}`);
      io.out(`  ${fetchLine(stack, debug, '/echo')} -X POST -d '{"hello":"enclave"}' -H 'content-type: application/json'`);
    } else {
      // Your app's routes are unknown here, except its health check when it has one on the app port.
      const hc = stack.config.healthcheck;
      const known = hc !== null && (hc.port === null || hc.port === stack.appPort);
      io.out(`  ${fetchLine(stack, debug, known ? hc.path : '/')}   (${known ? 'your app\'s [healthcheck] path' : 'or any path your app serves'})`);
    }
    io.out('Ctrl-C stops everything.');
  }

  const shutdownStack = (): Promise<number> =>
    new Promise<number>((resolve) => {
      const shutdown = createShutdown({
        runtime: {
          drain: (ms) => stack.runtime.drain(ms),
          close: async () => {
            await stack.bridge.close();
            await stack.tlsRelay?.close();
            await stack.runtime.close();
            await dashboard.close();
            await stack.egressDialer.close();
          },
        },
        app: {
          async stop() {
            await stack.demo?.close();
            return { reason: 'stopped', last: null, exitCode: 0, killed: false };
          },
          signal: () => false,
        },
        drainTimeoutMs: Math.min(stack.config.listen.drain_timeout_ms, START_DRAIN_CAP_MS),
        stopTimeoutMs: 1_000,
        logger,
        exit: resolve,
      });
      installSignalHandlers(shutdown, { stop: () => Promise.resolve({ reason: 'stopped' as const, last: null, exitCode: 0, killed: false }), signal: () => false }, logger);
    });

  const code = await shutdownStack();
  if (!values.json) io.out('stopped');
  // A forced stop (second signal) exits at once; a clean one must not be held up by a stray handle either.
  if (code !== 0) process.exit(code);
  setTimeout(() => process.exit(code), 2_000).unref();
  return code;
}

export const command: CliCommand = {
  help: HELP,
  run: (args, io) => runStart(args, io),
};
