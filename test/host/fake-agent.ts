// A stand-in for the agent in bridge tests: a loopback TCP server that reads hs1 (after an optional PROXY v2
// header), answers 48 bytes in several delayed writes, then does what the test asks (echo by default).
import net from 'node:net';
import { readProxyHeader, type ProxyParseResult } from '../../src/transport/proxy-v2.ts';

export const HS2 = Buffer.from(Array.from({ length: 48 }, (_, i) => (i * 7 + 1) & 0xff));

export interface AgentConn {
  socket: net.Socket;
  proxy?: ProxyParseResult;
  hs1: Buffer;
  /** Resolves when the bridge side of this socket is gone (end or close). */
  closed: Promise<void>;
}

export interface FakeAgentOptions {
  /** Expect a PROXY v2 header first. */
  proxy?: boolean;
  /** Sizes of the hs2 writes (sum 48) and the delay between them. */
  hs2Writes?: number[];
  delayMs?: number;
  /** Extra bytes written in the same write as the last hs2 piece. */
  appendToHs2?: Buffer;
  /** Never answer hs1. */
  silent?: boolean;
  /** After hs2; default: echo. */
  after?: (conn: AgentConn) => void;
}

export interface FakeAgent {
  port: number;
  conns: AgentConn[];
  next(): Promise<AgentConn>;
  close(): Promise<void>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startFakeAgent(opts: FakeAgentOptions = {}): Promise<FakeAgent> {
  const conns: AgentConn[] = [];
  const waiters: ((c: AgentConn) => void)[] = [];
  let consumed = 0;
  const sockets = new Set<net.Socket>();
  // The handler is async; net wants a void callback: run it and let a failure surface as a rejection.
  const server = net.createServer((socket) => void serveSocket(socket));
  async function serveSocket(socket: net.Socket): Promise<void> {
    sockets.add(socket);
    socket.on('error', () => {});
    const closed = new Promise<void>((resolve) => {
      socket.once('end', () => resolve());
      socket.once('close', () => resolve());
    });
    let proxy: ProxyParseResult | undefined;
    let buf = Buffer.alloc(0);
    if (opts.proxy) {
      const r = await readProxyHeader(socket, 5000);
      proxy = r.header;
      buf = Buffer.from(r.rest);
    }
    while (buf.length < 32) {
      const chunk = await new Promise<Buffer | null>((resolve) => {
        const onData = (c: Buffer): void => {
          socket.off('data', onData);
          socket.off('close', onClose);
          socket.pause();
          resolve(c);
        };
        const onClose = (): void => resolve(null);
        socket.on('data', onData);
        socket.once('close', onClose);
        socket.resume();
      });
      if (chunk === null) return;
      buf = Buffer.concat([buf, chunk]);
    }
    const conn: AgentConn = { socket, hs1: buf.subarray(0, 32), closed, ...(proxy ? { proxy } : {}) };
    conns.push(conn);
    if (waiters.length) {
      consumed++;
      waiters.shift()!(conn);
    }
    const leftover = buf.subarray(32);
    if (opts.silent) {
      socket.resume();
      return;
    }
    const sizes = opts.hs2Writes ?? [16, 16, 16];
    let off = 0;
    for (let i = 0; i < sizes.length; i++) {
      const piece = HS2.subarray(off, off + sizes[i]!);
      off += sizes[i]!;
      const last = i === sizes.length - 1;
      socket.write(last && opts.appendToHs2 ? Buffer.concat([piece, opts.appendToHs2]) : piece);
      if (!last) await sleep(opts.delayMs ?? 20);
    }
    if (opts.after) {
      if (leftover.length) socket.unshift(leftover);
      opts.after(conn);
    } else {
      if (leftover.length) socket.write(leftover);
      socket.pipe(socket);
    }
  }
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    conns,
    /** The next connection that completed hs1 and was not yet returned by next(). */
    next: () => (consumed < conns.length ? Promise.resolve(conns[consumed++]!) : new Promise((resolve) => waiters.push(resolve))),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
