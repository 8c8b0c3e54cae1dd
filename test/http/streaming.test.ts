// 1 GB each way through HTTP mode with bounded memory: the body is generated lazily on one side, hashed on
// the other, and the process RSS is sampled throughout (the app runs in the same process, so its memory
// counts too). Measured on the shared 2-core dev VM while other suites ran (load average 10–15): upload
// 53–126 MB/s (8–19 s), download 27–106 MB/s (10–38 s), SHA-256 on both ends included; peak RSS growth
// 18–49 MB. Each run prints its own line (no uncontended figure yet).
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { MemoryLogSink } from '../../src/http/log-sink.ts';
import { ResponseReader, fakeContext, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

const GB = 1024 ** 3;
const BLOCK = 64 * 1024;
const MAX_RSS_GROWTH = 200 * 1024 * 1024;

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

/** 16 distinct immutable blocks, cycled: cheap to produce, not a constant stream. */
const BLOCKS = Array.from({ length: 16 }, (_, i) => Buffer.alloc(BLOCK, `block-${i}-`));

/** Writes `total` bytes to `out` respecting backpressure; returns the SHA-256 of what was written. */
async function pump(out: { write(c: Buffer): boolean; once(ev: 'drain', cb: () => void): unknown }, total: number): Promise<string> {
  const hash = createHash('sha256');
  for (let sent = 0, i = 0; sent < total; i++) {
    const block = BLOCKS[i % BLOCKS.length]!;
    const chunk = total - sent >= BLOCK ? block : block.subarray(0, total - sent);
    hash.update(chunk);
    sent += chunk.length;
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  return hash.digest('hex');
}

function rssSampler(): { stop(): number } {
  const base = process.memoryUsage().rss;
  let peak = base;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 50);
  return {
    stop() {
      clearInterval(t);
      peak = Math.max(peak, process.memoryUsage().rss);
      return peak - base;
    },
  };
}

describe('streaming bodies', () => {
  it('streams a 1 GB upload to the app with bounded agent memory (Content-Length)', { timeout: 180_000 }, async () => {
    let appHash = '';
    let appBytes = 0;
    app = await startApp((req, res) => {
      const hash = createHash('sha256');
      req.on('data', (c: Buffer) => {
        appBytes += c.length;
        hash.update(c);
      });
      req.on('end', () => {
        appHash = hash.digest('hex');
        res.end('stored');
      });
    });
    const sink: MemoryLogSink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink });
    global.gc?.();
    const rss = rssSampler();
    const started = performance.now();
    const d: Duplex = await fwd.connect(fakeContext());
    const reader = new ResponseReader(d);
    d.write(`PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${GB}\r\nConnection: close\r\n\r\n`);
    const sentHash = await pump(d, GB);
    d.end();
    const res = await reader.next();
    const seconds = (performance.now() - started) / 1000;
    const growth = rss.stop();
    console.log(`1 GB upload: ${(1024 / seconds).toFixed(0)} MB/s, ${seconds.toFixed(1)} s, peak RSS growth ${(growth / 2 ** 20).toFixed(0)} MB`);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe('stored');
    expect(appBytes).toBe(GB);
    expect(appHash).toBe(sentHash);
    expect(growth).toBeLessThan(MAX_RSS_GROWTH);
    await new Promise((r) => setTimeout(r, 20));
    expect(sink.records[0]).toMatchObject({ bytes_in: GB, status: 200 });
  });

  it('streams a 1 GB chunked download from the app with bounded agent memory', { timeout: 180_000 }, async () => {
    let appHash: Promise<string> = Promise.resolve('');
    app = await startApp((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      appHash = pump(res, GB).then((h) => {
        res.end();
        return h;
      });
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    global.gc?.();
    const rss = rssSampler();
    const started = performance.now();
    const d = await fwd.connect(fakeContext());
    d.end('GET /download HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    // Parse the chunked framing incrementally, hashing the payload without keeping it.
    const hash = createHash('sha256');
    let received = 0;
    let head = true;
    let pending: Buffer = Buffer.alloc(0);
    let chunkLeft = -1; // -1: expecting a size line
    let chunked = false;
    let finished = false;
    for await (const c of d as AsyncIterable<Buffer>) {
      pending = pending.length === 0 ? c : Buffer.concat([pending, c]);
      if (head) {
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) continue;
        const headText = pending.subarray(0, end).toString('latin1');
        expect(headText).toMatch(/^HTTP\/1\.1 200/);
        chunked = /\r\ntransfer-encoding: chunked/i.test(headText);
        pending = pending.subarray(end + 4);
        head = false;
      }
      for (;;) {
        if (chunkLeft < 0) {
          const eol = pending.indexOf('\r\n');
          if (eol < 0) break;
          chunkLeft = parseInt(pending.subarray(0, eol).toString('latin1'), 16);
          pending = pending.subarray(eol + 2);
          if (chunkLeft === 0) {
            finished = true;
            break;
          }
        }
        if (pending.length === 0) break;
        const take = Math.min(chunkLeft, pending.length);
        hash.update(pending.subarray(0, take));
        received += take;
        chunkLeft -= take;
        pending = pending.subarray(take);
        if (chunkLeft === 0) {
          if (pending.length < 2) {
            chunkLeft = -2; // need the CRLF after the chunk
          } else {
            pending = pending.subarray(2);
            chunkLeft = -1;
            continue;
          }
        }
        if (chunkLeft === -2) {
          if (pending.length < 2) break;
          pending = pending.subarray(2);
          chunkLeft = -1;
        }
      }
      if (chunkLeft === -2 && pending.length >= 2) {
        pending = pending.subarray(2);
        chunkLeft = -1;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    const growth = rss.stop();
    console.log(`1 GB download: ${(1024 / seconds).toFixed(0)} MB/s, ${seconds.toFixed(1)} s, peak RSS growth ${(growth / 2 ** 20).toFixed(0)} MB`);
    expect(chunked).toBe(true);
    expect(finished).toBe(true);
    expect(received).toBe(GB);
    expect(hash.digest('hex')).toBe(await appHash);
    expect(growth).toBeLessThan(MAX_RSS_GROWTH);
  });
});
