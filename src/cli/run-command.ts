// `enclave-agent run -- <app command...>`: the in-enclave entrypoint (the Docker image's ENTRYPOINT).
// Loads enclave.toml, brings up `lo` when inside an enclave, opens the public and control listeners, starts
// the local API, supervises the app, reports healthy once the app's port answers, drains on SIGTERM.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from '../config.ts';
import { openKmsSecrets } from '../crypto/kms-secrets.ts';
import { appEnvironment, decryptSecrets, SecretsError, splitSecrets } from '../crypto/secrets.ts';
import { keyringWarning } from './keyring-warning.ts';
import { bridgeCredentialProvider } from '../runtime/credentials-provider.ts';
import { isAgentError } from '../errors.ts';
import { nativeClockStep } from '../ops/clock-step.ts';
import { startAgentRuntime, type AgentRuntime, type RuntimeListen } from '../runtime/agent.ts';
import { createShutdown, installSignalHandlers } from '../runtime/drain.ts';
import { createRuntimeLogs } from '../runtime/logs.ts';
import { insideEnclave, openNsm } from '../runtime/nsm.ts';
import { RuntimeError, SandboxDirsError } from '../runtime/errors.ts';
import { signalExitCode, startSupervisor } from '../runtime/supervisor.ts';
import { unlessBootAborted, watchBootSignals, type BootSignals } from '../runtime/boot-signals.ts';
import { makeAgentNotDumpable } from '../runtime/not-dumpable.ts';
import { appSandboxChoice, noSandboxLine } from '../runtime/app-sandbox.ts';
import { unsafeNodeOptions } from '../runtime/unsafe-node-options.ts';
import { connectStream, parseTarget, TransportError, type StreamTarget } from '../transport/connect.ts';
import { NITRO_PARENT_CID } from '../transport/vsock.ts';
import { bringUpLoopback, loadNative, NativeUnavailableError } from '../transport/native.ts';
import { fromHex } from '../util/bytes.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';

const HELP = `Usage: enclave-agent run [options] -- <app command...>

The in-enclave entrypoint: loads enclave.toml, brings up lo (inside an enclave), listens on the public and
control ports, starts the local API (127.0.0.1:[api] port), starts the app as a supervised child, and logs
"agent healthy" once the app's port ([app] port) accepts connections.

Options:
  --config FILE        enclave.toml to load. Default: $ENCLAVE_AGENT_CONFIG, else ./enclave.toml if it
                       exists, else every default.
  --listen WHERE       vsock (default): [listen] public_port and control_port on any CID
                       tcp:PUBLIC,CONTROL[,OPS]: 127.0.0.1 ports standing in for vsock (0 picks a free
                       port; the ops port, GET /health and /metrics for the host, defaults to 0)
                       unix:DIR: DIR/public.sock and DIR/control.sock
  --nsm KIND           device (default): /dev/nsm through the native addon
                       simulator: the NSM simulator (development and tests; never trusted by clients)
  --state-dir DIR      development keys and the simulator's CA. Default: $ENCLAVE_AGENT_STATE_DIR, else ./.state
  --loopback MODE      auto (default: when /dev/nsm exists) | on | off — configure lo as 127.0.0.1/8
  --log-target TARGET  with [log] sink = "vsock": connect here instead of vsock:${NITRO_PARENT_CID}:<vsock_port> (the parent instance)
                       (tcp:HOST:PORT | unix:/path | vsock:CID:PORT)
  --egress-target TARGET
                       with [egress] enabled: the host egress dialer (enclave-agent bridge --egress), default
                       vsock:3:<[egress] host_port> (tcp:HOST:PORT | unix:/path | vsock:CID:PORT)
  --credentials-target TARGET
                       with [keyring] source = "kms": where the bridge serves AWS credentials
                       (enclave-agent bridge --credentials), default vsock:3:8002 (tcp:HOST:PORT | unix:/path | vsock:CID:PORT)

Egress ([egress] enabled = true): explicit mode serves a proxy on 127.0.0.1:[egress] proxy_port and gives the
app HTTP_PROXY, HTTPS_PROXY, NO_PROXY (both cases); transparent mode (needs root) also installs iptables rules
that send the enclave's outbound TCP and DNS to the agent, before the app starts.

The app runs sandboxed ([app] sandbox = true, the default): a seccomp filter, no capabilities that reach the
agent (ptrace, raw sockets, namespaces), the agent's code read-only, no vsock unless [egress] app_vsock = true.
[app] sandbox = false is the opt-out (warned at boot). A root agent without the sandbox wrapper (the native
addon's build) refuses to start the app.

The app command comes after "--" (or after the last option), else from [app] command. Signals: SIGTERM/SIGINT drain (stop accepting,
finish in-flight requests up to [listen] drain_timeout_ms, then forward the signal to the app and exit 0;
a second one forces); SIGHUP/SIGUSR1/SIGUSR2 are forwarded to the app. SIGTERM/SIGINT during boot (KMS,
[secrets], egress, the listeners) abort it: what was started is closed, the app is not started, exit 128 + the
signal number. When the app exits and [app] restart does not restart it, the agent exits with the app's exit code.

Sealed keys ([keyring] source = "sealed-file"): the unseal key is read as 64 hex characters from the file
named by $ENCLAVE_AGENT_UNSEAL_KEY_FILE.`;

/** Opening a stream to the host egress dialer (vsock connect is local; a slow one means the parent is gone). */
const EGRESS_DIALER_CONNECT_TIMEOUT_MS = 5_000;

export interface RunArgs {
  configPath: string | undefined;
  listen: RuntimeListen;
  nsm: 'device' | 'simulator';
  stateDir: string;
  loopback: 'auto' | 'on' | 'off';
  logTarget: StreamTarget | undefined;
  egressTarget: StreamTarget | undefined;
  credentialsTarget: StreamTarget | undefined;
  command: string[];
}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new CliUsageError(`--listen: ${what} port must be 0..65535, found "${text}"`);
  return Number(text);
}

export function parseListen(text: string): RuntimeListen {
  if (text === 'vsock') return { kind: 'vsock' };
  if (text.startsWith('tcp:')) {
    const m = /^tcp:([^,]+),([^,]+)(?:,([^,]+))?$/.exec(text);
    if (!m) throw new CliUsageError(`--listen: expected tcp:PUBLIC,CONTROL[,OPS], found "${text}"`);
    const publicPort = parsePort(m[1]!, 'public');
    const controlPort = parsePort(m[2]!, 'control');
    if (publicPort !== 0 && publicPort === controlPort) throw new CliUsageError('--listen: the public and control ports must differ');
    const opsPort = m[3] === undefined ? 0 : parsePort(m[3], 'ops');
    if (opsPort !== 0 && (opsPort === publicPort || opsPort === controlPort)) throw new CliUsageError('--listen: the ops port must differ from the public and control ports');
    return { kind: 'tcp', host: '127.0.0.1', publicPort, controlPort, ...(m[3] === undefined ? {} : { opsPort }) };
  }
  if (text.startsWith('unix:') && text.length > 5) return { kind: 'unix', dir: path.resolve(text.slice(5)) };
  throw new CliUsageError(`--listen: expected vsock, tcp:PUBLIC,CONTROL[,OPS] or unix:DIR, found "${text}"`);
}

const VALUE_FLAGS = new Set(['--config', '--listen', '--nsm', '--state-dir', '--loopback', '--log-target', '--egress-target', '--credentials-target']);

/**
 * Splits options from the app command: at the first "--", else at the first argument that is neither an
 * option nor an option's value (so a Dockerfile's `CMD ["node", "server.js"]` after
 * `ENTRYPOINT ["enclave-agent", "run"]` works without "--").
 */
export function splitRunArgs(args: string[]): { flags: string[]; command: string[] } {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return { flags: args.slice(0, i), command: args.slice(i + 1) };
    if (!a.startsWith('-')) return { flags: args.slice(0, i), command: args.slice(i) };
    if (VALUE_FLAGS.has(a)) i++;
  }
  return { flags: args, command: [] };
}

export function parseRunArgs(args: string[], env: NodeJS.ProcessEnv = process.env): RunArgs {
  const { flags, command } = splitRunArgs(args);
  let values;
  try {
    ({ values } = parseArgs({
      args: flags,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string' },
        listen: { type: 'string' },
        nsm: { type: 'string' },
        'state-dir': { type: 'string' },
        loopback: { type: 'string' },
        'log-target': { type: 'string' },
        'egress-target': { type: 'string' },
        'credentials-target': { type: 'string' },
      },
    }));
  } catch (err) {
    throw new CliUsageError(`${(err as Error).message}; put the app command after "--"`);
  }
  const nsm = values.nsm ?? 'device';
  if (nsm !== 'device' && nsm !== 'simulator') throw new CliUsageError(`--nsm: expected device or simulator, found "${nsm}"`);
  const loopback = values.loopback ?? 'auto';
  if (loopback !== 'auto' && loopback !== 'on' && loopback !== 'off') throw new CliUsageError(`--loopback: expected auto, on or off, found "${loopback}"`);
  let logTarget: StreamTarget | undefined;
  if (values['log-target'] !== undefined) {
    try {
      logTarget = parseTarget(values['log-target']);
    } catch (err) {
      if (err instanceof TransportError) throw new CliUsageError(`--log-target: ${err.message}`);
      throw err;
    }
  }
  let egressTarget: StreamTarget | undefined;
  if (values['egress-target'] !== undefined) {
    try {
      egressTarget = parseTarget(values['egress-target']);
    } catch (err) {
      if (err instanceof TransportError) throw new CliUsageError(`--egress-target: ${err.message}`);
      throw err;
    }
  }
  let credentialsTarget: StreamTarget | undefined;
  if (values['credentials-target'] !== undefined) {
    try {
      credentialsTarget = parseTarget(values['credentials-target']);
    } catch (err) {
      if (err instanceof TransportError) throw new CliUsageError(`--credentials-target: ${err.message}`);
      throw err;
    }
  }
  let configPath = values.config ?? env.ENCLAVE_AGENT_CONFIG;
  if (configPath === undefined && existsSync('enclave.toml')) configPath = 'enclave.toml';
  return {
    configPath,
    listen: parseListen(values.listen ?? 'vsock'),
    nsm,
    stateDir: path.resolve(values['state-dir'] ?? env.ENCLAVE_AGENT_STATE_DIR ?? '.state'),
    loopback,
    logTarget,
    egressTarget,
    credentialsTarget,
    command,
  };
}

function readUnsealKey(env: NodeJS.ProcessEnv): Uint8Array | undefined {
  const file = env.ENCLAVE_AGENT_UNSEAL_KEY_FILE;
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new CliUsageError(`ENCLAVE_AGENT_UNSEAL_KEY_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`);
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) throw new CliUsageError(`ENCLAVE_AGENT_UNSEAL_KEY_FILE: expected 64 hex characters in ${file}, found ${text.length} characters`);
  return fromHex(text);
}

/** The one line for a missing addon: "vsock is unavailable: the native addon was not built (…)". */
function nativeReason(err: unknown): string {
  if (err instanceof NativeUnavailableError) return err.message.replace(/^.*?the native addon was not built /, '');
  return `(${err instanceof Error ? err.message : String(err)})`;
}

/** Something (a pool, a stray socket, a KMS call a boot abort left) must not keep a stopped agent alive. */
function exitSoon(code: number): void {
  setTimeout(() => process.exit(code), 2_000).unref();
}

export async function runAgent(args: string[], io: CliIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // From the start: a stop signal during boot aborts it (runtime/boot-signals.ts) instead of killing the agent.
  const boot = watchBootSignals();
  try {
    return await bootAndRun(args, io, env, boot);
  } finally {
    boot.stop();
  }
}

async function bootAndRun(args: string[], io: CliIo, env: NodeJS.ProcessEnv, boot: BootSignals): Promise<number> {
  const a = parseRunArgs(args, env);
  const config: Config = loadConfig(a.configPath, env);
  const command = a.command.length > 0 ? a.command : config.app.command;
  if (command.length === 0) throw new CliUsageError('no app command: give it after "--" or set [app] command in enclave.toml');

  // Fail early and in one line on what cannot work here.
  // The app's sandbox (runtime/app-sandbox.ts): no way into the agent's memory, descriptors or NSM, no vsock of its
  // own unless [egress] app_vsock, capabilities cut; [app] sandbox = false is the explicit opt-out.
  const sandbox = appSandboxChoice(config, process.getuid?.());
  const unsafe = sandbox.sandbox === 'off' ? [] : unsafeNodeOptions();
  if (unsafe.length > 0) {
    io.err(
      `enclave-agent run: RUNTIME_UNSAFE_NODE_OPTIONS: the agent runs with ${unsafe.join(', ')}, which would let the app reach the agent's memory (its keys) through the inspector or a heap snapshot or report; remove ${unsafe.length === 1 ? 'it' : 'them'} from the node options and NODE_OPTIONS`,
    );
    return 1;
  }
  if (a.listen.kind === 'vsock') {
    try {
      loadNative();
    } catch (err) {
      io.err(`enclave-agent run: vsock is unavailable: the native addon was not built ${nativeReason(err)}`);
      return 1;
    }
  }
  if (config.log.sink === 'vsock' && a.logTarget === undefined && a.listen.kind !== 'vsock') {
    throw new CliUsageError('[log] sink = "vsock" needs --log-target when not listening on vsock (the default target is the parent instance, vsock CID 3)');
  }
  let nsm;
  try {
    nsm = await openNsm(
      a.nsm === 'device'
        ? { kind: 'device' }
        : { kind: 'simulator', stateDir: path.join(a.stateDir, 'nsm-simulator'), app: command.join(' '), config: a.configPath === undefined ? '' : readFileSync(a.configPath), debug: config.debug },
    );
  } catch (err) {
    if (isAgentError(err, 'RUNTIME_NSM_UNAVAILABLE')) {
      io.err(`enclave-agent run: ${err.message}`);
      return 1;
    }
    throw err;
  }
  if (boot.signal.aborted) return signalExitCode(boot.received()!);

  const logs = createRuntimeLogs(config.log, a.logTarget === undefined ? {} : { target: a.logTarget });
  const logger = logs.logger;
  logger.info({ config: a.configPath ?? '(defaults)', listen: a.listen.kind, nsm: a.nsm, logs: logs.where, pid: process.pid }, 'enclave-agent run starting');
  /** Closes what boot started (the runtime: listeners, egress, workers) and exits as the signal asks. */
  const bootAborted = async (runtime?: AgentRuntime): Promise<number> => {
    const signal = boot.received()!;
    logger.info({ signal }, 'stop signal during boot: not starting the app');
    await runtime?.close().catch(() => {});
    await logs.close().catch(() => {});
    exitSoon(signalExitCode(signal));
    return signalExitCode(signal);
  };
  const warning = keyringWarning(config, a.stateDir);
  if (warning !== null) {
    io.err(`enclave-agent run: WARNING: ${warning}`);
    logger.warn({ keyring: config.keyring.source }, warning);
  }

  if (a.loopback === 'on' || (a.loopback === 'auto' && insideEnclave())) {
    const { changed } = bringUpLoopback();
    logger.info({ changed }, 'loopback up');
  }

  if (config.egress.enabled && config.egress.mode === 'transparent' && process.getuid?.() !== 0) {
    io.err('enclave-agent run: [egress] mode = "transparent" installs iptables rules and binds port 53: run the agent as root');
    await logs.close();
    return 1;
  }
  const egressTarget: StreamTarget = a.egressTarget ?? { kind: 'vsock', cid: NITRO_PARENT_CID, port: config.egress.host_port };
  // Inside an enclave there is no credential chain: the bridge hands in the parent's (README "Credentials").
  // One provider for the keyring and KMS-sealed [secrets].
  const kmsCredentials = config.keyring.source === 'kms' ? bridgeCredentialProvider(a.credentialsTarget === undefined ? {} : { target: a.credentialsTarget }) : undefined;
  let runtime: AgentRuntime;
  try {
    runtime = await startAgentRuntime({
      config,
      listen: a.listen,
      nsm,
      stateDir: a.stateDir,
      logger,
      trxSink: logs.trxSink,
      unsealKey: readUnsealKey(env),
      ...(logs.stream === undefined ? {} : { logStream: logs.stream }),
      // [clock] correct = true: only here, inside the enclave's own process, is the clock ever stepped.
      ...(config.clock.correct ? { clockStepper: nativeClockStep } : {}),
      egress: { dialer: () => connectStream(egressTarget, { timeoutMs: EGRESS_DIALER_CONNECT_TIMEOUT_MS }) },
      ...(kmsCredentials === undefined ? {} : { kms: { credentials: kmsCredentials } }),
      abort: boot.signal,
    });
  } catch (err) {
    if (boot.signal.aborted) return bootAborted();
    await logs.close();
    throw err;
  }
  if (boot.signal.aborted) return bootAborted(runtime);

  // [secrets]: decrypted only now that the keyring is open, and only into the app's environment.
  let secrets: Record<string, string>;
  try {
    const { ev, kms } = splitSecrets(config.secrets);
    secrets = decryptSecrets(ev, runtime.keyring, {
      // A value sealed without the enclave-secret role (before `secrets seal` wrote it): named, never shown.
      warn: (w) => {
        io.err(`enclave-agent run: WARNING: ${w.message}`);
        logger.warn({ code: w.code, variable: w.variable }, w.message);
      },
    });
    if (Object.keys(kms).length > 0) {
      // kms: values: KMS Decrypt + Recipient, as the keyring (config checked that source = "kms"), through egress.
      const proxyUrl = config.egress.enabled && runtime.egress !== null ? new URL(runtime.egress.proxyUrl) : null;
      Object.assign(
        secrets,
        await unlessBootAborted(
          openKmsSecrets(kms, {
            region: config.keyring.region!,
            endpoint: config.keyring.endpoint,
            nsm,
            proxy: proxyUrl === null ? null : { host: proxyUrl.hostname, port: Number(proxyUrl.port) },
            ...(kmsCredentials === undefined ? {} : { credentials: kmsCredentials }),
            onRetry: (attempt, reason) => logger.warn({ attempt, reason }, 'KMS Decrypt did not answer; retrying'),
          }),
          boot.signal,
        ),
      );
      secrets = Object.fromEntries(Object.keys(config.secrets).map((n) => [n, secrets[n]!])); // enclave.toml's order
    }
  } catch (err) {
    if (boot.signal.aborted) return bootAborted(runtime);
    if (!(err instanceof SecretsError)) throw err;
    io.err(`enclave-agent run: ${err.code}: ${err.message}`);
    logger.error({ code: err.code, variable: err.variable }, 'a secret does not decrypt; not starting the app');
    await runtime.close();
    await logs.close();
    return 1;
  }
  const names = Object.keys(secrets);
  if (names.length > 0) logger.info({ secrets: names }, 'secrets decrypted for the app');
  if (boot.signal.aborted) return bootAborted(runtime);

  let supervisor: ReturnType<typeof startSupervisor>;
  if (sandbox.sandbox === 'off') {
    const warning = "[app] sandbox = false: the app runs unsandboxed; run as root it can read the agent's memory (its keys) and use vsock and the NSM";
    io.err(`enclave-agent run: WARNING: ${warning}`);
    logger.warn({ sandbox: false }, warning);
  }
  try {
    // The keys live in this process: non-dumpable whatever the app's sandbox, so an unprivileged app of this
    // user cannot read its memory; a required sandbox needs it to work (the sandbox takes CAP_SYS_PTRACE from root).
    try {
      makeAgentNotDumpable();
    } catch (err) {
      if (sandbox.sandbox === 'required') throw err;
      logger.warn({ code: (err as RuntimeError).code }, 'the agent stays dumpable: an app of its user may read its memory');
    }
    supervisor = startSupervisor({
      command,
      restart: config.app.restart,
      restartBackoffMs: config.app.restart_backoff_ms,
      restartBackoffMaxMs: config.app.restart_backoff_max_ms,
      maxRestarts: config.app.max_restarts,
      restartWindowMs: config.app.restart_window_ms,
      appPort: config.app.port,
      env: appEnvironment(process.env, runtime.egress?.appEnv ?? {}, secrets),
      readyWarnAfterMs: config.app.startup_grace_ms,
      sandbox: sandbox.sandbox,
      allowVsock: sandbox.allowVsock,
      logger,
      onState: (state) => {
        if (state === 'healthy') {
          logger.info(
            { public: runtime.publicAddress, control: runtime.controlAddress, publicPort: runtime.publicPort, controlPort: runtime.controlPort, apiPort: runtime.apiPort, appPort: config.app.port, ops: runtime.opsAddress },
            'agent healthy',
          );
        }
      },
    });
  } catch (err) {
    if (!(err instanceof RuntimeError) || err.code !== 'RUNTIME_NO_SANDBOX') throw err;
    io.err(`enclave-agent run: ${err.code}: ${noSandboxLine(sandbox, config, err.message, err instanceof SandboxDirsError)}`);
    logger.error({ code: err.code }, 'the app cannot be started without its sandbox; not starting it');
    await runtime.close();
    await logs.close();
    return 1;
  }

  runtime.superviseApp(() => supervisor.state, () => supervisor.restarts);

  const code = await new Promise<number>((resolve) => {
    const shutdown = createShutdown({
      runtime,
      app: supervisor,
      drainTimeoutMs: config.listen.drain_timeout_ms,
      stopTimeoutMs: config.app.stop_timeout_ms,
      logger,
      exit: resolve,
    });
    // Installed for the rest of the process before the boot's come off, in the same tick: Node closes a signal's
    // handle when its last listener goes, and a signal already caught for a closed handle is dropped (an agent
    // signalled just as its boot ended ran on, app and all). A late second signal still forces.
    installSignalHandlers(shutdown, supervisor, logger);
    boot.stop();
    void supervisor.done.then((result) => {
      if (result.reason === 'stopped') return; // the shutdown sequence stopped it
      void shutdown.begin({ reason: result.reason === 'restart-limit' ? 'app restart limit reached' : 'app exited', exitCode: result.exitCode });
    });
  });
  await logs.close().catch(() => {});
  exitSoon(code);
  return code;
}

export const command: CliCommand = {
  help: HELP,
  run: (args, io) => runAgent(args, io),
};
