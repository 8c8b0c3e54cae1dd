// `enclave-agent logs`: the host side of the agent's log stream (enclave.toml `[log] sink = "vsock"`). Runs on
// the parent instance next to the bridge: listens (vsock by default, port log.vsock_port) for the enclave's
// connection and writes every JSON line it receives to stdout or a file, until SIGINT/SIGTERM. Every enclave on
// the instance reaches that port, so over vsock it reads only the enclave named by --enclave-cid (required).
// The enclave connects to us; this command never connects anywhere.
import { closeSync, createWriteStream, openSync, readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { loadConfig } from '../config.ts';
import { startLogSinkServer, type LogSinkListen } from '../host/log-sink-server.ts';
import type { EnclaveInfo } from '../host/activity-enclave.ts';
import { DEFAULT_MAX_LIVE_CLIENTS } from '../host/activity-live.ts';
import { isLoopbackHost } from '../host/listen.ts';
import { startActivityService, type ActivityService, type ActivityUiOptions } from '../host/activity-service.ts';
import { PageTokenError, readTokenFile } from '../host/activity-token.ts';
import { intFlag, loopbackOnly, parseFlags, resolveConfigPath } from './flags.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';
import { untilSignal } from './signals.ts';

const help = `Usage: enclave-agent logs --enclave-cid CID [--listen vsock:PORT] [--out FILE] [options]
       enclave-agent logs --listen unix:PATH|tcp:HOST:PORT [--out FILE] [options]

Receives the agent's log stream (enclave.toml [log] sink = "vsock": operational logs and transaction
records as JSON lines) and writes each line to stdout or a file. Runs on the parent instance until SIGINT
or SIGTERM. Lines that are not one JSON object, or longer than --max-line-bytes, are dropped and counted
(one warning per 10 s gives the counts, never a line's content).

Where to listen (default vsock:<[log] vsock_port of enclave.toml>, 5008 without a config):
  --listen vsock:PORT       the enclave connects to the parent's CID on this port (listens on any local CID)
  --enclave-cid CID         required with vsock (the default): the enclave whose logs these are (its
                            nitro-cli run-enclave --enclave-cid). Every enclave on the instance reaches the
                            port; a connection from any other CID is closed unread and counted
  --listen unix:PATH        a Unix socket (development)
  --listen tcp:HOST:PORT    TCP on loopback only (development; 127.0.0.1, [::1], localhost; port 0 picks a
                            free port)

Options:
  --out FILE                append the JSON lines to FILE (created if missing) instead of stdout
  --max-line-bytes N        longest accepted line, newline excluded (default 65536)
  --max-connections N       concurrent agent connections (default 16); at the cap, one open 5 s without a
                            complete line is closed to make room (counted as silent), else the newest is refused
  --config F                enclave.toml for the default port (else $ENCLAVE_AGENT_CONFIG, else ./enclave.toml)
  --log-level LEVEL         fatal|error|warn|info|debug|silent (default info); diagnostics (connections,
                            dropped lines — never their content) go to stderr as JSON

The activity store and page (see README "Activity page"):
  --db FILE                 keep the transaction records in SQLite (WAL; created 0600 if missing). Records
                            then go to the database only, operational lines to stdout (or, with --out,
                            every line to FILE as well)
  --retain-days N           delete records older than N days (default 7)
  --retain-rows N           keep at most N records (default 1000000); the oldest go first, N/32 at a time
  --ui HOST:PORT            serve the activity page (needs --db); e.g. 127.0.0.1:8090. Any address but
                            loopback requires a token, 16+ characters: $ENCLAVE_AGENT_UI_TOKEN or
                            --ui-token-file (--ui-token works too, but shows in ps)
  --ui-token-file PATH      read the token the page asks for from PATH (one line; keep it mode 0600). The
                            file is looked at again on every sign-in and API call, and every 30 s: replace
                            it (write a new file, rename it over) to rotate the token; every session then ends
  --ui-token TOKEN          the token on the command line: every user of the machine sees it in ps and
                            /proc/PID/cmdline (a warning says so); prefer the two above
  --ui-max-connections N    connections to the page at once (default 256); past it 503
                            ACTIVITY_TOO_MANY_CONNECTIONS
  --ui-max-live N           live-tail connections at once (default 64); past it 503 LIVE_TAIL_FULL
  --ui-max-live-per-address N
                            of those, from one client address, an IPv6 /64 as one (default 16); past it 429
                            LIVE_TAIL_CLIENT_FULL
  --ui-session-idle-minutes N
                            with a token: a session without an API call for N minutes ends (default 30)
  --ui-session-max-hours N  with a token: a session ends N hours after its sign-in (default 12)
  --ops URL                 the agent's ops endpoint (/health, /metrics) shown on the page
  --pcrs FILE               the enclave's PCRs for the page: {"PCR0": ...} or nitro-cli's {"Measurements": ...}

Prints one status line on stderr once listening, and the counts when it stops.`;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface LogsOptions {
  listen: LogSinkListen;
  /** null: standard output. */
  out: string | null;
  maxLineBytes?: number;
  maxConnections?: number;
  logLevel: string;
  db?: { file: string; retainDays?: number; retainRows?: number };
  ui?: ActivityUiOptions;
  /** Said once the logger is up: a token on the command line, a token file others can read. */
  warnings?: string[];
  ops?: string;
  enclave?: Partial<EnclaveInfo>;
}

/** "HOST:PORT" / "[v6]:PORT" for --ui. */
export function parseUi(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(text);
  if (!m) throw new CliUsageError(`--ui expects HOST:PORT (e.g. 127.0.0.1:8090), found "${text}"`);
  return { host: m[1] ?? m[2]!, port: intFlag('--ui port', m[3]!, 0, 65535) };
}

/** The PCRs of a pcrs.json ({"PCR0": hex, ...}) or of nitro-cli's build output ({"Measurements": {...}}). */
export function readPcrs(file: string): Record<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CliUsageError(`--pcrs: cannot read ${file} as JSON (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const source = (value as { Measurements?: unknown }).Measurements ?? value;
  const pcrs: Record<string, string> = {};
  if (typeof source === 'object' && source !== null) {
    for (const [k, v] of Object.entries(source)) if (/^PCR\d{1,2}$/.test(k) && typeof v === 'string' && /^[0-9a-fA-F]{64,128}$/.test(v)) pcrs[k] = v.toLowerCase();
  }
  if (Object.keys(pcrs).length === 0) throw new CliUsageError(`--pcrs: ${file} holds no "PCRn": hex entries`);
  return pcrs;
}

/** Over vsock the only peer read; without it any enclave on the instance could inject lines and records. */
function vsockListen(port: number, enclaveCid: number | undefined, what: string): LogSinkListen {
  if (enclaveCid === undefined) {
    throw new CliUsageError(`${what} reads only the enclave's CID: give --enclave-cid CID (its nitro-cli run-enclave --enclave-cid; other enclaves on this instance are closed unread), or --listen unix:PATH|tcp:HOST:PORT`);
  }
  return { kind: 'vsock', port, enclaveCid };
}

/**
 * Parses "vsock:PORT", "unix:PATH", "tcp:HOST:PORT" / "tcp:[v6]:PORT" into where the sink listens; vsock needs
 * `enclaveCid` (--enclave-cid), the only peer it reads.
 */
export function parseListen(text: string, enclaveCid?: number): LogSinkListen {
  const expected = `--listen expects vsock:PORT, unix:PATH or tcp:HOST:PORT, found "${text}"`;
  const colon = text.indexOf(':');
  if (colon < 0) throw new CliUsageError(expected);
  const kind = text.slice(0, colon);
  const rest = text.slice(colon + 1);
  if (kind === 'unix') {
    if (rest === '') throw new CliUsageError(`${expected} (empty path)`);
    return { kind: 'unix', path: rest };
  }
  if (kind === 'vsock') {
    if (!/^\d+$/.test(rest)) throw new CliUsageError(`${expected} (vsock takes only a port: it listens on any local CID; --enclave-cid names the peer)`);
    return vsockListen(intFlag('--listen vsock port', rest, 1, 0xffffffff), enclaveCid, `--listen ${text}`);
  }
  if (kind === 'tcp') {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(rest);
    if (!m) throw new CliUsageError(expected);
    const host = m[1] ?? m[2]!;
    // Whoever reaches the port could write lines and transaction records as the enclave.
    loopbackOnly('--listen', 'the log sink', host, text);
    return { kind: 'tcp', host, port: intFlag('--listen tcp port', m[3]!, 0, 65535) };
  }
  throw new CliUsageError(`${expected} (unknown scheme "${kind}")`);
}

/** Turns the command line into options; reads enclave.toml only when --listen is absent. */
export function parseLogsArgs(args: string[], env: NodeJS.ProcessEnv = process.env): LogsOptions {
  const { values } = parseFlags(args, {
    listen: { type: 'string' },
    'enclave-cid': { type: 'string' },
    out: { type: 'string' },
    'max-line-bytes': { type: 'string' },
    'max-connections': { type: 'string' },
    config: { type: 'string' },
    'log-level': { type: 'string' },
    db: { type: 'string' },
    'retain-days': { type: 'string' },
    'retain-rows': { type: 'string' },
    ui: { type: 'string' },
    'ui-token': { type: 'string' },
    'ui-token-file': { type: 'string' },
    'ui-max-connections': { type: 'string' },
    'ui-max-live': { type: 'string' },
    'ui-max-live-per-address': { type: 'string' },
    'ui-session-idle-minutes': { type: 'string' },
    'ui-session-max-hours': { type: 'string' },
    ops: { type: 'string' },
    pcrs: { type: 'string' },
  });
  let listen: LogSinkListen;
  const configFile = resolveConfigPath(values.config, env);
  const config = values.listen === undefined || (values.db !== undefined && configFile !== undefined) ? loadConfig(configFile, env) : null;
  // VMADDR_CID_ANY (0xffffffff) is "any": exactly what this flag exists to refuse.
  const enclaveCid = values['enclave-cid'] === undefined ? undefined : intFlag('--enclave-cid', values['enclave-cid'], 0, 0xfffffffe);
  if (values.listen !== undefined) {
    listen = parseListen(values.listen, enclaveCid);
  } else {
    listen = vsockListen(config!.log.vsock_port, enclaveCid, `the default --listen vsock:${config!.log.vsock_port} ([log] vsock_port)`);
  }
  if (enclaveCid !== undefined && listen.kind !== 'vsock') throw new CliUsageError(`--enclave-cid goes with a vsock listener, not --listen ${values.listen!}`);
  const opts: LogsOptions = { listen, out: values.out ?? null, logLevel: values['log-level'] ?? 'info' };
  if (opts.out === '') throw new CliUsageError('--out expects a file name');
  if (!LEVELS.includes(opts.logLevel)) throw new CliUsageError(`--log-level expects ${LEVELS.join('|')}, found "${opts.logLevel}"`);
  if (values['max-line-bytes'] !== undefined) opts.maxLineBytes = intFlag('--max-line-bytes', values['max-line-bytes'], 2, 64 * 1024 * 1024);
  if (values['max-connections'] !== undefined) opts.maxConnections = intFlag('--max-connections', values['max-connections'], 1, 10_000);
  const uiFlags = ['ui-token', 'ui-token-file', 'ui-max-connections', 'ui-max-live', 'ui-max-live-per-address', 'ui-session-idle-minutes', 'ui-session-max-hours', 'ops'] as const;
  if (values.db === undefined) {
    for (const f of ['retain-days', 'retain-rows', 'ui', ...uiFlags, 'pcrs'] as const) if (values[f] !== undefined) throw new CliUsageError(`--${f} needs --db FILE`);
    return opts;
  }
  if (values.db === '') throw new CliUsageError('--db expects a file name');
  opts.db = { file: values.db };
  if (values['retain-days'] !== undefined) opts.db.retainDays = intFlag('--retain-days', values['retain-days'], 1, 36_500);
  if (values['retain-rows'] !== undefined) opts.db.retainRows = intFlag('--retain-rows', values['retain-rows'], 1, 1_000_000_000);
  if (values.ui !== undefined) {
    opts.ui = parseUi(values.ui);
    const token = uiToken(values['ui-token'], values['ui-token-file'], env, opts);
    if (token !== undefined) {
      // A file is followed (re-read when it changes); read here once so a bad one is a usage error now.
      if (values['ui-token-file'] !== undefined) opts.ui.tokenFile = values['ui-token-file'];
      else opts.ui.token = token;
    } else if (!isLoopbackHost(opts.ui.host)) {
      throw new CliUsageError(`--ui ${values.ui}: an address other than loopback needs a token of 16+ characters ($ENCLAVE_AGENT_UI_TOKEN, --ui-token-file PATH or --ui-token)`);
    }
    Object.assign(opts.ui, uiBounds(values));
    if (token === undefined && (values['ui-session-idle-minutes'] !== undefined || values['ui-session-max-hours'] !== undefined)) {
      (opts.warnings ??= []).push('--ui-session-idle-minutes and --ui-session-max-hours apply only with a token: this page has none, so no sessions');
    }
  } else {
    for (const f of uiFlags) if (values[f] !== undefined) throw new CliUsageError(`--${f} needs --ui HOST:PORT`);
  }
  if (values.ops !== undefined) {
    if (!/^https?:\/\/[^\s]+$/.test(values.ops)) throw new CliUsageError(`--ops expects an http:// or https:// URL, found "${values.ops}"`);
    opts.ops = values.ops;
  }
  opts.enclave = {
    ...(config === null ? {} : { name: config.name, mode: config.mode }),
    ...(values.pcrs === undefined ? {} : { pcrs: readPcrs(values.pcrs), pcrsSource: values.pcrs }),
  };
  return opts;
}

/** The page's bounds from their flags (absent: the server's defaults). */
function uiBounds(values: Partial<Record<'ui-max-connections' | 'ui-max-live' | 'ui-max-live-per-address' | 'ui-session-idle-minutes' | 'ui-session-max-hours', string>>): Partial<ActivityUiOptions> {
  const b: Partial<ActivityUiOptions> = {};
  const v = values;
  if (v['ui-max-connections'] !== undefined) b.maxConnections = intFlag('--ui-max-connections', v['ui-max-connections'], 1, 100_000);
  if (v['ui-max-live'] !== undefined) b.maxLive = intFlag('--ui-max-live', v['ui-max-live'], 1, 10_000);
  if (v['ui-max-live-per-address'] !== undefined) {
    b.maxLivePerAddress = intFlag('--ui-max-live-per-address', v['ui-max-live-per-address'], 1, 10_000);
    const all = b.maxLive ?? DEFAULT_MAX_LIVE_CLIENTS;
    if (b.maxLivePerAddress > all) throw new CliUsageError(`--ui-max-live-per-address ${b.maxLivePerAddress} is more than the live tails in all (--ui-max-live ${all})`);
  }
  if (v['ui-session-idle-minutes'] !== undefined) b.sessionIdleMs = intFlag('--ui-session-idle-minutes', v['ui-session-idle-minutes'], 1, 7 * 24 * 60) * 60_000;
  if (v['ui-session-max-hours'] !== undefined) b.sessionLifetimeMs = intFlag('--ui-session-max-hours', v['ui-session-max-hours'], 1, 365 * 24) * 3_600_000;
  return b;
}

/**
 * The page's token: --ui-token, else --ui-token-file's first line, else $ENCLAVE_AGENT_UI_TOKEN. The first shows
 * in ps to every user of the machine, and a file others can read gives it away too: each adds a warning.
 */
function uiToken(flag: string | undefined, file: string | undefined, env: NodeJS.ProcessEnv, opts: LogsOptions): string | undefined {
  if (flag !== undefined && file !== undefined) throw new CliUsageError('give either --ui-token or --ui-token-file, not both');
  let token: string | undefined;
  let from: string;
  if (flag !== undefined) {
    token = flag;
    from = '--ui-token';
    (opts.warnings ??= []).push('--ui-token is on the command line, where every user of this machine can read it (ps, /proc/PID/cmdline): use $ENCLAVE_AGENT_UI_TOKEN or --ui-token-file PATH');
  } else if (file !== undefined) {
    token = tokenFromFile(file, opts);
    from = `--ui-token-file ${file}`;
  } else {
    token = env.ENCLAVE_AGENT_UI_TOKEN;
    from = '$ENCLAVE_AGENT_UI_TOKEN';
  }
  if (token !== undefined && token.length < 16) throw new CliUsageError(`${from}: the token needs at least 16 characters`);
  return token;
}

/** The token file's one line (activity-token.ts), its faults as usage errors; one others can read is warned about. */
function tokenFromFile(file: string, opts: LogsOptions): string {
  try {
    const { token, othersCanRead } = readTokenFile(file);
    if (othersCanRead) (opts.warnings ??= []).push(`--ui-token-file ${file} can be read by users other than its owner: chmod 600 it`);
    return token;
  } catch (err) {
    if (err instanceof PageTokenError) throw new CliUsageError(`--ui-token-file: ${err.message}`);
    throw err;
  }
}

/** Opens FILE for appending now, so a bad path is one error line before anything listens. */
function openOutput(file: string): Writable {
  let fd: number;
  try {
    fd = openSync(file, 'a', 0o640);
  } catch (err) {
    throw new CliUsageError(`--out: cannot open ${file} for appending (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    return createWriteStream('', { fd, autoClose: true });
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

function describeListen(l: LogSinkListen): string {
  return l.kind === 'vsock' ? `vsock port ${l.port}, enclave CID ${l.enclaveCid} only` : l.kind === 'unix' ? l.path : `${l.host ?? '127.0.0.1'}:${l.port}`;
}

/**
 * Listens, prints a status line on stderr, waits until `stop()` resolves, then closes and prints the counts.
 * `output` replaces standard output when --out is not given (tests). Returns the exit code.
 */
export async function serveLogs(args: string[], io: CliIo, stop: () => Promise<unknown>, opts: { output?: Writable; logger?: Logger } = {}): Promise<number> {
  const o = parseLogsArgs(args);
  const logger = opts.logger ?? pino({ level: o.logLevel, base: { name: 'enclave-agent-logs' } }, pino.destination(2));
  for (const w of o.warnings ?? []) logger.warn(w);
  const file = o.out === null ? null : openOutput(o.out);
  const output = file ?? opts.output ?? process.stdout;
  let server: Awaited<ReturnType<typeof startLogSinkServer>> | undefined;
  let activity: ActivityService | null = null;
  try {
    if (o.db !== undefined) {
      activity = await startActivityService({
        ...o.db,
        ...(o.ui === undefined ? {} : { ui: o.ui }),
        ops: o.ops ?? null,
        ...(o.enclave === undefined ? {} : { enclave: o.enclave }),
        sinkStats: () => ({ ...server?.stats }),
        logger,
      });
    }
    const store = activity;
    server = await startLogSinkServer({
      listen: o.listen,
      output,
      logger,
      // With --out, every line still goes to the file; without, records go to the database only.
      ...(store === null ? {} : { onLine: (_text: string, value: Record<string, unknown>) => store.takeRecord(value) && o.out === null }),
      ...(o.maxLineBytes === undefined ? {} : { maxLineBytes: o.maxLineBytes }),
      ...(o.maxConnections === undefined ? {} : { maxConnections: o.maxConnections }),
    });
  } catch (err) {
    // Listen failures and a missing vsock addon are AgentErrors: the dispatcher prints them as one line.
    file?.destroy();
    await activity?.close();
    throw err;
  }
  const where = activity === null ? (o.out ?? 'stdout') : `${o.db!.file}${o.out === null ? ' (operational lines to stdout)' : ` and ${o.out}`}`;
  io.err(`enclave-agent logs: listening on ${server.address} (${describeListen(o.listen)}), writing JSON lines to ${where}`);
  if (activity?.url) io.err(`enclave-agent logs: activity page on ${activity.url}${o.ui?.token === undefined && o.ui?.tokenFile === undefined ? '' : ' (asks for its token)'}`);
  await stop();
  await server.close();
  await activity?.close();
  if (file !== null) await new Promise<void>((resolve) => file.end(resolve));
  const s = server.stats;
  io.err(`enclave-agent logs: stopped; ${s.lines} lines written, ${s.invalid} dropped (not JSON), ${s.oversized} dropped (too long), ${s.connections} connections, ${s.refused} refused, ${s.foreignPeers} from other CIDs, ${s.webRequests} HTTP requests (closed unread), ${s.silent} silent (closed for room)`);
  if (activity !== null) {
    const a = activity.store.stats;
    io.err(`enclave-agent logs: database ${o.db!.file}: ${a.inserted} records stored, ${a.dropped} dropped, ${a.rejected} not valid records, ${a.expired} expired, ${a.rows} rows`);
  }
  return 0;
}

export const command: CliCommand = {
  help,
  run(args, io) {
    return serveLogs(args, io, untilSignal);
  },
};
