// The native I/O engine over AF_UNIX: the same code path as AF_VSOCK in production, another address family.
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import type { NativeStream } from '../../src/transport/native-stream.ts';
import { loadNative, nativeStats, NativeError } from '../../src/transport/native.ts';
import { connectUnixNative, listenUnixNative } from '../../src/transport/unix-native.ts';
import { available, closed, openFds, readAll, sleep, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** A listener whose accepted streams arrive on a queue. */
async function server(path = tmp.sock()) {
  const accepted: NativeStream[] = [];
  const waiters: ((s: NativeStream) => void)[] = [];
  const listener = await listenUnixNative(path, {
    onConnection: (s) => {
      const w = waiters.shift();
      if (w) w(s as NativeStream);
      else accepted.push(s as NativeStream);
    },
  });
  const next = (): Promise<NativeStream> =>
    new Promise((resolve) => {
      const s = accepted.shift();
      if (s) resolve(s);
      else waiters.push(resolve);
    });
  return { listener, path, next };
}

describe.skipIf(!available)('native engine over AF_UNIX', () => {
  it('delivers bytes both ways and reports the peer and transport', async () => {
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    expect(conn.info).toEqual({ remote: 'unix', transport: 'unix' });
    expect(srv.listener.address).toBe(srv.path);
    conn.on('data', (d: Buffer) => conn.write(Buffer.concat([Buffer.from('echo:'), d])));
    conn.on('end', () => conn.end());
    client.end('ping');
    expect((await readAll(client)).toString()).toBe('echo:ping');
    await closed(client);
    await closed(conn);
    await srv.listener.close();
  });

  it("half-closes on end(): the server sees 'end' and can still write back", async () => {
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    const got = readAll(conn);
    client.end(Buffer.from('request'));
    expect((await got).toString()).toBe('request');
    // The server's read side has ended; its write side is still open, and the client still reads.
    expect(conn.writable).toBe(true);
    const reply = readAll(client);
    conn.write('late ');
    await sleep(20);
    conn.end('reply');
    expect((await reply).toString()).toBe('late reply');
    expect(await closed(client)).toBeUndefined();
    expect(await closed(conn)).toBeUndefined();
    await srv.listener.close();
  });

  it('never issues a write() syscall above 32768 bytes while writing 1 MiB chunks', async () => {
    const native = loadNative();
    expect(native.MAX_WRITE).toBe(32768);
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    native.resetStats();
    const chunk = randomBytes(1 << 20);
    const received = readAll(conn);
    client.resume();
    for (let i = 0; i < 16; i++) client.write(chunk);
    client.end();
    const all = await received;
    expect(all.length).toBe(16 << 20);
    expect(all.subarray(5 << 20, 6 << 20).equals(chunk)).toBe(true);
    const stats = nativeStats();
    expect(stats.maxWrite).toBe(32768); // split to exactly the cap, never above
    expect(stats.bytesWritten).toBe(16 << 20);
    expect(stats.writes).toBeGreaterThanOrEqual((16 << 20) / 32768);
    conn.end();
    await closed(conn);
    await closed(client);
    await srv.listener.close();
  });

  it('reads each small message with one read(): no read() that only finds EAGAIN', async () => {
    const native = loadNative();
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    conn.on('data', (d: Buffer) => conn.write(d)); // echo
    const rounds = 500;
    native.resetStats();
    let got = 0;
    await new Promise<void>((resolve) => {
      client.on('data', (d: Buffer) => {
        got += d.length;
        if (got === rounds * 100) resolve();
        else if (got % 100 === 0) client.write(Buffer.alloc(100, got / 100));
      });
      client.write(Buffer.alloc(100, 0));
    });
    const stats = nativeStats();
    // Both ends read each message once: a read returning less than the buffer drained the socket, so the
    // next bytes wait for the readable event (before: two EAGAIN reads per message and side, ~2,000 here).
    expect(stats.reads).toBeGreaterThanOrEqual(2 * rounds);
    expect(stats.eagainReads).toBeLessThan(rounds / 10);
    client.end();
    conn.end();
    await closed(client);
    await closed(conn);
    await srv.listener.close();
  });

  it('applies backpressure: write() returns false while the peer does not read, memory stays bounded, drain follows', async () => {
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    conn.pause(); // the server does not read
    client.resume();
    const chunk = Buffer.alloc(64 * 1024, 7);
    let accepted = 0;
    let sawFalse = false;
    for (let i = 0; i < 10_000; i++) {
      accepted += chunk.length;
      if (!client.write(chunk)) {
        sawFalse = true;
        break;
      }
    }
    expect(sawFalse).toBe(true);
    // Let the kernel buffers fill completely, then check nothing grows in user space.
    await sleep(100);
    const stuck = client.writableLength;
    expect(stuck).toBeLessThanOrEqual(2 * chunk.length);
    expect(accepted).toBeLessThan(64 << 20);
    await sleep(100);
    expect(client.writableLength).toBe(stuck);
    const drained = new Promise<void>((r) => client.once('drain', r));
    let readBytes = 0;
    conn.on('data', (d: Buffer) => (readBytes += d.length));
    conn.resume();
    await drained;
    client.end();
    await new Promise<void>((r) => conn.once('end', r));
    expect(readBytes).toBe(accepted);
    conn.end();
    await closed(conn);
    await closed(client);
    await srv.listener.close();
  });

  it('survives a peer reset: the writer gets ECONNRESET/EPIPE or a clean close, no crash, no hang', async () => {
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    conn.once('data', () => conn.destroy()); // read a little, then vanish with unread data queued
    const chunk = Buffer.alloc(256 * 1024, 1);
    const pump = (): void => {
      while (!client.destroyed && client.write(chunk));
      if (!client.destroyed) client.once('drain', pump);
    };
    pump();
    const err = await closed(client);
    if (err !== undefined) {
      expect(err).toBeInstanceOf(NativeError);
      expect(['ECONNRESET', 'EPIPE']).toContain((err as NativeError).code);
    }
    expect(client.destroyed).toBe(true);
    await closed(conn);
    await srv.listener.close();
  });

  it("reports a reset to a reader as 'error' ECONNRESET or a clean 'end', never a hang", async () => {
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    client.write('unread by the server');
    await sleep(20);
    const reading = closed(client);
    client.resume();
    conn.destroy(); // unread data in the server's queue: Linux flags ECONNRESET on the peer
    const err = await reading;
    if (err !== undefined) expect((err as NativeError).code).toBe('ECONNRESET');
    await srv.listener.close();
  });

  it('closes cleanly when destroyed with a write pending on a full socket (the poll is stopped before the fd is closed)', async () => {
    const srv = await server();
    const client = await connectUnixNative(srv.path);
    const conn = await srv.next();
    client.pause();
    const fd = conn.fd;
    expect(fd).toBeGreaterThan(2);
    const writeResult = new Promise<Error | null | undefined>((r) => conn.write(Buffer.alloc(8 << 20), (e) => r(e)));
    await sleep(50); // the kernel buffer is full; the stream is waiting for writable
    conn.destroy();
    const e = await writeResult;
    expect(e).toBeInstanceOf(Error);
    expect(conn.fd).toBe(-1);
    await closed(conn);
    conn.destroy(); // a second destroy is a no-op
    client.destroy();
    await closed(client);
    await srv.listener.close();
  });

  it('rejects connects with errno codes: ENOENT for a missing path, ECONNREFUSED for a closed listener', async () => {
    await expect(connectUnixNative(tmp.sock('missing.sock'))).rejects.toMatchObject({ code: 'ENOENT', errno: 'ENOENT' });
    const srv = await server();
    await srv.listener.close();
    // The listener's close removed the name; bind a stale one to see ECONNREFUSED on a dead socket file.
    const native = loadNative();
    const dead = native.listen({ family: 'unix', path: srv.path });
    dead.close();
    await expect(connectUnixNative(srv.path)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('opens and closes 10,000 connections without leaking a file descriptor', async () => {
    const srv = await server();
    const serverClosed: Promise<unknown>[] = [];
    // Every accepted stream echoes one byte and ends.
    const onAccept = async (): Promise<void> => {
      for (;;) {
        const conn = await srv.next();
        conn.on('data', (d: Buffer) => conn.write(d));
        conn.on('end', () => conn.end());
        serverClosed.push(closed(conn));
      }
    };
    void onAccept();
    // Warm up once so lazily created runtime fds (epoll, threads) exist before the baseline.
    const warm = await connectUnixNative(srv.path);
    warm.end('w');
    await readAll(warm);
    await closed(warm);
    await Promise.all(serverClosed.splice(0));
    const before = openFds();
    const statsBefore = nativeStats();
    const total = 10_000;
    const batch = 50;
    for (let i = 0; i < total; i += batch) {
      await Promise.all(
        Array.from({ length: batch }, async () => {
          const c = await connectUnixNative(srv.path);
          c.end('x');
          const got = await readAll(c);
          expect(got.toString()).toBe('x');
          await closed(c);
        }),
      );
    }
    await Promise.all(serverClosed);
    expect(serverClosed.length).toBe(total);
    const stats = nativeStats();
    expect(stats.opened - statsBefore.opened).toBe(2 * total);
    expect(stats.closed - statsBefore.closed).toBe(2 * total);
    expect(openFds()).toBe(before);
    await srv.listener.close();
  });

  it('stops accepting on close and removes the socket name', async () => {
    const srv = await server();
    const before = openFds();
    await srv.listener.close();
    await srv.listener.close(); // idempotent
    expect(openFds()).toBe(before - 1);
    await expect(connectUnixNative(srv.path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a path too long for sockaddr_un with ENAMETOOLONG', async () => {
    await expect(listenUnixNative('/tmp/' + 'a'.repeat(200), { onConnection: () => {} })).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
  });
});
