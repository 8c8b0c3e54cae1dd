// socketOutq / tcpPeerUnread (native/src/tcpqueue.c): the kernel's two queues between a writer and its reader on this
// host, from which the stall watch counts what an app read (src/responder/app-progress.ts). Bad descriptors are typed
// errors, never a crash; on loopback, handed to the kernel − outq − the peer's unread is what the peer read.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { QueueBinding } from '../../src/responder/app-progress.ts';
import { loadNative } from '../../src/transport/native.ts';
import { available, sleep, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const queues = (): QueueBinding => loadNative() as unknown as QueueBinding;

interface Handle {
  fd: number;
  bytesWritten: number;
  writeQueueSize: number;
}
const handleOf = (s: net.Socket): Handle => (s as unknown as { _handle: Handle })._handle;

/** A connected pair: `writer` (client) and `reader` (the accepted end, paused at once). */
async function pair(listen: net.ListenOptions): Promise<{ writer: net.Socket; reader: net.Socket; close(): void }> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(listen, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const address = server.address();
  const writer = typeof address === 'string' ? net.connect(address) : net.connect(address!.port, '127.0.0.1');
  await new Promise<void>((resolve) => writer.once('connect', resolve));
  const reader = await accepted;
  return {
    writer,
    reader,
    close() {
      writer.destroy();
      reader.destroy();
      server.close();
    },
  };
}

/** What the kernel says the reader has read: handed to the kernel − our send queue − the reader's receive queue. */
function readByPeer(writer: net.Socket): number {
  const h = handleOf(writer);
  const outq = queues().socketOutq(h.fd);
  return h.bytesWritten - h.writeQueueSize - outq - queues().tcpPeerUnread(h.fd);
}

/** Waits until two looks 50 ms apart agree (loopback delivery is done), returns the figure. */
async function settled(read: () => number): Promise<number> {
  let last = read();
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const now = read();
    if (now === last) return now;
    last = now;
  }
  throw new Error('the queues did not settle');
}

describe.skipIf(!available)('socketOutq and tcpPeerUnread', () => {
  it('refuse what is no descriptor with a TypeError, and a bad descriptor with its errno', () => {
    const q = queues();
    for (const fn of [q.socketOutq, q.tcpPeerUnread]) {
      for (const bad of [-1, 1.5, '3', undefined, null, 2 ** 40, Number.NaN]) {
        expect(() => fn(bad as number), String(bad)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }));
      }
      // far above any descriptor this process has open
      expect(() => fn(1_000_000)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    }
    const file = openSync('/dev/null', 'r');
    try {
      expect(() => q.socketOutq(file)).toThrow(expect.objectContaining({ code: 'ENOTTY', syscall: 'ioctl' }));
      expect(() => q.tcpPeerUnread(file)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    } finally {
      closeSync(file);
    }
  });

  it('on loopback: bytes wait in our send queue and in the peer\'s receive queue; the rest is what the peer read', async () => {
    const { writer, reader, close } = await pair({ host: '127.0.0.1', port: 0 });
    try {
      writer.write(Buffer.alloc(8 << 20, 7)); // more than the two kernel buffers hold: the peer reads nothing
      const before = await settled(() => readByPeer(writer));
      const fd = handleOf(writer).fd;
      expect(queues().socketOutq(fd)).toBeGreaterThan(0);
      expect(queues().tcpPeerUnread(fd)).toBeGreaterThan(0);
      expect(before).toBe(reader.bytesRead); // to the byte: nothing read yet (pauseOnConnect)

      // The peer reads some (64 KiB at a time, node's read size), then stops again.
      let seen = 0;
      reader.on('data', (c: Buffer) => {
        seen += c.length;
        if (seen >= 200_000) reader.pause();
      });
      reader.resume();
      await new Promise<void>((resolve) => reader.once('pause', resolve));
      const after = await settled(() => readByPeer(writer));
      expect(after).toBe(reader.bytesRead);
      expect(after).toBeGreaterThanOrEqual(before + 200_000);
    } finally {
      close();
    }
  });

  it('on a unix socket: socketOutq answers, tcpPeerUnread is EAFNOSUPPORT', async () => {
    const { writer, close } = await pair({ path: tmp.sock() });
    try {
      writer.write(Buffer.alloc(64 * 1024, 1));
      const fd = handleOf(writer).fd;
      expect(await settled(() => queues().socketOutq(fd))).toBeGreaterThan(0);
      expect(() => queues().tcpPeerUnread(fd)).toThrow(expect.objectContaining({ code: 'EAFNOSUPPORT' }));
    } finally {
      close();
    }
  });
});

// The lookup is exact, but the kernel answers it with a listener when no connected socket has the 4-tuple: behind a
// DNAT our peer address is the pre-NAT port, and a socket listening there would pass its accept backlog off as the
// app's unread bytes. Only the app's own socket counts: else ENOENT, as for a peer not on this host.
const natChild = fileURLToPath(new URL('./tcp-queue-nat-child.ts', import.meta.url));
const canNat = process.platform === 'linux' && spawnSync('unshare', ['--net', 'iptables', '-t', 'nat', '-L', 'OUTPUT']).status === 0;

it.skipIf(!available || !canNat)('tcpPeerUnread is ENOENT, not a listener\'s backlog, when the peer address leads to a listener', () => {
  const r = spawnSync('unshare', ['--net', process.execPath, '--import', 'tsx', natChild], { encoding: 'utf8', timeout: 30_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  expect(out.peerPort).toBe(out.otherPort); // the premise: our peer address is the listener's
  expect(out.outq).toBe(0); // and the app's kernel took (acknowledged) all of it
  expect(out).toMatchObject({ code: 'ENOENT' });
  expect(out.peerUnread).toBeUndefined();
});
