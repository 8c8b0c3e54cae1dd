// A real EMFILE on the native (vsock engine) listener, in a child process whose RLIMIT_NOFILE is lowered:
// each failed accept is counted and handed to onError, and the listener accepts again once fds are free.
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { available, tempDir } from '../native/helpers.ts';

interface Stats {
  accepted: number;
  acceptErrors: number;
  codes: string[];
}

let child: ChildProcess | undefined;
const sockets: net.Socket[] = [];
const tmp = tempDir();

afterAll(() => {
  for (const s of sockets) s.destroy();
  if (child !== undefined && child.exitCode === null) child.kill('SIGKILL');
  tmp.cleanup();
});

function request<T>(c: ChildProcess, msg: string, key: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: Record<string, unknown>): void => {
      if (!(key in m)) return;
      c.off('message', on);
      resolve(m[key] as T);
    };
    c.on('message', on);
    c.send(msg);
  });
}

function connect(path: string): net.Socket {
  const s = net.connect({ path });
  s.on('error', () => {});
  sockets.push(s);
  return s;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!available)('native listener accept errors', () => {
  it('counts EMFILE, reports it, keeps listening, and accepts again once descriptors are free', async () => {
    const sockPath = tmp.sock();
    const script = fileURLToPath(new URL('./fixtures/native-emfile-child.ts', import.meta.url));
    const c = fork(script, [sockPath], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child = c;
    const ready = await new Promise<{ fds: number }>((resolve, reject) => {
      c.once('exit', (code) => reject(new Error(`child exited (${code})`)));
      c.on('message', (m: { ready?: { fds: number } }) => m.ready !== undefined && resolve(m.ready));
    });
    // Room for two more descriptors: the third connection's accept fails with EMFILE.
    const limit = ready.fds + 2;
    const soft = execFileSync('prlimit', ['--pid', String(c.pid), '--nofile', '--output=SOFT', '--noheadings']).toString().trim();
    execFileSync('prlimit', ['--pid', String(c.pid), `--nofile=${limit}:`]);
    for (let i = 0; i < 6; i++) connect(sockPath);
    let stats = await request<Stats>(c, 'stats', 'stats');
    for (let i = 0; i < 100 && stats.acceptErrors === 0; i++) {
      await sleep(50);
      stats = await request<Stats>(c, 'stats', 'stats');
    }
    expect(stats.acceptErrors).toBeGreaterThan(0);
    expect(stats.codes).toEqual(['EMFILE']);
    expect(stats.accepted).toBeLessThan(6);
    // Descriptors freed: the connections waiting in the backlog are accepted.
    await request(c, 'release', 'released');
    execFileSync('prlimit', ['--pid', String(c.pid), `--nofile=${soft}:`]);
    for (let i = 0; i < 100 && stats.accepted < 6; i++) {
      await sleep(50);
      stats = await request<Stats>(c, 'stats', 'stats');
    }
    expect(stats.accepted).toBe(6);
    const probe = connect(sockPath);
    const echoed = await new Promise<string>((resolve) => {
      probe.once('data', (b: Buffer) => resolve(b.toString()));
      probe.write('ok?');
    });
    expect(echoed).toBe('ok?');
    c.send('exit');
  }, 60_000);
});
