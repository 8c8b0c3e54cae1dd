// `enclave-agent logs`: the host side of the agent's log stream (enclave.toml `[log] sink = "vsock"`). Runs on
// the parent instance next to the bridge: listens (vsock any CID by default, port log.vsock_port) for the
// enclave's connection and writes every JSON line it receives to stdout or a file, until SIGINT/SIGTERM.
// The enclave connects to us; this command never connects anywhere.
import { closeSync, createWriteStream, openSync } from 'node:fs';
import type { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import { loadConfig } from '../config.ts';
import { startLogSinkServer, type LogSinkListen } from '../host/log-sink-server.ts';
import { intFlag, parseFlags, resolveConfigPath } from './flags.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';
import { untilSignal } from './signals.ts';

const help = `Usage: enclave-agent logs [--listen ADDRESS] [--out FILE] [options]

Receives the agent's log stream (enclave.toml [log] sink = "vsock": operational logs and transaction
records as JSON lines) and writes each line to stdout or a file. Runs on the parent instance until SIGINT
or SIGTERM. Lines that are not one JSON object, or longer than --max-line-bytes, are dropped and counted.

Where to listen (default vsock:<[log] vsock_port of enclave.toml>, 5008 without a config):
  --listen vsock:PORT       the enclave connects to the parent's CID on this port (listens on any CID)
  --listen unix:PATH        a Unix socket (development)
  --listen tcp:HOST:PORT    TCP (development; [IPv6]:PORT allowed; port 0 picks a free port)

Options:
  --out FILE                append the JSON lines to FILE (created if missing) instead of stdout
  --max-line-bytes N        longest accepted line, newline excluded (default 65536)
  --max-connections N       concurrent agent connections (default 16)
  --config F                enclave.toml for the default port (else $ENCLAVE_AGENT_CONFIG, else ./enclave.toml)
  --log-level LEVEL         fatal|error|warn|info|debug|silent (default info); diagnostics (connections,
                            dropped lines — never their content) go to stderr as JSON

Prints one status line on stderr once listening, and the counts when it stops.`;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface LogsOptions {
  listen: LogSinkListen;
  /** null: standard output. */
  out: string | null;
  maxLineBytes?: number;
  maxConnections?: number;
  logLevel: string;
}

/** Parses "vsock:PORT", "unix:PATH", "tcp:HOST:PORT" / "tcp:[v6]:PORT" into where the sink listens. */
export function parseListen(text: string): LogSinkListen {
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
    if (!/^\d+$/.test(rest)) throw new CliUsageError(`${expected} (vsock takes only a port: it listens on any CID)`);
    return { kind: 'vsock', port: intFlag('--listen vsock port', rest, 1, 0xffffffff) };
  }
  if (kind === 'tcp') {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d+)$/.exec(rest);
    if (!m) throw new CliUsageError(expected);
    return { kind: 'tcp', host: m[1] ?? m[2]!, port: intFlag('--listen tcp port', m[3]!, 0, 65535) };
  }
  throw new CliUsageError(`${expected} (unknown scheme "${kind}")`);
}

/** Turns the command line into options; reads enclave.toml only when --listen is absent. */
export function parseLogsArgs(args: string[], env: NodeJS.ProcessEnv = process.env): LogsOptions {
  const { values } = parseFlags(args, {
    listen: { type: 'string' },
    out: { type: 'string' },
    'max-line-bytes': { type: 'string' },
    'max-connections': { type: 'string' },
    config: { type: 'string' },
    'log-level': { type: 'string' },
  });
  let listen: LogSinkListen;
  if (values.listen !== undefined) {
    listen = parseListen(values.listen);
  } else {
    const file = resolveConfigPath(values.config, env);
    listen = { kind: 'vsock', port: loadConfig(file, env).log.vsock_port };
  }
  const opts: LogsOptions = { listen, out: values.out ?? null, logLevel: values['log-level'] ?? 'info' };
  if (opts.out === '') throw new CliUsageError('--out expects a file name');
  if (!LEVELS.includes(opts.logLevel)) throw new CliUsageError(`--log-level expects ${LEVELS.join('|')}, found "${opts.logLevel}"`);
  if (values['max-line-bytes'] !== undefined) opts.maxLineBytes = intFlag('--max-line-bytes', values['max-line-bytes'], 2, 64 * 1024 * 1024);
  if (values['max-connections'] !== undefined) opts.maxConnections = intFlag('--max-connections', values['max-connections'], 1, 10_000);
  return opts;
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
  return l.kind === 'vsock' ? `vsock port ${l.port}` : l.kind === 'unix' ? l.path : `${l.host ?? '127.0.0.1'}:${l.port}`;
}

/**
 * Listens, prints a status line on stderr, waits until `stop()` resolves, then closes and prints the counts.
 * `output` replaces standard output when --out is not given (tests). Returns the exit code.
 */
export async function serveLogs(args: string[], io: CliIo, stop: () => Promise<unknown>, opts: { output?: Writable; logger?: Logger } = {}): Promise<number> {
  const o = parseLogsArgs(args);
  const logger = opts.logger ?? pino({ level: o.logLevel, base: { name: 'enclave-agent-logs' } }, pino.destination(2));
  const file = o.out === null ? null : openOutput(o.out);
  const output = file ?? opts.output ?? process.stdout;
  let server;
  try {
    server = await startLogSinkServer({
      listen: o.listen,
      output,
      logger,
      ...(o.maxLineBytes === undefined ? {} : { maxLineBytes: o.maxLineBytes }),
      ...(o.maxConnections === undefined ? {} : { maxConnections: o.maxConnections }),
    });
  } catch (err) {
    // Listen failures and a missing vsock addon are AgentErrors: the dispatcher prints them as one line.
    file?.destroy();
    throw err;
  }
  io.err(`enclave-agent logs: listening on ${server.address} (${describeListen(o.listen)}), writing JSON lines to ${o.out ?? 'stdout'}`);
  await stop();
  await server.close();
  if (file !== null) await new Promise<void>((resolve) => file.end(resolve));
  const s = server.stats;
  io.err(`enclave-agent logs: stopped; ${s.lines} lines written, ${s.invalid} dropped (not JSON), ${s.oversized} dropped (too long), ${s.connections} connections, ${s.refused} refused`);
  return 0;
}

export const command: CliCommand = {
  help,
  run(args, io) {
    return serveLogs(args, io, untilSignal);
  },
};
