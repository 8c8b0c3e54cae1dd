// Runs `enclave-agent run` as a real child process (TCP standing in for vsock, the NSM simulator standing in
// for /dev/nsm) around test/runtime/fixtures/app.mjs, and reads its JSON log lines from stdout.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const REPO = path.resolve(import.meta.dirname, '../..');

/**
 * Every process the runtime and fault suites start carries this variable (inherited by the agent's app and the
 * app's children), valued with the test worker's pid: leftovers() finds them in /proc/<pid>/environ.
 */
export const OWNER_ENV = 'ENCLAVE_AGENT_TEST_OWNER';
export const OWNER = `${OWNER_ENV}=${process.pid}`;
export const APP = path.join(REPO, 'test/runtime/fixtures/app.mjs');
const BIN = path.join(REPO, 'bin/enclave-agent.js');

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface LogLine {
  msg?: string;
  time?: number;
  [k: string]: unknown;
}

export interface RunOptions {
  /** Extra enclave.toml text (the [app] port and [api] port = 0 are set already). */
  toml?: string;
  /** Environment for the agent (and so the app). */
  env?: Record<string, string>;
  /** Replaces the default flags (--config, --listen tcp:0,0, --nsm simulator, --state-dir). */
  args?: string[];
  /** The app command (default: node app.mjs). */
  command?: string[];
}

export interface RunningAgent {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly dir: string;
  readonly appPort: number;
  readonly lines: LogLine[];
  readonly stderr: () => string;
  /** The app's event lines ("start 123", "signal SIGHUP", ...). */
  events(): string[];
  /** Resolves with the first log line with this msg (after `from` lines already matched). */
  waitForLog(msg: string, timeoutMs?: number, count?: number): Promise<LogLine>;
  waitForEvent(pred: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal: NodeJS.Signals): void;
  /** SIGKILLs the agent, waits for its exit, then SIGKILLs every process that inherited its environment (its apps and their children). */
  dispose(): Promise<void>;
}

/** Python lines serving the app port ($APP_PORT) until killed: an app `run` sees healthy (append to an app's own lines). */
export const PY_SERVE_APP_PORT = [
  'import os, socket, time',
  's = socket.socket()',
  's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  's.bind(("127.0.0.1", int(os.environ["APP_PORT"])))',
  's.listen()',
  'while True: time.sleep(60)',
];

/**
 * Python lines defining attempt(path, flags), a sandboxed app's probe: "ok" when it created the file, "opened" when
 * it opened it for writing, else the errno's name (EROFS, EACCES…).
 */
export const PY_WRITE_ATTEMPT = [
  'import errno, os, sys',
  'def attempt(f, flags):',
  '    try: os.close(os.open(f, flags, 0o644)); return "ok" if flags & os.O_CREAT else "opened"',
  '    except OSError as e: return errno.errorcode[e.errno]',
];

export async function until<T>(fn: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** What an app started with `printf … > "$APP_EVENTS.secret"` wrote of its secrets, once a full line is there. */
export function appSecretsCopy(agent: RunningAgent): Promise<string> {
  return until(
    () => {
      try {
        const t = readFileSync(path.join(agent.dir, 'events.secret'), 'utf8');
        return t.includes('\n') ? t : undefined;
      } catch {
        return undefined;
      }
    },
    10_000,
    "the app's copy of its secrets",
  );
}

export async function startRun(opts: RunOptions = {}): Promise<RunningAgent> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-run-'));
  const appPort = await freePort();
  const configPath = path.join(dir, 'enclave.toml');
  writeFileSync(configPath, `[app]\nport = ${appPort}\nrestart_backoff_ms = 50\n${opts.toml ?? ''}\n[api]\nport = 0\n`);
  const events = path.join(dir, 'events');
  const args = opts.args ?? ['--config', configPath, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state')];
  const command = opts.command ?? [process.execPath, APP];
  const child = spawn(process.execPath, [BIN, 'run', ...args, '--', ...command], {
    cwd: dir,
    env: { ...process.env, APP_PORT: String(appPort), APP_EVENTS: events, ...opts.env, [OWNER_ENV]: String(process.pid) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  let stderr = '';
  let buffered = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const text = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        lines.push(JSON.parse(text) as LogLine);
      } catch {
        lines.push({ msg: `(not JSON) ${text}` });
      }
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => (done = true));
  const readEvents = (): string[] => (existsSync(events) ? readFileSync(events, 'utf8').split('\n').filter((l) => l !== '') : []);
  return {
    child,
    pid: child.pid!,
    dir,
    appPort,
    lines,
    stderr: () => stderr,
    events: readEvents,
    waitForLog(msg, timeoutMs = 30_000, count = 1) {
      return until(
        () => {
          const hits = lines.filter((l) => l.msg === msg);
          if (hits.length >= count) return hits[count - 1];
          if (done) throw new Error(`agent exited before logging "${msg}"; stderr: ${stderr}; log: ${lines.map((l) => l.msg).join(' | ')}`);
          return undefined;
        },
        timeoutMs,
        `log "${msg}" x${count}`,
      );
    },
    waitForEvent(pred, timeoutMs = 30_000) {
      return until(() => readEvents().find(pred), timeoutMs, 'app event');
    },
    exited,
    kill(signal) {
      if (!done) child.kill(signal);
    },
    async dispose() {
      if (!done) child.kill('SIGKILL');
      await exited;
      // The agent's app dies with it (PR_SET_PDEATHSIG), but not what the app started (APP_CHILD). Found by the
      // environment this run passed down (APP_EVENTS is unique to it), never by a pid or group that may have been
      // reused by someone else's process since.
      for (const p of processesWithEnv(`APP_EVENTS=${events}`)) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    },
  };
}

/** Live (non-zombie) processes other than this one whose environment holds `entry` ("NAME=value"). */
export function processesWithEnv(entry: string): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${e}/environ`, 'latin1').split('\0').includes(entry)) continue;
      if (!alive(Number(e))) continue;
      out.push({ pid: Number(e), cmdline: readFileSync(`/proc/${e}/cmdline`, 'latin1').split('\0').join(' ').trim() });
    } catch {
      // exited while we looked, or not ours to read
    }
  }
  return out;
}

/** Live (non-zombie) processes started by this test worker's suites: those whose environment holds OWNER. */
export function leftovers(): { pid: number; cmdline: string }[] {
  return processesWithEnv(OWNER);
}

/**
 * Waits (bounded) until no process started by this worker's suites is alive, and returns those still alive
 * after `timeoutMs` — [] when every child was ended. SIGKILL is asynchronous, hence the wait.
 */
export async function settledLeftovers(timeoutMs = 10_000): Promise<{ pid: number; cmdline: string }[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const left = leftovers();
    if (left.length === 0 || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Children of `pid` that are zombies (state Z in /proc/<child>/stat). */
export function zombieChildren(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid ... — comm may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[1]) === pid && rest[0] === 'Z') out.push(Number(entry));
  }
  return out;
}

/** True while a process with this pid exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
