// The stall watch's count of what an app read (app-progress.ts, AppStream.appIdleMs) on loopback, with the addon.
// The app's socket is looked up through sock_diag at every look; a lookup can fail once (EMFILE for the netlink
// socket, EINTR, ENOBUFS) and the next one succeed. The look that failed sees only our send queue: a figure above
// the exact one by everything waiting unread in the app's socket (up to MBs). It must neither count as progress nor
// become the bar the next exact figures have to pass.
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AppStream, type StreamOwner } from '../../src/responder/streams.ts';
import type * as Native from '../../src/transport/native.ts';
import { available, sleep } from '../native/helpers.ts';

const inject = vi.hoisted(() => ({ peerLookupFailures: 0 }));

vi.mock('../../src/transport/native.ts', async (importOriginal) => {
  const real = await importOriginal<typeof Native>();
  return {
    ...real,
    loadNative: () => {
      const b = real.loadNative() as unknown as { socketOutq(fd: number): number; tcpPeerUnread(fd: number): number };
      return {
        socketOutq: (fd: number) => b.socketOutq(fd),
        tcpPeerUnread: (fd: number) => {
          if (inject.peerLookupFailures > 0) {
            inject.peerLookupFailures--;
            throw Object.assign(new Error('socket: too many open files'), { code: 'EMFILE', syscall: 'sock_diag' });
          }
          return b.tcpPeerUnread(fd);
        },
      };
    },
  };
});

const owner: StreamOwner = { streamData() {}, streamClosed() {}, streamError() {}, streamFinished() {}, queueChanged() {} };

/** The agent's end (`agentEnd`) and an app that reads one read of at most 1,000 bytes per `readSome()`. */
async function appPair(): Promise<{ agentEnd: net.Socket; received(): number; readSome(): Promise<void>; close(): void }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  let received = 0;
  let onRead: (() => void) | null = null;
  const app = net.connect({
    host: '127.0.0.1',
    port: (server.address() as net.AddressInfo).port,
    onread: {
      buffer: Buffer.alloc(1000),
      callback: (n: number) => {
        received += n;
        onRead?.();
        return false; // one read, then paused
      },
    },
  });
  await new Promise<void>((resolve) => app.once('connect', resolve));
  app.pause();
  const agentEnd = await accepted;
  return {
    agentEnd,
    received: () => received,
    readSome: () =>
      new Promise<void>((resolve) => {
        onRead = resolve;
        app.resume();
      }),
    close() {
      agentEnd.destroy();
      app.destroy();
      server.close();
    },
  };
}

/** Waits until the app's socket holds what it will (two looks 50 ms apart at the kernel's queues agree). */
async function settled(sock: net.Socket): Promise<void> {
  const h = (sock as unknown as { _handle: { writeQueueSize: number } })._handle;
  let last = -1;
  for (let i = 0; i < 100; i++) {
    const now = h.writeQueueSize + sock.writableLength;
    if (now === last) return;
    last = now;
    await sleep(50);
  }
  throw new Error('the queues did not settle');
}

afterEach(() => {
  inject.peerLookupFailures = 0;
});

describe.skipIf(!available)('the stall watch count with one failed lookup of the app socket', () => {
  it('takes neither the failed look as progress nor its figure as the bar: the app\'s next read counts', async () => {
    const { agentEnd, received, readSome, close } = await appPair();
    try {
      const stream = new AppStream(owner, 1, 'bstr', new Uint8Array(0), false);
      stream.attach(agentEnd);
      stream.write(new Uint8Array(8 << 20)); // more than the kernel's buffers: MBs wait unread in the app's socket
      await settled(agentEnd);
      expect(stream.appIdleMs(0)).toBe(0); // the first look starts the count

      inject.peerLookupFailures = 1;
      expect(stream.appIdleMs(100)).toBe(100); // the app read nothing: no progress
      expect(inject.peerLookupFailures).toBe(0); // (the failure was taken)

      await readSome();
      expect(received()).toBeGreaterThan(0);
      expect(stream.appIdleMs(200)).toBe(0); // a read, seen at once

      expect(stream.appIdleMs(300)).toBe(100); // and nothing since
      stream.destroy();
    } finally {
      close();
    }
  });
});
