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
  /** The chunks as handed over (not copied): to check that large parts reach the sink uncopied. */
  readonly given: Buffer[] = [];
  /** Bytes per syscall the sink would make, in order: each write, and each writev as a whole. */
  readonly syscalls: number[] = [];
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
    this.syscalls.push(chunk.length);
    this.chunks.push(Buffer.from(chunk));
    this.given.push(chunk);
    this.done(cb);
  }
  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.writevs.push(chunks.map((c) => c.chunk.length));
    this.syscalls.push(chunks.reduce((n, c) => n + c.chunk.length, 0));
    for (const c of chunks) this.chunks.push(Buffer.from(c.chunk));
    for (const c of chunks) this.given.push(c.chunk);
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

describe('FrameWriter with coalesce', () => {
  /** Frames of assorted sizes: tiny, typical StreamData, and the largest frame. */
  function mixedFrames(count: number, seed: number): Uint8Array[] {
    return Array.from({ length: count }, (_, i) => {
      const r = (i * 7919 + seed * 104729) % 97;
      const len = r < 40 ? 16 + (r * 37) % 300 : r < 80 ? 16400 + (r % 7) * 50 : r < 90 ? 32764 + (r % 3) : MAX_FRAME_LEN;
      return frameOf(len, i + seed);
    });
  }

  function reassemble(bytes: Buffer, rawLen = 0): Uint8Array[] {
    const reader = new FrameReader();
    reader.push(new Uint8Array(bytes));
    if (rawLen > 0) reader.readExact(rawLen);
    reader.end();
    const out: Uint8Array[] = [];
    for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) out.push(f);
    return out;
  }

  for (const delay of ['sync', 'immediate', 'timer'] as const) {
    it(`merges queued frames into writes (or writevs) of at most 32768 bytes in all, frames intact (${delay} sink)`, async () => {
      const sink = new RecordingSink(delay);
      const w = new FrameWriter(sink, { coalesce: true });
      const frames = mixedFrames(120, 3);
      await Promise.all(frames.map((f) => w.writeFrame(f)));
      expect(Math.max(...sink.syscalls)).toBeLessThanOrEqual(MAX_WRITE);
      // merged: every syscall but the last is full, so far fewer than frames
      const total = frames.reduce((n, f) => n + 4 + f.length, 0);
      expect(sink.syscalls.length).toBe(Math.ceil(total / MAX_WRITE));
      expect(sink.output.equals(Buffer.concat(frames.map(encodeFrame)))).toBe(true);
      const back = reassemble(sink.output);
      expect(back.length).toBe(frames.length);
      back.forEach((f, i) => expect(Buffer.compare(f, frames[i]!)).toBe(0));
      expect(w.queuedBytes).toBe(0);
    });
  }

  it('merges two typical 16 KiB StreamData frames into one full write and the rest of the second into the next', async () => {
    const sink = new RecordingSink('timer');
    const w = new FrameWriter(sink, { coalesce: true });
    const a = frameOf(16420, 1);
    const b = frameOf(16420, 2);
    await Promise.all([w.writeFrame(a), w.writeFrame(b)]);
    expect(sink.syscalls).toEqual([32768, 2 * 16424 - 32768]);
    expect(sink.writevs.length).toBeGreaterThan(0); // the large parts went out as views, gathered
    expect(sink.output.equals(Buffer.concat([encodeFrame(a), encodeFrame(b)]))).toBe(true);
  });

  it('keeps every write within a smaller maxWrite for random frame sizes and arrival patterns', async () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (let round = 0; round < 20; round++) {
      const maxWrite = 1 + rand(5000);
      const sink = new RecordingSink(round % 2 === 0 ? 'immediate' : 'sync');
      const w = new FrameWriter(sink, { coalesce: true, maxWrite });
      const frames: Uint8Array[] = [];
      const pending: Promise<void>[] = [];
      for (let burst = 0; burst < 6; burst++) {
        for (let i = rand(8); i >= 0; i--) {
          const f = frameOf(16 + rand(rand(2) === 0 ? 100 : 20000), frames.length);
          frames.push(f);
          pending.push(w.writeFrame(f));
        }
        if (rand(2) === 0) await new Promise((r) => setImmediate(r));
      }
      await Promise.all(pending);
      expect(Math.max(...sink.syscalls)).toBeLessThanOrEqual(maxWrite);
      expect(sink.output.equals(Buffer.concat(frames.map(encodeFrame)))).toBe(true);
    }
  });

  it('hands large parts to a gathering sink uncopied and packs small ones together', async () => {
    const sink = new RecordingSink('immediate');
    const w = new FrameWriter(sink, { coalesce: true });
    const big = frameOf(20_000, 1);
    const tag = frameOf(16, 2);
    const small = [frameOf(100, 3), frameOf(200, 4)];
    await Promise.all([w.writeFrameParts([big, tag]), ...small.map((f) => w.writeFrame(f))]);
    expect(sink.output.equals(Buffer.concat([encodeFrame(Buffer.concat([big, tag])), ...small.map(encodeFrame)]))).toBe(true);
    expect(sink.given.some((c) => c.buffer === big.buffer)).toBe(true);
    // header before the big part; tag + the two small frames after it, packed into one chunk
    expect(sink.writevs).toEqual([[4, 20_000, 16 + 104 + 204]]);
  });

  it('gives a sink without writev each merged write as one buffer', async () => {
    const sizes: number[] = [];
    const sink = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, cb) {
        sizes.push(chunk.length);
        setImmediate(cb);
      },
    });
    const w = new FrameWriter(sink, { coalesce: true });
    await Promise.all([w.writeFrameParts([frameOf(20_000, 1), frameOf(16, 2)]), w.writeFrame(frameOf(30_000, 3))]);
    expect(sizes).toEqual([32768, 4 + 20_016 + 4 + 30_000 - 32768]);
  });

  it('never merges raw bytes with frames: hs2 is exactly one 48-byte write', async () => {
    const sink = new RecordingSink('timer');
    const w = new FrameWriter(sink, { coalesce: true });
    const hs2 = new Uint8Array(48).fill(9);
    const before = [frameOf(100, 1), frameOf(200, 2)];
    const after = [frameOf(300, 3), frameOf(400, 4)];
    await Promise.all([...before.map((f) => w.writeFrame(f)), w.writeRaw(hs2), ...after.map((f) => w.writeFrame(f))]);
    expect(sink.writes).toEqual([104 + 204, 48, 304 + 404]);
    expect(sink.output.equals(Buffer.concat([...before.map(encodeFrame), hs2, ...after.map(encodeFrame)]))).toBe(true);
  });

  it('resolves each frame only after its last byte was accepted, in call order', async () => {
    const sink = new RecordingSink('timer');
    const w = new FrameWriter(sink, { coalesce: true });
    const order: [number, number][] = [];
    const sizes = [40000, 16, 30000, 16, 16];
    const frames = sizes.map((n, i) => frameOf(n, i));
    const total = sizes.reduce((n, s) => n + 4 + s, 0);
    const all = frames.map((f, i) => w.writeFrame(f).then(() => order.push([i, sink.syscalls.reduce((n, x) => n + x, 0)])));
    expect(w.queuedBytes).toBe(total);
    await Promise.all(all);
    expect(order.map(([i]) => i)).toEqual([0, 1, 2, 3, 4]);
    let end = 0;
    for (const [i, written] of order) {
      end += 4 + sizes[i]!;
      expect(written).toBeGreaterThanOrEqual(end);
    }
    expect(w.queuedBytes).toBe(0);
  });

  it('rejects frames merged into a failed write and every later one', async () => {
    const boom = new Error('EPIPE-like failure');
    let calls = 0;
    const sizes: number[] = [];
    const sink = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, cb) {
        calls++;
        sizes.push(chunk.length);
        setImmediate(() => cb(calls === 2 ? boom : null));
      },
    });
    const w = new FrameWriter(sink, { coalesce: true });
    const first = w.writeFrame(new Uint8Array(32764)); // exactly one full write
    const merged = [w.writeFrame(new Uint8Array(16)), w.writeFrame(new Uint8Array(16))];
    await first;
    const results = await Promise.allSettled(merged);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(((results[0] as PromiseRejectedResult).reason as WireError).cause).toBe(boom);
    expect(sizes).toEqual([32768, 40]);
    expect((await rejection(w.writeFrame(new Uint8Array(16)))).code).toBe('WIRE_SINK_CLOSED');
  });

  for (const coalesce of [true, false]) {
    it(`writes a ciphertext given in parts as one frame (coalesce: ${coalesce})`, async () => {
      const sink = new RecordingSink('timer');
      const w = new FrameWriter(sink, { coalesce });
      const a = frameOf(16400, 1);
      const b = frameOf(40000, 2);
      const split = (f: Uint8Array, at: number): Uint8Array[] => [f.subarray(0, at), f.subarray(at, at), f.subarray(at)];
      await Promise.all([w.writeFrameParts(split(a, a.length - 16)), w.writeFrameParts([b]), w.writeFrameParts(split(a, 5))]);
      expect(Math.max(...sink.syscalls)).toBeLessThanOrEqual(MAX_WRITE);
      if (!coalesce) expect(sink.writevs).toEqual([]); // one frame per write, one buffer per write
      expect(sink.output.equals(Buffer.concat([encodeFrame(a), encodeFrame(b), encodeFrame(a)]))).toBe(true);
      expect((await rejection(w.writeFrameParts([new Uint8Array(8), new Uint8Array(7)]))).code).toBe('WIRE_FRAME_TOO_SMALL');
      expect((await rejection(w.writeFrameParts([new Uint8Array(MAX_FRAME_LEN), new Uint8Array(1)]))).code).toBe('WIRE_FRAME_TOO_LARGE');
    });
  }

  it('rejects a bad frame size without writing anything and stays usable', async () => {
    const sink = new RecordingSink();
    const w = new FrameWriter(sink, { coalesce: true });
    expect((await rejection(w.writeFrame(new Uint8Array(MAX_FRAME_LEN + 1)))).code).toBe('WIRE_FRAME_TOO_LARGE');
    expect((await rejection(w.writeFrame(new Uint8Array(15)))).code).toBe('WIRE_FRAME_TOO_SMALL');
    expect(sink.writes).toEqual([]);
    await w.writeFrame(new Uint8Array(16));
    expect(sink.writes).toEqual([20]);
  });

  it('delivers merged frames over loopback TCP that a FrameReader reassembles', async () => {
    let server: net.Server | undefined;
    try {
      const chunks: Buffer[] = [];
      const done = new Promise<void>((resolve) => {
        server = net.createServer((sock) => {
          sock.on('data', (d) => chunks.push(d));
          sock.on('end', () => resolve());
        });
      });
      await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
      const { port } = server!.address() as net.AddressInfo;
      const client = net.connect(port, '127.0.0.1');
      await new Promise<void>((r) => client.once('connect', () => r()));
      const writes: number[] = [];
      const realWrite = client.write.bind(client) as (chunk: Uint8Array, cb?: (err?: Error | null) => void) => boolean;
      (client as unknown as { write: typeof realWrite }).write = (chunk, cb) => {
        writes.push(chunk.length);
        return realWrite(chunk, cb);
      };
      const writevs: number[] = [];
      const sock = client as unknown as { _writev: (chunks: { chunk: Buffer }[], cb: () => void) => void };
      const realWritev = sock._writev.bind(client);
      sock._writev = (chunks, cb) => {
        writevs.push(chunks.reduce((n, c) => n + c.chunk.length, 0));
        realWritev(chunks, cb);
      };
      const w = new FrameWriter(client, { coalesce: true });
      const frames = mixedFrames(60, 5);
      await Promise.all([w.writeRaw(new Uint8Array(48).fill(7)), ...frames.map((f) => w.writeFrame(f))]);
      client.end();
      await done;
      expect(writes[0]).toBe(48);
      expect(Math.max(...writes)).toBeLessThanOrEqual(MAX_WRITE);
      expect(Math.max(...writevs)).toBeLessThanOrEqual(MAX_WRITE);
      const back = reassemble(Buffer.concat(chunks), 48);
      expect(back.length).toBe(frames.length);
      back.forEach((f, i) => expect(Buffer.compare(f, frames[i]!)).toBe(0));
      w.detach();
    } finally {
      server?.close();
    }
  });
});
