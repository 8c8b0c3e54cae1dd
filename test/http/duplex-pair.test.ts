import { describe, expect, it } from 'vitest';
import { createDuplexPair } from '../../src/http/duplex-pair.ts';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('duplex pair', () => {
  it('delivers what one end writes to the other, both ways', async () => {
    const [a, b] = createDuplexPair();
    const fromA: Buffer[] = [];
    const fromB: Buffer[] = [];
    b.on('data', (c: Buffer) => fromA.push(c));
    a.on('data', (c: Buffer) => fromB.push(c));
    a.write('ping');
    b.write('pong');
    await tick();
    expect(Buffer.concat(fromA).toString()).toBe('ping');
    expect(Buffer.concat(fromB).toString()).toBe('pong');
    expect(a.bytesWritten).toBe(4);
    expect(b.bytesRead).toBe(4);
  });

  it('applies backpressure: a write waits until the reader takes the data', async () => {
    const [a, b] = createDuplexPair({ highWaterMark: 1024 });
    let ok = true;
    let writes = 0;
    while (ok && writes < 1000) {
      ok = a.write(Buffer.alloc(512));
      writes++;
    }
    expect(ok).toBe(false);
    expect(writes).toBeLessThan(10);
    const drained = new Promise<void>((r) => a.once('drain', () => r()));
    b.resume();
    await drained;
  });

  it('propagates half-close: end() on one side is EOF on the other while the reverse direction stays open', async () => {
    const [a, b] = createDuplexPair();
    const ended = new Promise<void>((r) => b.once('end', () => r()));
    b.resume();
    a.end('last');
    await ended;
    const got: Buffer[] = [];
    a.on('data', (c: Buffer) => got.push(c));
    b.write('still open');
    await tick();
    expect(Buffer.concat(got).toString()).toBe('still open');
  });

  it('lets the peer read everything already written after one end is destroyed, then EOF', async () => {
    const [a, b] = createDuplexPair();
    a.write('delivered');
    a.destroy();
    const chunks: Buffer[] = [];
    for await (const c of b as AsyncIterable<Buffer>) chunks.push(c);
    expect(Buffer.concat(chunks).toString()).toBe('delivered');
  });

  it('discards writes to a destroyed peer without erroring, and releases a writer waiting on it', async () => {
    const [a, b] = createDuplexPair({ highWaterMark: 16 });
    a.on('error', () => expect.unreachable());
    const done = new Promise<void>((r) => a.write(Buffer.alloc(64), () => r()));
    b.destroy();
    await done;
    await new Promise<void>((r) => a.write('after', () => r()));
  });

  it('emits timeout after the idle period set with setTimeout, and not while data flows', async () => {
    const [a, b] = createDuplexPair();
    b.resume();
    let fired = 0;
    a.setTimeout(80, () => fired++);
    for (let i = 0; i < 5; i++) {
      a.write('x');
      await new Promise((r) => setTimeout(r, 30));
    }
    expect(fired).toBe(0);
    await new Promise((r) => setTimeout(r, 150));
    expect(fired).toBe(1);
    a.destroy();
  });

  it('destroySoon ends the writable side and destroys after the flush', async () => {
    const [a, b] = createDuplexPair();
    const closed = new Promise<void>((r) => a.once('close', () => r()));
    a.write('bye');
    a.destroySoon();
    const chunks: Buffer[] = [];
    for await (const c of b as AsyncIterable<Buffer>) chunks.push(c);
    await closed;
    expect(Buffer.concat(chunks).toString()).toBe('bye');
  });

  it('holdInput: nothing more reaches the reader, even resumed, until released; then all of it in order', async () => {
    const [a, b] = createDuplexPair({ highWaterMark: 1024 });
    const got: Buffer[] = [];
    b.on('data', (c: Buffer) => got.push(c));
    a.write('one');
    await tick();
    b.holdInput(true);
    let ok = true;
    for (let i = 0; i < 10 && ok; i++) ok = a.write(Buffer.from(`-${i}`.padEnd(400, '.')));
    b.resume();
    await tick();
    expect(Buffer.concat(got).toString()).toBe('one');
    expect(ok).toBe(false);
    const drained = new Promise<void>((r) => a.once('drain', () => r()));
    b.holdInput(false);
    await drained;
    const text = Buffer.concat(got).toString();
    expect(text.startsWith('one-0')).toBe(true);
    expect(text.replace(/\.+/g, '')).toMatch(/^one-0-1-2/);
  });

  it('setSendTimeout: calls back when a write waits for a reader that stopped reading', async () => {
    const [a, b] = createDuplexPair({ highWaterMark: 1024 });
    const fired = new Promise<void>((r) => a.setSendTimeout(50, r));
    a.write(Buffer.alloc(4096));
    await fired;
    expect(b.readableLength).toBeGreaterThan(0);
  });

  it('tells an EOF from a destroy before end() (peerAborted) from one after end()', async () => {
    for (const [how, aborted] of [['destroy', true], ['end then destroy', false], ['destroySoon', false]] as const) {
      const [a, b] = createDuplexPair();
      const got: Buffer[] = [];
      b.on('data', (c: Buffer) => got.push(c));
      const ended = new Promise<void>((r) => b.once('end', () => r()));
      a.write('part');
      if (how === 'destroy') a.destroy();
      else if (how === 'destroySoon') a.destroySoon();
      else {
        a.end();
        a.destroy();
      }
      await ended;
      expect(Buffer.concat(got).toString()).toBe('part');
      expect(b.peerAborted).toBe(aborted);
    }
  });
});
