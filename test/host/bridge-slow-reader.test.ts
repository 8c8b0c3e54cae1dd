// A client that reads slowly must keep the agent's socket draining. The bridge stops reading the agent once more
// than highWaterMark bytes wait for the client; the agent closes a session none of whose writes completes for its
// write_stall_timeout_ms (30 s), and its writes complete only as the bridge reads. Resumed only once the client
// had read the queue down to a quarter (768 KiB at the default 1 MiB), a client under ~26 KB/s held the agent
// unread for more than 30 s at a time and lost its session while it was still reading.
//
// The client here is a stand-in WebSocket whose sends complete only when the test says the client read them, so
// what the bridge does after each read is seen without any timing; the agent is a loopback socket writing without
// end (test/host/fake-agent.ts).
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { WebSocket } from 'ws';
import { BridgeConnection } from '../../src/host/bridge-connection.ts';
import { startFakeAgent, type FakeAgent } from './fake-agent.ts';

/** The part of a `ws` WebSocket BridgeConnection uses; sends wait in `pending` until the test completes them. */
class HeldWebSocket extends EventEmitter {
  readonly readyState = 1;
  readonly pending: { bytes: number; done: () => void }[] = [];
  sends = 0;
  get pendingBytes(): number {
    return this.pending.reduce((n, s) => n + s.bytes, 0);
  }
  send(data: Buffer, _opts: unknown, cb: () => void): void {
    this.sends++;
    this.pending.push({ bytes: data.length, done: cb });
  }
  /** The client read the oldest `bytes` or more (whole messages): their sends complete. */
  read(bytes: number): void {
    for (let n = 0; n < bytes && this.pending.length > 0; ) {
      const s = this.pending.shift()!;
      n += s.bytes;
      s.done();
    }
  }
  pause(): void {}
  resume(): void {}
  close(): void {
    this.emit('close');
  }
  terminate(): void {
    this.emit('close');
  }
}

const REQ = { socket: { remoteAddress: '127.0.0.1', remotePort: 40000, localAddress: '127.0.0.1', localPort: 8443 } } as unknown as IncomingMessage;
let agent: FakeAgent | null = null;
let conn: BridgeConnection | null = null;
afterEach(async () => {
  conn?.finish(1001, 'test over');
  conn = null;
  await agent?.close();
  agent = null;
});

describe('bridge: a client reading slowly', () => {
  it('reads the agent again after each read of the client, not after it read down to a quarter of the mark', async () => {
    const highWaterMark = 256 * 1024;
    const chunk = Buffer.alloc(16 * 1024, 0x42);
    agent = await startFakeAgent({
      after: ({ socket }) => {
        const pump = (): void => {
          while (!socket.destroyed) {
            if (!socket.write(chunk)) {
              socket.once('drain', pump);
              return;
            }
          }
        };
        pump();
      },
    });
    const ws = new HeldWebSocket();
    conn = new BridgeConnection(ws as unknown as WebSocket, REQ, {
      target: { kind: 'tcp', host: '127.0.0.1', port: agent.port },
      proxyProtocol: false,
      handshakeTimeoutMs: 10_000,
      idleTimeoutMs: 0,
      writeStallTimeoutMs: 600_000,
      highWaterMark,
      logger: pino({ level: 'silent' }),
    });
    conn.start();
    ws.emit('message', Buffer.alloc(32, 0xa1), true); // hs1: the agent answers hs2, then writes without end
    // Past the mark the bridge stops reading the agent: nothing more is sent until the client reads.
    await vi.waitFor(() => expect(ws.pendingBytes).toBeGreaterThan(highWaterMark), { timeout: 10_000 });

    // Each round the client reads 64 KiB (a quarter of the mark) and no more: before the fix the first round left
    // 192 KiB+ waiting, above the quarter, and the bridge never read the agent again (the wait below timed out).
    for (let round = 0; round < 8; round++) {
      const sent = ws.sends;
      ws.read(64 * 1024);
      await vi.waitFor(() => expect(ws.sends).toBeGreaterThan(sent), { timeout: 5_000 });
      // and stops again past the mark: what waits for the client stays bounded
      await vi.waitFor(() => expect(ws.pendingBytes).toBeGreaterThan(highWaterMark), { timeout: 5_000 });
      expect(ws.pendingBytes).toBeLessThanOrEqual(highWaterMark + 128 * 1024);
    }
  });
});
