import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { AppStream, BSTR_STREAM_CHUNK, STREAM_CHUNK, type StreamOwner } from '../../src/responder/streams.ts';
import { MAX_FRAME_LEN } from '../../src/wire/frames.ts';

type Event = { kind: 'data'; payload: Uint8Array } | { kind: 'close' } | { kind: 'error'; message: string };

function owner(): StreamOwner & { events: Event[] } {
  const events: Event[] = [];
  return {
    events,
    streamData: (_s, payload) => void events.push({ kind: 'data', payload: payload.slice() }),
    streamClosed: () => void events.push({ kind: 'close' }),
    streamError: (_s, message) => void events.push({ kind: 'error', message }),
    streamFinished: () => {},
    queueChanged: () => {},
  };
}

/** An app socket whose reads the test produces with push(). */
function fakeApp(): Duplex {
  return new Duplex({
    read() {},
    write(_chunk, _enc, cb) {
      cb();
    },
  });
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const pattern = (n: number, seed: number): Buffer => Buffer.from(Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));

function dataOf(events: Event[]): Uint8Array[] {
  return events.flatMap((e) => (e.kind === 'data' ? [e.payload] : []));
}

describe('AppStream app → client', () => {
  it('coalesces small app reads of one event-loop turn into StreamData of up to 16 KiB, bytes in order', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'array', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    const reads = Array.from({ length: 300 }, (_, i) => pattern(100, i)); // 30,000 bytes in 300 reads
    for (const r of reads) app.push(r);
    await turn();
    await turn();
    const sizes = dataOf(o.events).map((p) => p.length);
    expect(sizes).toEqual([STREAM_CHUNK, 30_000 - STREAM_CHUNK]);
    expect(Buffer.concat(dataOf(o.events)).equals(Buffer.concat(reads))).toBe(true);
    s.destroy();
  });

  it('sends full 16 KiB pieces of a large read at once and the tail with the next turn', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'array', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    const big = pattern(40_000, 3);
    app.push(big);
    await new Promise((r) => process.nextTick(r));
    expect(dataOf(o.events).map((p) => p.length)).toEqual([STREAM_CHUNK, STREAM_CHUNK]);
    await turn();
    expect(dataOf(o.events).map((p) => p.length)).toEqual([STREAM_CHUNK, STREAM_CHUNK, 40_000 - 2 * STREAM_CHUNK]);
    expect(Buffer.concat(dataOf(o.events)).equals(big)).toBe(true);
    s.destroy();
  });

  it('never sends a StreamData above 16 KiB on an int-array (compat) stream and keeps every byte across mixed read sizes', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'array', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    const reads: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const r = pattern([1, 700, 16_383, 16_384, 16_385, 50_000][i % 6]!, i);
      reads.push(r);
      app.push(r);
      if (i % 7 === 0) await turn();
    }
    await turn();
    await turn();
    const sent = dataOf(o.events);
    expect(Math.max(...sent.map((p) => p.length))).toBeLessThanOrEqual(STREAM_CHUNK);
    expect(Buffer.concat(sent).equals(Buffer.concat(reads))).toBe(true);
    s.destroy();
  });

  it('fills bstr StreamData (our clients only) up to 64,000 bytes: a 150,000-byte read is three messages', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'bstr', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    const big = pattern(150_000, 5);
    app.push(big);
    await turn();
    await turn();
    expect(dataOf(o.events).map((p) => p.length)).toEqual([BSTR_STREAM_CHUNK, BSTR_STREAM_CHUNK, 150_000 - 2 * BSTR_STREAM_CHUNK]);
    expect(Buffer.concat(dataOf(o.events)).equals(big)).toBe(true);
    s.destroy();
  });

  it('coalesces small bstr reads of one turn into one StreamData, never above 64,000 bytes', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'bstr', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    const reads: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const r = pattern([1, 700, 16_384, 63_999, 64_000, 64_001, 100_000][i % 7]!, i);
      reads.push(r);
      app.push(r);
      if (i % 5 === 0) await turn();
    }
    await turn();
    await turn();
    const sent = dataOf(o.events);
    expect(Math.max(...sent.map((p) => p.length))).toBe(BSTR_STREAM_CHUNK);
    expect(Buffer.concat(sent).equals(Buffer.concat(reads))).toBe(true);
    s.destroy();
  });

  it('joins the reads of a large StreamData in a reused message buffer, handed over with it; a small one in its own', async () => {
    const sends: { payload: Uint8Array; owned: boolean; pooled: Uint8Array | undefined }[] = [];
    const o: StreamOwner = { ...owner(), streamData: (_s, payload, owned, pooled) => void sends.push({ payload, owned, pooled }) };
    const s = new AppStream(o, 1, 'bstr', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    const large = [pattern(20_000, 1), pattern(15_000, 2)]; // 35,000 bytes: at least half the buffer
    for (const r of large) app.push(r);
    await turn();
    await turn();
    const small = [pattern(700, 3), pattern(900, 4)];
    for (const r of small) app.push(r);
    await turn();
    await turn();
    expect(sends).toHaveLength(2);
    const [big, little] = sends as [(typeof sends)[0], (typeof sends)[0]];
    expect(Buffer.from(big.payload).equals(Buffer.concat(large))).toBe(true);
    expect(big.owned).toBe(true);
    expect(big.pooled?.length).toBe(MAX_FRAME_LEN);
    expect(big.payload.buffer).toBe(big.pooled!.buffer);
    // a small join in a 64 KB buffer would hold up to 64x what the budgets count while it waits for room
    expect(Buffer.from(little.payload).equals(Buffer.concat(small))).toBe(true);
    expect(little.pooled).toBeUndefined();
    expect(little.payload.buffer.byteLength).toBe(1_600);
    s.destroy();
  });

  it('delivers the held bytes before StreamClose when the app ends in the same turn', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'bstr', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    app.push(Buffer.from('he'));
    app.push(Buffer.from('llo'));
    app.push(null);
    await turn();
    await turn();
    expect(o.events).toEqual([{ kind: 'data', payload: Uint8Array.from(Buffer.from('hello')) }, { kind: 'close' }]);
    s.destroy();
  });

  it('delivers the held bytes before the Error when the app connection fails', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'bstr', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    app.push(Buffer.from('partial'));
    await new Promise((r) => process.nextTick(r));
    app.destroy(Object.assign(new Error('reset'), { code: 'ECONNRESET' }));
    await turn();
    await turn();
    expect(o.events.map((e) => e.kind)).toEqual(['data', 'error']);
    expect(Buffer.from((o.events[0] as { payload: Uint8Array }).payload).toString()).toBe('partial');
    expect((o.events[1] as { message: string }).message).toContain('ECONNRESET');
  });

  it('drops held bytes when the client tears the stream down', async () => {
    const o = owner();
    const s = new AppStream(o, 1, 'bstr', new Uint8Array(0), false);
    const app = fakeApp();
    s.attach(app);
    app.push(Buffer.from('late'));
    await new Promise((r) => process.nextTick(r));
    s.destroy();
    await turn();
    await turn();
    expect(dataOf(o.events)).toEqual([]);
  });
});
