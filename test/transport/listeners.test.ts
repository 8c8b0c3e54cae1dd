import { mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { connectStream, parseTarget, TransportError } from '../../src/transport/connect.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import type { ConnectionInfo, Listener } from '../../src/transport/types.ts';
import { listenUnix } from '../../src/transport/unix.ts';
import { refusedPort } from '../util/refused-port.ts';

/** An echo handler that records what it was given. */
function echo(seen: ConnectionInfo[]) {
  return (stream: Duplex, info: ConnectionInfo): void => {
    seen.push(info);
    stream.pipe(stream);
  };
}

async function roundTrip(stream: Duplex, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  return new Promise((resolve, reject) => {
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      n += c.length;
      if (n >= payload.length) {
        stream.destroy();
        resolve(Buffer.concat(chunks));
      }
    });
    stream.on('error', reject);
    stream.write(payload);
  });
}

const refused = (connect: () => net.Socket): Promise<string> =>
  new Promise((resolve) => {
    const s = connect();
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });

let dir: string;
const listeners: Listener[] = [];
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'ea-transport-'));
});
afterEach(async () => {
  for (const l of listeners.splice(0)) await l.close();
  await rm(dir, { recursive: true, force: true });
});

describe('listenTcp', () => {
  it('delivers each accepted connection as a Duplex with the peer address, TCP_NODELAY on', async () => {
    const seen: ConnectionInfo[] = [];
    let noDelay: unknown;
    const l = await listenTcp({ port: 0 }, {
      onConnection: (s, info) => {
        // Node exposes no getter for TCP_NODELAY; net.Socket records setNoDelay(true) under an internal symbol.
        noDelay = (s as net.Socket & { [k: symbol]: unknown })[Object.getOwnPropertySymbols(s).find((x) => x.description === 'kSetNoDelay')!];
        echo(seen)(s, info);
      },
    });
    listeners.push(l);
    expect(l.address).toBe(`127.0.0.1:${l.port}`);
    const s = await connectStream({ kind: 'tcp', host: '127.0.0.1', port: l.port! });
    const payload = Buffer.alloc(200_000, 7);
    expect((await roundTrip(s, payload)).equals(payload)).toBe(true);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.transport).toBe('tcp');
    expect(seen[0]!.remote).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(noDelay).toBe(true);
  });

  it('listens on ::1 and brackets the IPv6 address', async () => {
    const seen: ConnectionInfo[] = [];
    const l = await listenTcp({ host: '::1', port: 0 }, { onConnection: echo(seen) });
    listeners.push(l);
    expect(l.address).toBe(`[::1]:${l.port}`);
    const s = await connectStream({ kind: 'tcp', host: '::1', port: l.port! });
    expect((await roundTrip(s, Buffer.from('x'))).toString()).toBe('x');
    expect(seen[0]!.remote).toMatch(/^\[::1\]:\d+$/);
  });

  it('stops accepting after close() while open connections keep working', async () => {
    const l = await listenTcp({ port: 0 }, { onConnection: echo([]) });
    const s = await connectStream({ kind: 'tcp', host: '127.0.0.1', port: l.port! });
    await l.close();
    expect(await refused(() => net.connect({ host: '127.0.0.1', port: l.port! }))).toBe('ECONNREFUSED');
    expect((await roundTrip(s, Buffer.from('still here'))).toString()).toBe('still here');
  });

  it('reports a port in use as TRANSPORT_LISTEN_FAILED', async () => {
    const l = await listenTcp({ port: 0 }, { onConnection: echo([]) });
    listeners.push(l);
    await expect(listenTcp({ port: l.port! }, { onConnection: echo([]) })).rejects.toMatchObject({ code: 'TRANSPORT_LISTEN_FAILED' });
  });

  it('survives a handler that throws', async () => {
    let calls = 0;
    const l = await listenTcp({ port: 0 }, {
      onConnection: () => {
        calls++;
        throw new Error('boom');
      },
    });
    listeners.push(l);
    const closed = (): Promise<void> =>
      new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: l.port! });
        s.on('close', () => resolve());
        s.on('error', () => {});
      });
    await closed();
    await closed();
    expect(calls).toBe(2);
  });
});

describe('listenUnix', () => {
  it('delivers each accepted connection as a Duplex', async () => {
    const seen: ConnectionInfo[] = [];
    const p = path.join(dir, 'agent.sock');
    const l = await listenUnix({ path: p }, { onConnection: echo(seen) });
    listeners.push(l);
    expect(l.address).toBe(p);
    const s = await connectStream({ kind: 'unix', path: p });
    const payload = Buffer.alloc(100_000, 3);
    expect((await roundTrip(s, payload)).equals(payload)).toBe(true);
    expect(seen).toEqual([{ remote: 'unix', transport: 'unix' }]);
  });

  it('applies mode 0600 before the socket appears at its path and removes it on close', async () => {
    const p = path.join(dir, 'private.sock');
    const l = await listenUnix({ path: p, mode: 0o600 }, { onConnection: echo([]) });
    expect((await stat(p)).mode & 0o777).toBe(0o600);
    const s = await connectStream({ kind: 'unix', path: p });
    expect((await roundTrip(s, Buffer.from('ok'))).toString()).toBe('ok');
    await l.close();
    await expect(stat(p)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await refused(() => net.connect({ path: p }))).toBe('ENOENT');
  });

  it('replaces a stale socket file left by a dead process', async () => {
    const p = path.join(dir, 'stale.sock');
    // Leave a socket inode at p with no listener: bind elsewhere, rename into place, close (libuv unlinks only
    // the name it bound, which no longer exists), as a crashed process would leave it.
    const raw = net.createServer();
    await new Promise<void>((r) => raw.listen({ path: path.join(dir, 'tmp.sock') }, () => r()));
    await rename(path.join(dir, 'tmp.sock'), p);
    await new Promise<void>((r) => raw.close(() => r()));
    expect((await stat(p)).isSocket()).toBe(true);
    const l = await listenUnix({ path: p }, { onConnection: echo([]) });
    listeners.push(l);
    const s = await connectStream({ kind: 'unix', path: p });
    expect((await roundTrip(s, Buffer.from('fresh'))).toString()).toBe('fresh');
  });

  it('refuses to replace a regular file or a live socket', async () => {
    const file = path.join(dir, 'not-a-socket');
    await writeFile(file, 'data');
    await expect(listenUnix({ path: file }, { onConnection: echo([]) })).rejects.toMatchObject({ code: 'TRANSPORT_PATH_NOT_SOCKET' });
    const live = path.join(dir, 'live.sock');
    const l = await listenUnix({ path: live }, { onConnection: echo([]) });
    listeners.push(l);
    await expect(listenUnix({ path: live }, { onConnection: echo([]) })).rejects.toMatchObject({ code: 'TRANSPORT_ADDRESS_IN_USE' });
  });

  it('stops accepting after close()', async () => {
    const p = path.join(dir, 'c.sock');
    const l = await listenUnix({ path: p }, { onConnection: echo([]) });
    await l.close();
    expect(await refused(() => net.connect({ path: p }))).toMatch(/ENOENT|ECONNREFUSED/);
  });
});

describe('connectStream', () => {
  it('fails with TRANSPORT_CONNECT_FAILED when nothing listens', async () => {
    await expect(connectStream({ kind: 'tcp', host: '127.0.0.1', port: await refusedPort() })).rejects.toMatchObject({ code: 'TRANSPORT_CONNECT_FAILED' });
    await expect(connectStream({ kind: 'unix', path: path.join(dir, 'none.sock') })).rejects.toBeInstanceOf(TransportError);
  });

  it('rejects malformed targets before touching the network', async () => {
    await expect(connectStream({ kind: 'tcp', host: '127.0.0.1', port: 70000 })).rejects.toMatchObject({ code: 'TRANSPORT_BAD_TARGET' });
    await expect(connectStream({ kind: 'vsock', cid: -1, port: 5000 })).rejects.toMatchObject({ code: 'TRANSPORT_BAD_TARGET' });
  });
});

describe('parseTarget', () => {
  it('parses tcp, bracketed IPv6, unix and vsock targets', () => {
    expect(parseTarget('tcp:127.0.0.1:5000')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 5000 });
    expect(parseTarget('tcp:[::1]:5000')).toEqual({ kind: 'tcp', host: '::1', port: 5000 });
    expect(parseTarget('unix:/run/a b.sock')).toEqual({ kind: 'unix', path: '/run/a b.sock' });
    expect(parseTarget('vsock:16:5000')).toEqual({ kind: 'vsock', cid: 16, port: 5000 });
  });

  it('rejects unknown schemes and malformed addresses with TRANSPORT_BAD_TARGET', () => {
    for (const bad of ['127.0.0.1:5000', 'http:x:1', 'tcp:127.0.0.1', 'tcp::1:5000', 'tcp:h:0', 'vsock:x:1', 'vsock:3', 'vsock:4294967295:5000', 'unix:']) {
      expect(() => parseTarget(bad), bad).toThrow(TransportError);
    }
  });
});

describe('accept errors', () => {
  /** Captures the net.Server a listener creates, to make it report an accept error as libuv would. */
  function captureServers(): { servers: net.Server[]; restore: () => void } {
    const servers: net.Server[] = [];
    const spy = vi.spyOn(net, 'createServer').mockImplementation(((...args: [net.ServerOpts?]) => {
      const server = new net.Server(...args);
      servers.push(server);
      return server;
    }) as typeof net.createServer);
    return { servers, restore: () => spy.mockRestore() };
  }

  const emfile = (): NodeJS.ErrnoException => Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' });

  for (const kind of ['tcp', 'unix'] as const) {
    it(`${kind}: counts each accept error, hands it to onError and keeps listening`, async () => {
      const { servers, restore } = captureServers();
      const errors: Error[] = [];
      const seen: ConnectionInfo[] = [];
      const dir = await mkdtemp(path.join(os.tmpdir(), 'accept-err-'));
      let listener: Listener;
      try {
        listener =
          kind === 'tcp'
            ? await listenTcp({ port: 0 }, { onConnection: echo(seen), onError: (e) => errors.push(e) })
            : await listenUnix({ path: path.join(dir, 's.sock') }, { onConnection: echo(seen), onError: (e) => errors.push(e) });
      } finally {
        restore();
      }
      servers[0]!.emit('error', emfile());
      servers[0]!.emit('error', emfile());
      expect(listener.acceptErrors).toBe(2);
      expect(errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual(['EMFILE', 'EMFILE']);
      const stream = kind === 'tcp' ? net.connect({ host: '127.0.0.1', port: listener.port! }) : net.connect({ path: listener.address });
      expect((await roundTrip(stream, Buffer.from('still here'))).toString()).toBe('still here');
      await listener.close();
      await rm(dir, { recursive: true, force: true });
    });
  }

  it('without onError, the first accept error becomes a process warning (never swallowed)', async () => {
    const { servers, restore } = captureServers();
    let listener: Listener;
    try {
      listener = await listenTcp({ port: 0 }, { onConnection: echo([]) });
    } finally {
      restore();
    }
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      servers[0]!.emit('error', emfile());
      servers[0]!.emit('error', emfile());
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(listener.acceptErrors).toBe(2);
    expect(warnings.filter((w) => w.name === 'ListenerAcceptError').map((w) => w.message)).toEqual([expect.stringMatching(/accept failed \(EMFILE\)/)]);
    await listener.close();
  });
});
