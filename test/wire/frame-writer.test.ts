import net from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { WireError } from '../../src/wire/errors.ts';
import { FrameWriter } from '../../src/wire/frame-writer.ts';
import { FrameReader, MAX_FRAME_LEN, MAX_WRITE, encodeFrame } from '../../src/wire/frames.ts';

/** A sink that records every write the stream machinery hands it, single or vectored. */
class RecordingSink extends Writable {
  readonly writes: number[] = [];
  readonly writevs: number[][] = [];
  readonly chunks: Buffer[] = [];
  constructor(private readonly delay: 'sync' | 'immediate' | 'timer' = 'immediate') {
    super({ highWaterMark: 1 }); // a tiny buffer: any queued second write would be a writev candidate
  }
  private done(cb: (err?: Error | null) => void): void {
    if (this.delay === 'sync') cb();
    else if (this.delay === 'immediate') setImmediate(cb);
    else setTimeout(cb, 1);
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writes.push(chunk.length);
    this.chunks.push(Buffer.from(chunk));
    this.done(cb);
  }
  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.writevs.push(chunks.map((c) => c.chunk.length));
    for (const c of chunks) this.chunks.push(Buffer.from(c.chunk));
    this.done(cb);
  }
  get output(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function frameOf(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function rejection(p: Promise<unknown>): Promise<WireError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(WireError);
    return err as WireError;
  }
  throw new Error('expected a rejection');
}

describe('FrameWriter', () => {
  it('writes the 48-byte hs2 as exactly one write', async () => {
    const sink = new RecordingSink();
    const w = new FrameWriter(sink);
    await w.writeRaw(new Uint8Array(48).fill(2));
    expect(sink.writes).toEqual([48]);
  });

  it('splits a 65535-byte frame into writes of at most 32768 bytes', async () => {
    const sink = new RecordingSink();
    const w = new FrameWriter(sink);
    const ct = frameOf(MAX_FRAME_LEN, 1);
    await w.writeFrame(ct);
    expect(sink.writes).toEqual([32768, 32768, 3]);
    expect(sink.writevs).toEqual([]);
    expect(sink.output.equals(Buffer.from(encodeFrame(ct)))).toBe(true);
  });

  for (const delay of ['sync', 'immediate', 'timer'] as const) {
    it(`never issues a write above 32768 nor a writev for 50 concurrent writeFrame calls (${delay} sink)`, async () => {
      const sink = new RecordingSink(delay);
      const w = new FrameWriter(sink);
      const frames = Array.from({ length: 50 }, (_, i) => frameOf(i % 5 === 0 ? MAX_FRAME_LEN : 16 + ((i * 7919) % 40000), i));
      await Promise.all(frames.map((f) => w.writeFrame(f)));
      expect(sink.writevs).toEqual([]);
      expect(Math.max(...sink.writes)).toBeLessThanOrEqual(MAX_WRITE);
      // FIFO: the bytes on the wire are the frames in call order
      expect(sink.output.equals(Buffer.concat(frames.map(encodeFrame)))).toBe(true);
      expect(w.queuedBytes).toBe(0);
    });
  }

  it('respects a smaller maxWrite and keeps raw writes and frames in call order', async () => {
    const sink = new RecordingSink();
    const w = new FrameWriter(sink, { maxWrite: 1000 });
    const hs2 = new Uint8Array(48).fill(9);
    const a = frameOf(2500, 1);
    const b = frameOf(16, 2);
    await Promise.all([w.writeRaw(hs2), w.writeFrame(a), w.writeFrame(b)]);
    expect(Math.max(...sink.writes)).toBeLessThanOrEqual(1000);
    expect(sink.output.equals(Buffer.concat([hs2, encodeFrame(a), encodeFrame(b)]))).toBe(true);
  });

  it('resolves each call only after its last piece was accepted by the sink', async () => {
    const sink = new RecordingSink('timer');
    const w = new FrameWriter(sink);
    const order: [string, number][] = [];
    const p1 = w.writeFrame(frameOf(40000, 1)).then(() => order.push(['first', sink.writes.length]));
    const p2 = w.writeFrame(frameOf(16, 2)).then(() => order.push(['second', sink.writes.length]));
    expect(w.queuedBytes).toBe(40004 + 20);
    await Promise.all([p1, p2]);
    expect(order.map(([name]) => name)).toEqual(['first', 'second']);
    expect(order[0]![1]).toBeGreaterThanOrEqual(2); // both pieces of the 40004-byte frame
    expect(order[1]![1]).toBe(3);
  });

  it('rejects a frame of a bad size without writing anything and stays usable', async () => {
    const sink = new RecordingSink();
    const w = new FrameWriter(sink);
    expect((await rejection(w.writeFrame(new Uint8Array(MAX_FRAME_LEN + 1)))).code).toBe('WIRE_FRAME_TOO_LARGE');
    expect((await rejection(w.writeFrame(new Uint8Array(15)))).code).toBe('WIRE_FRAME_TOO_SMALL');
    expect(sink.writes).toEqual([]);
    await w.writeFrame(new Uint8Array(16));
    expect(sink.writes).toEqual([20]);
  });

  it('rejects with WIRE_SINK_CLOSED on a destroyed sink', async () => {
    const sink = new RecordingSink();
    const w = new FrameWriter(sink);
    sink.destroy();
    expect((await rejection(w.writeFrame(new Uint8Array(16)))).code).toBe('WIRE_SINK_CLOSED');
    expect((await rejection(w.writeRaw(new Uint8Array(48)))).code).toBe('WIRE_SINK_CLOSED');
    expect(sink.writes).toEqual([]);
  });

  it('rejects pending and later writes when the sink fails a write, keeping the cause', async () => {
    const boom = new Error('EPIPE-like failure');
    let calls = 0;
    const sink = new Writable({
      write(_chunk, _enc, cb) {
        calls++;
        setImmediate(() => cb(calls === 2 ? boom : null));
      },
    });
    const w = new FrameWriter(sink);
    const results = await Promise.allSettled([w.writeFrame(new Uint8Array(16)), w.writeFrame(new Uint8Array(16)), w.writeFrame(new Uint8Array(16))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    const err = (results[1] as PromiseRejectedResult).reason as WireError;
    expect(err).toBeInstanceOf(WireError);
    expect(err.code).toBe('WIRE_SINK_CLOSED');
    expect(err.cause).toBe(boom);
    expect((await rejection(w.writeFrame(new Uint8Array(16)))).code).toBe('WIRE_SINK_CLOSED');
    expect(calls).toBe(2);
  });

  it('rejects a write in flight when the sink is destroyed before its callback', async () => {
    const sink = new Writable({
      write() {
        /* never calls back: a stuck peer */
      },
    });
    const w = new FrameWriter(sink);
    const pending = w.writeFrame(new Uint8Array(16));
    const queued = w.writeFrame(new Uint8Array(16));
    setImmediate(() => sink.destroy());
    expect((await rejection(pending)).code).toBe('WIRE_SINK_CLOSED');
    expect((await rejection(queued)).code).toBe('WIRE_SINK_CLOSED');
  });

  describe('over a loopback TCP socket', () => {
    let server: net.Server | undefined;
    afterEach(() => server?.close());

    it('delivers hs2 and frames that a FrameReader on the other end reassembles', async () => {
      const received = new FrameReader();
      const done = new Promise<void>((resolve) => {
        server = net.createServer((sock) => {
          sock.on('data', (d) => received.push(d));
          sock.on('end', () => resolve());
        });
      });
      await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
      const { port } = server!.address() as net.AddressInfo;
      const client = net.connect(port, '127.0.0.1');
      await new Promise<void>((r) => client.once('connect', () => r()));
      const w = new FrameWriter(client);
      const frames = Array.from({ length: 30 }, (_, i) => frameOf(i % 3 === 0 ? MAX_FRAME_LEN : 100 + i * 1000, i));
      await Promise.all([w.writeRaw(new Uint8Array(48).fill(7)), ...frames.map((f) => w.writeFrame(f))]);
      client.end();
      await done;
      expect(received.readExact(48)!.every((b) => b === 7)).toBe(true);
      for (const f of frames) expect(Buffer.compare(received.nextFrame()!, f)).toBe(0);
      expect(received.nextFrame()).toBeNull();
      received.end();
      w.detach();
    });
  });
});
