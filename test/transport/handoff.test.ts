// Handing accepted connections to a REAL worker thread (node:worker_threads, booted with tsx as the decrypt pool
// boots its workers): the main thread accepts and detaches, posts the HandedConnection, the worker adopts and
// serves it. For Node TCP, Node unix and the addon's unix family (the exact code of vsock).
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readdirSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type { Duplex } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adoptConnection, detachConnection, discardHandedConnection } from '../../src/transport/handoff.ts';
import type { HandedConnection } from '../../src/transport/handoff.ts';
import { loadNative, nativeStats } from '../../src/transport/native.ts';
import type { NativeStream } from '../../src/transport/native-stream.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import type { ConnectionInfo, Listener } from '../../src/transport/types.ts';
import { listenUnix } from '../../src/transport/unix.ts';
import { listenUnixNative } from '../../src/transport/unix-native.ts';
import { available, closed, openFds, readAll, tempDir } from '../native/helpers.ts';

type Kind = 'tcp' | 'unix' | 'native-unix';
type Msg = { id: number } & Record<string, unknown>;
type Handed = { id: number; h: HandedConnection } | { error: unknown };
type Custom = (stream: Duplex, info: ConnectionInfo) => void;

const BIG = 300 * 1024 + 17; // > 256 KiB, not a multiple of any chunk size
const WAIT_MS = 15_000;

function spawnWorker(): Worker {
  const api = path.join(path.dirname(createRequire(import.meta.url).resolve('tsx/esm/api')), 'index.mjs');
  const entry = new URL('./fixtures/handoff-worker.ts', import.meta.url).href;
  const boot = `import(${JSON.stringify(pathToFileURL(api).href)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true });
}

/** The worker's messages by connection id; `next` waits (bounded) for one carrying `key`. */
class WorkerSide {
  readonly worker = spawnWorker();
  readonly #seen = new Map<number, Msg[]>();
  readonly #waiters = new Set<() => void>();
  #failure: Error | undefined;

  constructor() {
    this.worker.on('message', (m: Msg) => {
      const list = this.#seen.get(m.id) ?? [];
      list.push(m);
      this.#seen.set(m.id, list);
      for (const w of this.#waiters) w();
    });
    this.worker.on('error', (err) => {
      this.#failure = err;
      for (const w of this.#waiters) w();
    });
  }

  next(id: number, key: string): Promise<Msg> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        if (this.#failure !== undefined) {
          reject(this.#failure);
          return true;
        }
        const m = this.#seen.get(id)?.find((x) => key in x);
        if (m !== undefined) resolve(m);
        return m !== undefined;
      };
      if (check()) return;
      const waiter = (): void => {
        if (!check()) return;
        this.#waiters.delete(waiter);
        clearTimeout(timer);
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`worker sent no '${key}' for connection ${id} within ${WAIT_MS} ms`));
      }, WAIT_MS);
      this.#waiters.add(waiter);
    });
  }
}

let seq = 0;

/** A listener of one kind whose connections are detached a loop turn after accept and posted to the worker. */
class Rig {
  readonly #jobs: { mode: 'echo' | 'speak' | Custom; payload?: Buffer; handed: (r: Handed) => void }[] = [];
  listener!: Listener;
  target!: net.NetConnectOpts;

  constructor(
    readonly kind: Kind,
    readonly side: WorkerSide,
  ) {}

  async start(sockPath: string): Promise<this> {
    const opts = { onConnection: this.#onConnection, handoff: true };
    if (this.kind === 'tcp') {
      this.listener = await listenTcp({ port: 0 }, opts);
      this.target = { host: '127.0.0.1', port: this.listener.port! };
    } else {
      this.listener = this.kind === 'unix' ? await listenUnix({ path: sockPath }, opts) : await listenUnixNative(sockPath, opts);
      this.target = { path: sockPath };
    }
    return this;
  }

  readonly #onConnection = (stream: Duplex, info: ConnectionInfo): void => {
    const job = this.#jobs.shift();
    if (job === undefined) {
      stream.destroy();
      return;
    }
    const { mode } = job;
    if (typeof mode === 'function') {
      mode(stream, info);
      return;
    }
    // A loop turn later, with the client's first bytes already sent: nothing may have been read meanwhile.
    setImmediate(() => {
      let h: HandedConnection;
      try {
        h = detachConnection(stream, info);
      } catch (err) {
        stream.destroy();
        job.handed({ error: err });
        return;
      }
      const id = ++seq;
      this.side.worker.postMessage({ id, h, mode, payload: job.payload });
      job.handed({ id, h });
    });
  };

  /** Connects; the connection is handed to the worker in `mode` (or given to `custom` in this thread). */
  connect(mode: 'echo' | 'speak' | Custom, payload?: Buffer, clientOpts: { allowHalfOpen?: boolean } = {}): { client: net.Socket; handed: Promise<Handed> } {
    let handed!: (r: Handed) => void;
    const p = new Promise<Handed>((resolve) => (handed = resolve));
    this.#jobs.push({ mode, payload, handed });
    const client = net.connect({ ...this.target, ...clientOpts } as net.NetConnectOpts);
    client.on('error', () => {});
    return { client, handed: p };
  }
}

async function handedId(p: Promise<Handed>): Promise<number> {
  const r = await p;
  if ('error' in r) throw r.error;
  return r.id;
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** True when `fd` still refers to the file `st` described (not closed, and not reused for something else). */
function stillOpen(fd: number, st: Stats): boolean {
  try {
    const now = fstatSync(fd);
    return now.ino === st.ino && now.dev === st.dev;
  } catch {
    return false;
  }
}

/** "<fd> -> <target>" for every descriptor of this process (all threads share the table). */
function fdTable(): string[] {
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`];
    } catch {
      return []; // the one readdir itself used, closed by now
    }
  });
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

const INFO: ConnectionInfo = { remote: 'test', transport: 'unix' };

describe.skipIf(!available)('connection hand-off to a worker thread', () => {
  const tmp = tempDir();
  let side: WorkerSide;
  const rigs = new Map<Kind, Rig>();
  const clients: net.Socket[] = [];

  beforeAll(async () => {
    side = new WorkerSide();
    for (const kind of ['tcp', 'unix', 'native-unix'] as const) rigs.set(kind, await new Rig(kind, side).start(tmp.sock(kind)));
  });

  afterAll(async () => {
    for (const c of clients) c.destroy();
    for (const r of rigs.values()) await r.listener.close();
    await side?.worker.terminate();
    tmp.cleanup();
  });

  function track<T extends { client: net.Socket }>(c: T): T {
    clients.push(c.client);
    return c;
  }

  describe.each(['tcp', 'unix', 'native-unix'] as const)('%s', (kind) => {
    it('echoes > 256 KiB byte-exact, bytes sent before the hand-off included; the client FIN ends the worker side', async () => {
      const rig = rigs.get(kind)!;
      const payload = randomBytes(BIG);
      const { client, handed } = track(rig.connect('echo'));
      client.end(payload); // at once: the first bytes are in the kernel before the listener detaches
      const echoed = readAll(client);
      const id = await handedId(handed);
      const adopted = (await side.next(id, 'adopted')).adopted as { remoteAddress?: string; remotePort?: number };
      if (kind === 'tcp') {
        await new Promise<void>((resolve) => (client.connecting ? client.once('connect', () => resolve()) : resolve()));
        expect(adopted).toEqual({ remoteAddress: '127.0.0.1', remotePort: client.localPort });
      }
      const back = await echoed;
      expect(back.length).toBe(BIG);
      expect(back.equals(payload)).toBe(true);
      expect((await side.next(id, 'closed')).received).toBe(BIG);
      await closed(client);
    });

    it('the worker half-closes first and still reads > 256 KiB the client sends after its EOF', async () => {
      const rig = rigs.get(kind)!;
      const fromWorker = randomBytes(BIG);
      const fromClient = randomBytes(BIG + 1);
      const { client, handed } = track(rig.connect('speak', fromWorker, { allowHalfOpen: true }));
      const id = await handedId(handed);
      const got = await readAll(client); // until the worker's FIN
      expect(got.equals(fromWorker)).toBe(true);
      expect(client.writable).toBe(true);
      client.end(fromClient);
      const report = await side.next(id, 'sha256');
      expect(report.received).toBe(fromClient.length);
      expect(report.sha256).toBe(sha256(fromClient));
      await side.next(id, 'closed');
      await closed(client);
    });

    it("the client's close reaches the worker", async () => {
      const rig = rigs.get(kind)!;
      const { client, handed } = track(rig.connect('echo'));
      client.write('ping');
      const id = await handedId(handed);
      await new Promise<void>((resolve) => client.once('data', () => resolve()));
      client.destroy();
      const m = await side.next(id, 'closed');
      expect(m.received).toBe(4);
    });

    it('leaks no descriptor and no native socket over 50 hand-offs', async () => {
      const rig = rigs.get(kind)!;
      const round = async (): Promise<void> => {
        const { client, handed } = track(rig.connect('echo'));
        client.end('x'.repeat(1000));
        const back = await readAll(client);
        expect(back.length).toBe(1000);
        await side.next(await handedId(handed), 'closed');
        await closed(client);
      };
      await round(); // warm-up: whatever the first connection of a kind allocates for good
      await new Promise((r) => setImmediate(r));
      const fds = openFds();
      const table = fdTable();
      const stats = nativeStats();
      for (let i = 0; i < 50; i++) await round();
      await new Promise((r) => setImmediate(r));
      // Exact for leaks (a leaked socket is a new entry even on a reused number), blind to a descriptor of the
      // test machinery (tsx's compiler on a cold cache) closing meanwhile.
      expect(fdTable().filter((e) => !table.includes(e))).toEqual([]);
      expect(openFds()).toBeLessThanOrEqual(fds);
      const after = nativeStats();
      expect(after.opened - after.closed).toBe(stats.opened - stats.closed);
      if (kind === 'native-unix') expect(after.opened - stats.opened).toBe(100); // accepted, then adopted
    });
  });

  describe('streams that cannot be handed', () => {
    async function refusal(kind: Kind, prepare: (stream: Duplex) => Promise<void> | void): Promise<unknown> {
      const rig = rigs.get(kind)!;
      let result!: (e: unknown) => void;
      const outcome = new Promise<unknown>((resolve) => (result = resolve));
      const { client } = track(
        rig.connect((stream, info) => {
          void (async () => {
            await prepare(stream);
            try {
              discardHandedConnection(detachConnection(stream, info));
              result(undefined);
            } catch (err) {
              result(err);
            } finally {
              stream.destroy();
            }
          })();
        }),
      );
      client.write('data');
      const err = await outcome;
      client.destroy();
      return err;
    }

    const readOnce = (s: Duplex): Promise<void> =>
      new Promise((resolve) => {
        s.once('data', () => resolve());
        s.resume(); // a paused-on-connect socket does not flow on its own
      });

    it.each(['tcp', 'unix', 'native-unix'] as const)('%s: a stream that already read', async (kind) => {
      const err = await refusal(kind, readOnce);
      expect(err).toMatchObject({ name: 'TransportError', code: 'TRANSPORT_HANDOFF_FAILED' });
    });

    it.each(['tcp', 'unix', 'native-unix'] as const)('%s: a stream that already wrote', async (kind) => {
      const err = await refusal(kind, (s) => new Promise<void>((resolve) => s.write('hello', () => resolve())));
      expect(err).toMatchObject({ code: 'TRANSPORT_HANDOFF_FAILED' });
    });

    it.each(['tcp', 'unix', 'native-unix'] as const)('%s: a closed stream', async (kind) => {
      const err = await refusal(kind, (s) => new Promise<void>((resolve) => s.destroy().once('close', () => resolve())));
      expect(err).toMatchObject({ code: 'TRANSPORT_HANDOFF_FAILED' });
    });

    it('a Node listener without handoff (it reads from the start)', async () => {
      let result!: (e: unknown) => void;
      const outcome = new Promise<unknown>((resolve) => (result = resolve));
      const listener = await listenTcp(
        { port: 0 },
        {
          onConnection: (stream, info) => {
            try {
              discardHandedConnection(detachConnection(stream, info));
              result(undefined);
            } catch (err) {
              result(err);
            }
            stream.destroy();
          },
        },
      );
      const client = net.connect({ host: '127.0.0.1', port: listener.port! });
      client.on('error', () => {});
      try {
        expect(await outcome).toMatchObject({ code: 'TRANSPORT_HANDOFF_FAILED', message: expect.stringContaining('already reading') });
      } finally {
        client.destroy();
        await listener.close();
      }
    });

    it('a stream that is no socket', () => {
      expect(() => detachConnection(new PassThrough(), INFO)).toThrow(expect.objectContaining({ code: 'TRANSPORT_HANDOFF_FAILED' }));
    });
  });

  describe('descriptors that cannot be adopted', () => {
    it('a file and a FIFO: the addon refuses with ENOTSOCK and leaves the fd open; discard closes it', () => {
      const native = loadNative();
      const fifo = path.join(tmp.dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      for (const file of [path.join(tmp.dir, 'plain'), fifo]) {
        const fd = openSync(file, file === fifo ? 'r+' : 'w+'); // a FIFO opened read-write does not block
        const st = fstatSync(fd);
        try {
          for (const family of ['unix', 'vsock'] as const) expect(codeOf(() => native.adopt(fd, family))).toBe('ENOTSOCK');
          expect(stillOpen(fd, st)).toBe(true);
          discardHandedConnection({ kind: 'native', fd, family: 'unix', info: INFO });
          expect(stillOpen(fd, st)).toBe(false);
        } finally {
          if (stillOpen(fd, st)) closeSync(fd);
        }
      }
    });

    it('a file or FIFO handed as a connection: TRANSPORT_HANDOFF_FAILED and the fd closed', () => {
      const fifo = path.join(tmp.dir, 'fifo2');
      execFileSync('mkfifo', [fifo]);
      for (const kind of ['native', 'socket'] as const) {
        for (const file of [path.join(tmp.dir, 'plain2'), fifo]) {
          const fd = openSync(file, file === fifo ? 'r+' : 'w+');
          const st = fstatSync(fd);
          try {
            const h: HandedConnection = kind === 'native' ? { kind, fd, family: 'unix', info: INFO } : { kind, fd, info: INFO };
            expect(() => adoptConnection(h)).toThrow(expect.objectContaining({ name: 'TransportError', code: 'TRANSPORT_HANDOFF_FAILED' }));
            expect(stillOpen(fd, st)).toBe(false);
          } finally {
            if (stillOpen(fd, st)) closeSync(fd);
          }
        }
      }
    });

    it('a socket of the wrong family: EINVAL with the fd open; adoptConnection closes it', async () => {
      const native = loadNative();
      const tcp = rigs.get('tcp')!;
      const unix = rigs.get('unix')!;
      // Client sockets of this thread: dups of their fds are real connected TCP and unix stream sockets.
      const a = track(tcp.connect((s) => s.destroy())).client;
      const b = track(unix.connect((s) => s.destroy())).client;
      await Promise.all([a, b].map((c) => new Promise((resolve) => c.once('connect', resolve))));
      const fdOf = (c: net.Socket): number => (c as unknown as { _handle: { fd: number } })._handle.fd;
      const cases = [
        { fd: native.dupFd(fdOf(a)), family: 'unix' as const }, // TCP is not unix
        { fd: native.dupFd(fdOf(a)), family: 'vsock' as const },
        { fd: native.dupFd(fdOf(b)), family: 'vsock' as const }, // unix is not vsock
      ];
      for (const { fd, family } of cases) {
        const st = fstatSync(fd);
        expect(codeOf(() => native.adopt(fd, family))).toBe('EINVAL');
        expect(stillOpen(fd, st)).toBe(true);
        expect(() => adoptConnection({ kind: 'native', fd, family, info: INFO })).toThrow(expect.objectContaining({ code: 'TRANSPORT_HANDOFF_FAILED' }));
        expect(stillOpen(fd, st)).toBe(false);
      }
      a.destroy();
      b.destroy();
    });

    it('numbers that are no descriptors', () => {
      const native = loadNative();
      expect(() => adoptConnection({ kind: 'socket', fd: -1, info: INFO })).toThrow(expect.objectContaining({ code: 'TRANSPORT_HANDOFF_FAILED' }));
      expect(codeOf(() => native.adopt(1.5, 'unix'))).toBe('ERR_OUT_OF_RANGE');
      expect(codeOf(() => native.adopt(3, 'tcp' as 'unix'))).toBe('ERR_INVALID_ARG_VALUE');
      expect(codeOf(() => native.dupFd(-1))).toBe('ERR_OUT_OF_RANGE');
      const fd = openSync(path.join(tmp.dir, 'gone'), 'w');
      closeSync(fd);
      expect(codeOf(() => native.dupFd(fd))).toBe('EBADF');
      expect(() => discardHandedConnection({ kind: 'socket', fd: Number.NaN, info: INFO })).not.toThrow();
    });
  });

  it('carries the vsock peer CID with the connection, through postMessage and adoption', async () => {
    // The addon's unix family is vsock's code; the info is what a vsock listener reports.
    const vsockInfo: ConnectionInfo = { remote: 'vsock:16:1234', transport: 'vsock', peerCid: 16 };
    const handed = new Promise<HandedConnection>((resolve, reject) => {
      const detach = (stream: Duplex): void => {
        try {
          resolve(detachConnection(stream, vsockInfo));
        } catch (err) {
          reject(err as Error);
        }
      };
      track(rigs.get('native-unix')!.connect((stream) => setImmediate(detach, stream)));
    });
    const h = structuredClone(await handed); // what postMessage delivers to the worker
    expect(h.info).toEqual(vsockInfo);
    const stream = adoptConnection(h) as NativeStream;
    expect(stream.info).toEqual(vsockInfo);
    stream.destroy();
  });

  it('NativeSocket.detach: the object behaves as closed, the fd stays open, adopt takes it back', () => {
    const native = loadNative();
    const sockPath = tmp.sock('raw');
    const server = native.listen({ family: 'unix', path: sockPath });
    const client = native.connect({ family: 'unix', path: sockPath });
    const before = nativeStats();
    try {
      const fd = client.fd;
      const st = fstatSync(fd);
      expect(client.detach()).toBe(fd);
      expect(client.fd).toBe(-1);
      expect(client.detach()).toBe(-1);
      expect(codeOf(() => client.read())).toBe('EBADF');
      expect(codeOf(() => client.poll(1))).toBe('EBADF');
      client.close(); // a no-op now
      expect(stillOpen(fd, st)).toBe(true);
      const again = native.adopt(fd, 'unix');
      expect(again.fd).toBe(fd);
      const mid = nativeStats();
      expect(mid.closed - before.closed).toBe(1);
      expect(mid.opened - before.opened).toBe(1);
      // The adopted socket works: the server side accepts it and reads what it writes (AF_UNIX: at once).
      const conn = server.accept()!;
      expect(again.write(Buffer.from('hi'), 0)).toBe(2);
      expect(conn.read()?.toString()).toBe('hi');
      conn.close();
      again.close();
      expect(stillOpen(fd, st)).toBe(false);
    } finally {
      client.close();
      server.close();
    }
  });
});
