// `enclave-agent bridge`: run the host-side WebSocket bridge until SIGINT/SIGTERM.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pino, { type Logger } from 'pino';
import { startBridge, type BridgeOptions } from '../host/bridge.ts';
import { startTcpRelay, type TcpRelayOptions } from '../host/tcp-relay.ts';
import { DEFAULT_EGRESS_VSOCK_PORT, DEFAULT_MAX_EGRESS_FLOWS, startEgressDialer, type EgressDialerListen, type EgressDialerOptions } from '../host/egress-dialer.ts';
import { parseTarget, TransportError, type StreamTarget } from '../transport/connect.ts';
import { startCredentialsServer, type CredentialsListen } from '../host/credentials-server.ts';
import { loopbackOnly } from './flags.ts';
import { DEFAULT_CREDENTIALS_VSOCK_PORT } from '../host/credentials-protocol.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';
import { untilSignal } from './signals.ts';

const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORT = 8443;
const AGENT_PORT = 5000;
const OPS_PORT = 5009;
const TLS_PORT = 5443;

const help = `Usage: enclave-agent bridge --agent TARGET [options]

Runs the host-side WebSocket bridge: each WebSocket becomes one byte stream to the agent. The bridge only
copies ciphertext; it never sees plaintext. Runs until SIGINT or SIGTERM.

Where clients connect (default ${DEFAULT_HOST}:${DEFAULT_PORT}; listening on all interfaces is explicit):
  --listen HOST:PORT        e.g. 0.0.0.0:8443 or [::]:8443
  --port N                  port, with --host H (default ${DEFAULT_HOST}); 0 picks a free port

Where the agent is (one of):
  --agent TARGET            tcp:127.0.0.1:5000 | unix:/path/agent.sock | vsock:CID:PORT
  --enclave-cid CID         shorthand for vsock:CID:${AGENT_PORT}

Options:
  --cert FILE --key FILE    serve wss:// with this PEM certificate chain and key
  --proxy-protocol          send a PROXY v2 header (client address) first on each agent stream;
                            the agent must be configured to expect it
  --max-connections N       concurrent WebSockets, more get HTTP 503 (default 1024)
  --max-pending-upgrades N  connections not upgraded yet (each held up to the handshake timeout); more get
                            HTTP 503, or are closed before the TLS handshake with --cert (default 1024)
  --max-pending-upgrades-per-client N
                            of those, from one client address (an IPv6 /64); more are refused the same way
                            (default 64)
  --handshake-timeout MS    agent connect + 48-byte handshake reply; also the client's TLS handshake and
                            upgrade request (default 10000)
  --idle-timeout MS         close after no traffic for this long, 0 = never (default 600000)
  --log-level LEVEL         fatal|error|warn|info|debug|silent (default info); JSON logs go to stderr

The ops port (for a load balancer and Prometheus; keep it off the internet):
  --ops-listen HOST:PORT    re-serve the agent's GET /health and GET /metrics here, and answer the agent's
                            time requests (clock drift) over its ops channel
  --ops-agent TARGET        the agent's ops port (default with a vsock agent: vsock:CID:${OPS_PORT}; required
                            with tcp/unix)

TLS ingress (tls_termination = true; TLS ends inside the enclave, this only relays bytes):
  --tls-listen HOST:PORT    relay raw TCP from here to the agent's TLS port (e.g. 0.0.0.0:443); with
                            --proxy-protocol a PROXY v2 header goes first here too
  --tls-agent TARGET        the agent's TLS port (default with a vsock agent: vsock:CID:${TLS_PORT}; required
                            with tcp/unix)

Egress (the enclave's outbound connections, [egress] in enclave.toml; off unless given):
  --egress WHERE            run the host egress dialer: vsock (port ${DEFAULT_EGRESS_VSOCK_PORT}) | vsock:PORT |
                            tcp:127.0.0.1:PORT (loopback only) | unix:/path. It dials only the IP:port each flow
                            names, and resolves DNS with this host's resolvers (/etc/resolv.conf). Over vsock it
                            serves only the agent's CID (from --agent vsock:CID:PORT or --enclave-cid; other
                            enclaves are closed unanswered), so it needs a vsock agent.
  --egress-allow-nonglobal CIDR   also dial this private/loopback prefix (repeatable; default: global only)
  --egress-resolver IP[:PORT]     resolve with this server instead (repeatable)
  --egress-max-flows N      flows served at once (default ${DEFAULT_MAX_EGRESS_FLOWS}); more are refused (the app gets 503)

AWS credentials for the enclave (the KMS keyring; off unless given):
  --credentials WHERE       serve short-lived credentials from this host's AWS credential chain (the instance
                            role through IMDSv2 on EC2) to the agent on request: vsock (port ${DEFAULT_CREDENTIALS_VSOCK_PORT}) |
                            vsock:PORT | tcp:127.0.0.1:PORT (loopback only) | unix:/path. Refreshed 5 minutes before they expire;
                            never logged. The KMS key policy's PCR conditions, not these credentials, guard the key.
                            Over vsock it answers only the agent's CID (from --agent vsock:CID:PORT or --enclave-cid;
                            other enclaves are closed unanswered), so it needs a vsock agent.

Prints the listening URL on stdout.`;

/** Turns the command line into bridge options (no I/O besides reading --cert/--key). */
export function parseBridgeArgs(args: string[]): BridgeOptions & { logLevel: string; egress?: Omit<EgressDialerOptions, 'logger'>; tlsRelay?: Omit<TcpRelayOptions, 'logger'>; credentials?: CredentialsListen } {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        agent: { type: 'string' },
        'enclave-cid': { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        'proxy-protocol': { type: 'boolean' },
        'max-connections': { type: 'string' },
        'max-pending-upgrades': { type: 'string' },
        'max-pending-upgrades-per-client': { type: 'string' },
        'handshake-timeout': { type: 'string' },
        'idle-timeout': { type: 'string' },
        'log-level': { type: 'string' },
        'ops-listen': { type: 'string' },
        'ops-agent': { type: 'string' },
        'tls-listen': { type: 'string' },
        'tls-agent': { type: 'string' },
        egress: { type: 'string' },
        'egress-allow-nonglobal': { type: 'string', multiple: true },
        'egress-resolver': { type: 'string', multiple: true },
        'egress-max-flows': { type: 'string' },
        credentials: { type: 'string' },
      },
    }));
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }

  let listen = { host: DEFAULT_HOST, port: DEFAULT_PORT };
  if (values.listen !== undefined) {
    if (values.port !== undefined || values.host !== undefined) throw new CliUsageError('give either --listen or --port/--host, not both');
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(values.listen);
    if (!m) throw new CliUsageError(`--listen expects HOST:PORT or [IPv6]:PORT, found "${values.listen}"`);
    listen = { host: m[1] ?? m[2]!, port: int('--listen port', m[3]!, 0, 65535) };
  } else {
    if (values.port !== undefined) listen.port = int('--port', values.port, 0, 65535);
    if (values.host !== undefined) listen.host = values.host;
  }

  if ((values.agent === undefined) === (values['enclave-cid'] === undefined)) {
    throw new CliUsageError('give exactly one of --agent TARGET or --enclave-cid CID');
  }
  let target;
  try {
    target = parseTarget(values.agent ?? `vsock:${int('--enclave-cid', values['enclave-cid']!, 0, 0xfffffffe)}:${AGENT_PORT}`);
  } catch (err) {
    if (err instanceof TransportError) throw new CliUsageError(`--agent: ${err.message}`);
    throw err;
  }

  let ops: BridgeOptions['ops'];
  if (values['ops-listen'] !== undefined) {
    let opsTarget: StreamTarget;
    if (values['ops-agent'] !== undefined) {
      try {
        opsTarget = parseTarget(values['ops-agent']);
      } catch (err) {
        if (err instanceof TransportError) throw new CliUsageError(`--ops-agent: ${err.message}`);
        throw err;
      }
    } else if (target.kind === 'vsock') {
      opsTarget = { kind: 'vsock', cid: target.cid, port: OPS_PORT };
    } else {
      throw new CliUsageError("--ops-listen with a tcp/unix agent needs --ops-agent TARGET (the agent's ops port)");
    }
    ops = { listen: hostPort('--ops-listen', values['ops-listen']), target: opsTarget };
  } else if (values['ops-agent'] !== undefined) {
    throw new CliUsageError('--ops-agent goes with --ops-listen');
  }

  if ((values.cert === undefined) !== (values.key === undefined)) throw new CliUsageError('--cert and --key go together');
  const opts: BridgeOptions & { logLevel: string; egress?: Omit<EgressDialerOptions, 'logger'>; tlsRelay?: Omit<TcpRelayOptions, 'logger'>; credentials?: CredentialsListen } = {
    listen,
    target,
    proxyProtocol: values['proxy-protocol'] ?? false,
    logLevel: values['log-level'] ?? 'info',
    ...(ops === undefined ? {} : { ops }),
  };
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(opts.logLevel)) {
    throw new CliUsageError(`--log-level expects fatal|error|warn|info|debug|trace|silent, found "${opts.logLevel}"`);
  }
  if (values.cert !== undefined && values.key !== undefined) opts.tls = { cert: readPem(values.cert, '--cert'), key: readPem(values.key, '--key') };
  if (values['max-connections'] !== undefined) opts.maxConnections = int('--max-connections', values['max-connections'], 1, 1_000_000);
  if (values['max-pending-upgrades'] !== undefined) opts.maxPendingUpgrades = int('--max-pending-upgrades', values['max-pending-upgrades'], 1, 1_000_000);
  const perClient = values['max-pending-upgrades-per-client'];
  if (perClient !== undefined) opts.maxPendingUpgradesPerClient = int('--max-pending-upgrades-per-client', perClient, 1, 1_000_000);
  if (values['handshake-timeout'] !== undefined) opts.handshakeTimeoutMs = int('--handshake-timeout', values['handshake-timeout'], 1, 3_600_000);
  if (values['idle-timeout'] !== undefined) opts.idleTimeoutMs = int('--idle-timeout', values['idle-timeout'], 0, 86_400_000);
  if (values['tls-listen'] !== undefined) {
    let tlsTarget: StreamTarget;
    if (values['tls-agent'] !== undefined) {
      try {
        tlsTarget = parseTarget(values['tls-agent']);
      } catch (err) {
        if (err instanceof TransportError) throw new CliUsageError(`--tls-agent: ${err.message}`);
        throw err;
      }
    } else if (target.kind === 'vsock') {
      tlsTarget = { kind: 'vsock', cid: target.cid, port: TLS_PORT };
    } else {
      throw new CliUsageError("--tls-listen with a tcp/unix agent needs --tls-agent TARGET (the agent's TLS port)");
    }
    opts.tlsRelay = { listen: hostPort('--tls-listen', values['tls-listen']), target: tlsTarget, proxyProtocol: opts.proxyProtocol ?? false };
  } else if (values['tls-agent'] !== undefined) {
    throw new CliUsageError('--tls-agent goes with --tls-listen');
  }
  if (values.egress !== undefined) {
    opts.egress = {
      listen: parseEgressListen(values.egress, target),
      allowNonGlobal: values['egress-allow-nonglobal'] ?? [],
      ...(values['egress-resolver'] === undefined ? {} : { resolvers: values['egress-resolver'].map(parseResolver) }),
      ...(values['egress-max-flows'] === undefined ? {} : { maxFlows: int('--egress-max-flows', values['egress-max-flows'], 1, 1_000_000) }),
    };
  } else if (values['egress-allow-nonglobal'] !== undefined || values['egress-resolver'] !== undefined || values['egress-max-flows'] !== undefined) {
    throw new CliUsageError('--egress-allow-nonglobal, --egress-resolver and --egress-max-flows need --egress');
  }
  if (values.credentials !== undefined) opts.credentials = parseCredentialsListen(values.credentials, target);
  return opts;
}

/** Where a host service the enclave reaches (credentials, egress dialer) listens, as both take it. */
type HostServiceListen = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string } | { kind: 'vsock'; port: number; agentCid: number };

/**
 * `--credentials` / `--egress`: vsock[:PORT] (only the agent's CID is served: every enclave on the instance reaches
 * the port, so the agent must be a vsock target), tcp on a loopback address only (whoever reaches the port would
 * get the host's credentials, or have it dial for them), or unix:/path.
 */
function parseHostServiceListen(flag: string, what: string, text: string, agent: StreamTarget, defaultVsockPort: number): HostServiceListen {
  const v = /^vsock(?::(\d+))?$/.exec(text);
  if (v) {
    if (agent.kind !== 'vsock') {
      throw new CliUsageError(`${flag} ${text} serves only the agent's enclave CID, known only with a vsock agent (--agent vsock:CID:PORT or --enclave-cid CID); with a ${agent.kind} agent use ${flag} tcp:127.0.0.1:PORT or unix:/path`);
    }
    const port = v[1] === undefined ? defaultVsockPort : int(`${flag} vsock port`, v[1], 1, 0xffffffff);
    return { kind: 'vsock', port, agentCid: agent.cid };
  }
  const usage = `${flag}: expected vsock, vsock:PORT, tcp:HOST:PORT or unix:/path, found "${text}"`;
  let t;
  try {
    t = parseTarget(text);
  } catch (err) {
    if (err instanceof TransportError) throw new CliUsageError(usage);
    throw err;
  }
  if (t.kind === 'tcp') {
    loopbackOnly(flag, what, t.host, text);
    return { kind: 'tcp', host: t.host, port: t.port };
  }
  if (t.kind === 'unix') return { kind: 'unix', path: t.path };
  throw new CliUsageError(usage);
}

const parseCredentialsListen = (text: string, agent: StreamTarget): CredentialsListen =>
  parseHostServiceListen('--credentials', 'the credentials server', text, agent, DEFAULT_CREDENTIALS_VSOCK_PORT);

const parseEgressListen = (text: string, agent: StreamTarget): EgressDialerListen => parseHostServiceListen('--egress', 'the egress dialer', text, agent, DEFAULT_EGRESS_VSOCK_PORT);

function parseResolver(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+))(?::(\d+))?$/.exec(text);
  if (!m) throw new CliUsageError(`--egress-resolver expects IP[:PORT] or [IPv6][:PORT], found "${text}"`);
  return { host: m[1] ?? m[2]!, port: m[3] === undefined ? 53 : int('--egress-resolver port', m[3], 1, 65535) };
}

function hostPort(flag: string, text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(text);
  if (!m) throw new CliUsageError(`${flag} expects HOST:PORT or [IPv6]:PORT, found "${text}"`);
  return { host: m[1] ?? m[2]!, port: int(`${flag} port`, m[3]!, 0, 65535) };
}

function int(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new CliUsageError(`${flag} expects an integer, found "${text}"`);
  const n = Number(text);
  if (n < min || n > max) throw new CliUsageError(`${flag} expects ${min}..${max}, found ${n}`);
  return n;
}

function readPem(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new CliUsageError(`${flag}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** Starts the bridge, prints its URL, waits until `stop()` resolves, then shuts down. Returns the exit code. */
export async function serveBridge(args: string[], io: CliIo, stop: () => Promise<unknown>, logger?: Logger): Promise<number> {
  const { logLevel, egress, tlsRelay, credentials, ...opts } = parseBridgeArgs(args);
  const log = logger ?? pino({ level: logLevel, base: { name: 'enclave-agent-bridge' } }, pino.destination(2));
  const dialer = egress === undefined ? undefined : await startEgressDialer({ ...egress, logger: log });
  let creds;
  try {
    creds = credentials === undefined ? undefined : await startCredentialsServer({ listen: credentials, logger: log });
  } catch (err) {
    await dialer?.close();
    throw err;
  }
  let bridge;
  let relay;
  try {
    bridge = await startBridge({ ...opts, logger: log });
    relay = tlsRelay === undefined ? undefined : await startTcpRelay({ ...tlsRelay, logger: log }).catch(async (err: unknown) => {
      await bridge!.close();
      throw err;
    });
  } catch (err) {
    await dialer?.close();
    await creds?.close();
    throw err;
  }
  io.out(bridge.url);
  if (bridge.opsUrl !== null) io.out(bridge.opsUrl);
  if (relay !== undefined) io.out(`tls relay ${relay.address}`);
  if (dialer !== undefined) io.out(`egress dialer ${dialer.address}`);
  if (creds !== undefined) io.out(`credentials ${creds.address}`);
  await stop();
  await relay?.close();
  await bridge.close();
  await dialer?.close();
  await creds?.close();
  return 0;
}

export const command: CliCommand = {
  help,
  run(args, io) {
    return serveBridge(args, io, untilSignal);
  },
};
