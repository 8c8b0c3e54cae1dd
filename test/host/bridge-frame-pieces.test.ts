// A hostile WebSocket client against the bridge: one that sends a frame a byte per TCP segment, or a message in
// one-byte fragments. ws keeps each read of an unfinished frame and each fragment as its own Buffer; with its
// defaults (262,144 reads, 16,384 fragments) one client held 63 MB of RSS after 100,000 one-byte reads. The bridge
// bounds both by its maxPayload (256 bytes a piece on average), closing with 1008, while a message of that size
// sent as a network delivers it (segments of an MSS) still goes through.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { startFakeAgent } from './fake-agent.ts';

const MAX_PAYLOAD = 65_540; // one WIRE.md record: len:u32 ‖ up to 65535 bytes
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A client frame header (FIN as given, masked with a zero mask, so the payload goes as is). */
function header(opcode: number, fin: boolean, len: number): Buffer {
  const first = (fin ? 0x80 : 0) | opcode;
  if (len < 126) return Buffer.from([first, 0x80 | len, 0, 0, 0, 0]);
  const b = Buffer.alloc(14);
  b[0] = first;
  b[1] = 0x80 | 127;
  b.writeBigUInt64BE(BigInt(len), 2);
  return b;
}

interface RawClient {
  socket: net.Socket;
  /** Bytes after the 101 head. */
  received(): Buffer;
  closed: Promise<void>;
}

async function setup(): Promise<Bridge> {
  const agent = await startFakeAgent();
  cleanups.push(() => agent.close());
  const bridge = await startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: agent.port }, maxPayload: MAX_PAYLOAD });
  cleanups.push(() => bridge.close());
  return bridge;
}

/** Upgrades by hand and completes the 32/48-byte exchange, so what follows is read as the session's frames. */
async function rawClient(bridge: Bridge): Promise<RawClient> {
  const socket = net.connect(bridge.port, '127.0.0.1');
  socket.setNoDelay(true);
  cleanups.push(() => Promise.resolve(void socket.destroy()));
  let all = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (all = Buffer.concat([all, d])));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write('GET / HTTP/1.1\r\nHost: bridge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
  const body = (): Buffer => {
    const end = all.indexOf('\r\n\r\n');
    return end < 0 ? Buffer.alloc(0) : all.subarray(end + 4);
  };
  socket.write(Buffer.concat([header(2, true, 32), Buffer.alloc(32, 0xa1)]));
  while (body().length < 50) await new Promise((r) => setTimeout(r, 10)); // the 48-byte hs2 frame
  return { socket, received: body, closed };
}

/** The bridge's (unmasked) frames in `bytes`, the last one possibly incomplete. */
function frames(bytes: Buffer): { opcode: number; payload: Buffer }[] {
  const out: { opcode: number; payload: Buffer }[] = [];
  for (let at = 0; at + 2 <= bytes.length; ) {
    let len = bytes[at + 1]! & 0x7f;
    let start = at + 2;
    if (len === 126) {
      len = bytes.readUInt16BE(at + 2);
      start += 2;
    } else if (len === 127) {
      len = Number(bytes.readBigUInt64BE(at + 2));
      start += 8;
    }
    out.push({ opcode: bytes[at]! & 0x0f, payload: bytes.subarray(start, start + len) });
    at = start + len;
  }
  return out;
}

/** The close code of the first close frame the bridge sent, null when it sent none. */
function closeCode(bytes: Buffer): number | null {
  const close = frames(bytes).find((f) => f.opcode === 8);
  return close === undefined ? null : close.payload.length >= 2 ? close.payload.readUInt16BE(0) : 1005;
}

/** Writes each piece in its own segment, the next once the previous one has gone; stops when the bridge closes. */
async function trickle(c: RawClient, pieces: Buffer[]): Promise<number> {
  let sent = 0;
  for (const p of pieces) {
    if (c.socket.destroyed || c.socket.readableEnded) break;
    await new Promise<void>((resolve) => c.socket.write(p, () => setImmediate(resolve)));
    sent++;
  }
  return sent;
}

describe('bridge: a frame or a message in many small pieces', () => {
  it('closes with 1008 a client that sends a frame a byte per segment, long before ws would (262,144 reads)', async () => {
    const bridge = await setup();
    const c = await rawClient(bridge);
    const pieces = [header(2, true, MAX_PAYLOAD), ...Array.from({ length: 6000 }, () => Buffer.of(0x41))];
    const sent = await trickle(c, pieces);
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 2000))]);
    expect(closeCode(c.received().subarray(50))).toBe(1008);
    expect(sent).toBeLessThan(pieces.length);
    await c.closed;
    while (bridge.connections > 0) await new Promise((r) => setTimeout(r, 10));
  });

  it('closes with 1008 a message sent in one-byte fragments, long before ws would (16,384 fragments)', async () => {
    const bridge = await setup();
    const c = await rawClient(bridge);
    const fragments = Array.from({ length: 2000 }, (_, i) => Buffer.concat([header(i === 0 ? 2 : 0, false, 1), Buffer.of(0x42)]));
    c.socket.write(Buffer.concat(fragments));
    await Promise.race([c.closed, new Promise((r) => setTimeout(r, 2000))]);
    expect(closeCode(c.received().subarray(50))).toBe(1008);
    await c.closed;
  });

  it('still carries a message of maxPayload bytes sent in 1448-byte segments, and one in 64 fragments', async () => {
    const bridge = await setup();
    const c = await rawClient(bridge);
    const payload = Buffer.alloc(MAX_PAYLOAD, 0x43);
    const frame = Buffer.concat([header(2, true, payload.length), payload]);
    const segments: Buffer[] = [];
    for (let off = 0; off < frame.length; off += 1448) segments.push(frame.subarray(off, off + 1448));
    await trickle(c, segments);
    const fragmented: Buffer[] = [];
    const size = Math.ceil(payload.length / 64);
    for (let off = 0, i = 0; off < payload.length; off += size, i++) {
      const part = payload.subarray(off, off + size);
      fragmented.push(header(i === 0 ? 2 : 0, off + size >= payload.length, part.length), part);
    }
    c.socket.write(Buffer.concat(fragmented));
    // The fake agent echoes: both messages come back (in frames of any size), and nothing closed.
    const echoed = (): number => frames(c.received().subarray(50)).reduce((n, f) => n + (f.opcode === 2 ? f.payload.length : 0), 0);
    while (echoed() < 2 * payload.length && !c.socket.destroyed) await new Promise((r) => setTimeout(r, 10));
    expect(echoed()).toBeGreaterThanOrEqual(2 * payload.length);
    expect(closeCode(c.received().subarray(50))).toBeNull();
    expect(bridge.connections).toBe(1);
  });
});
