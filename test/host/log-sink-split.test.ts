// The log sink's line splitter against a peer that trickles its bytes: a line arriving a byte per read must
// cost about its own length in memory, not a Buffer object per byte, and still come out exact.
import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { LineSplitter } from '../../src/host/log-sink-server.ts';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/** Each byte of `text` as its own chunk, with its own backing store (what a socket read of one byte gives). */
function trickle(s: LineSplitter, text: string): void {
  for (const b of Buffer.from(text)) s.push(Buffer.alloc(1, b));
}

describe('LineSplitter with a peer that trickles', () => {
  it('gives the same lines whatever the chunking, and drops an oversized one whole', () => {
    const text = '{"a":1}\n\n{"b":"' + 'x'.repeat(5000) + '"}\r\n' + 'y'.repeat(70) + '\nlast\n';
    const split = (feed: (s: LineSplitter) => void): { lines: string[]; over: number } => {
      const lines: string[] = [];
      let over = 0;
      const s = new LineSplitter(6000, (l) => lines.push(l.toString()), () => over++);
      feed(s);
      return { lines, over };
    };
    const whole = split((s) => s.push(Buffer.from(text)));
    expect(whole.lines).toEqual(['{"a":1}', `{"b":"${'x'.repeat(5000)}"}\r`, 'y'.repeat(70), 'last']);
    expect(split((s) => trickle(s, text))).toEqual(whole);
    const in7 = split((s) => {
      const b = Buffer.from(text);
      for (let i = 0; i < b.length; i += 7) s.push(b.subarray(i, i + 7));
    });
    expect(in7).toEqual(whole);
    const small = (feed: (s: LineSplitter) => void): { lines: string[]; over: number } => {
      const lines: string[] = [];
      let over = 0;
      const s = new LineSplitter(64, (l) => lines.push(l.toString()), () => over++);
      feed(s);
      return { lines, over };
    };
    expect(small((s) => trickle(s, text))).toEqual({ lines: ['{"a":1}', 'last'], over: 2 });
    expect(small((s) => s.push(Buffer.from(text)))).toEqual({ lines: ['{"a":1}', 'last'], over: 2 });
  });

  it('16 connections trickling a 64 KiB line a byte per read hold about 16 × 64 KiB, not a Buffer per byte', () => {
    gc();
    const before = process.memoryUsage().heapUsed;
    let lines = 0;
    const splitters = Array.from({ length: 16 }, () => new LineSplitter(64 * 1024, () => lines++, () => {}));
    for (const s of splitters) for (let i = 0; i < 65_000; i++) s.push(Buffer.alloc(1, 0x78));
    gc();
    const grownMb = (process.memoryUsage().heapUsed - before) / 1e6;
    // Before the fix: about 200 MB of heap for these 1,040,000 bytes of line.
    expect(grownMb).toBeLessThan(20);
    for (const s of splitters) s.push(Buffer.from('\n'));
    expect(lines).toBe(16);
  });
});
