// `enclave-agent fetch` writes the response body to stdout as it arrives, byte for byte (a binary body intact,
// nothing added), so a large or endless body does not grow the CLI; --json, which must hold the body, stops at
// its cap with CLI_BODY_TOO_LARGE.
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JSON_BODY_MAX_BYTES } from '../../src/cli/capped-body.ts';
import { runCli } from '../../src/cli/run.ts';
import { patternBytes, sha256Hex, startStack, untilOr, type Stack } from '../client/stack.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

/** A stdout that keeps the bytes written to it and reports the running total. */
function byteSink(onTotal: (total: number) => void = () => {}): Writable & { bytes(): Buffer } {
  const chunks: Buffer[] = [];
  let total = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      total += chunk.length;
      onTotal(total);
      cb();
    },
  });
  return Object.assign(sink, { bytes: () => Buffer.concat(chunks) });
}

async function fetchCli(args: string[], rawOut: Writable): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const hex = stack.pins as Record<'PCR0' | 'PCR1' | 'PCR2', string>; // startStack pins hex strings
  const pins = ['--pcr0', hex.PCR0, '--pcr1', hex.PCR1, '--pcr2', hex.PCR2, '--root', stack.sim.rootPath];
  const code = await runCli(['fetch', stack.url, ...args, ...pins], { out: (l) => out.push(l), err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()), rawOut });
  return { code, out, err };
}

describe('enclave-agent fetch streams the body', () => {
  it('an 8 MiB binary body reaches stdout byte for byte, the first half before the app sent the rest', async () => {
    const n = 8 * 1024 * 1024;
    let openedByStdout = false;
    const sink = byteSink((total) => {
      if (!openedByStdout && total >= n / 2) {
        openedByStdout = true;
        stack.app.openGate();
      }
    });
    // A bound on this test, not a timing check: a CLI that waits for the whole body never writes the first half,
    // so the app is let go after 5 s anyway and `openedByStdout` stays false.
    const letGo = setTimeout(() => stack.app.openGate(), 5_000);
    const r = await fetchCli([`/gated?n=${n}`], sink).finally(() => clearTimeout(letGo));
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(openedByStdout).toBe(true);
    const got = sink.bytes();
    expect(got.length).toBe(n);
    expect(got.equals(Buffer.from(patternBytes(n)))).toBe(true); // every byte value, most of it not UTF-8
    expect(r.out).toEqual([]);
  });

  it('-i prints the status line and headers as before; the body follows as is, no newline added', async () => {
    const sink = byteSink();
    const r = await fetchCli(['/hello', '-i'], sink);
    expect(r.code).toBe(0);
    expect(r.out).toHaveLength(1);
    expect(r.out[0]).toMatch(/^HTTP\/1\.1 200 OK\n(.+\n)*content-type: text\/plain\n(.+\n)*$/);
    expect(sink.bytes().toString('latin1')).toBe('hello');
  });
});

/**
 * A stdout slower than the enclave: its first write completes only once `release` resolved, each later one a
 * turn of the event loop after it was made. Hashes what it got instead of keeping it.
 */
function slowSink(release: Promise<void>): Writable & { total(): number; sha256(): string } {
  const hash = createHash('sha256');
  let total = 0;
  let first = true;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      total += chunk.length;
      if (first) {
        first = false;
        void release.then(() => cb());
      } else setImmediate(cb);
    },
  });
  return Object.assign(sink, { total: () => total, sha256: () => hash.digest('hex') });
}

describe('enclave-agent fetch to a stdout slower than the enclave', () => {
  it('a 72 MiB body (past the client\'s 64 MiB cap of unread bytes) completes: the slow stdout holds the enclave back', { timeout: 60_000 }, async () => {
    const n = 72 * 1024 * 1024;
    const before = stack.app.bigEnded;
    // stdout takes nothing until the app wrote the whole body (backpressure may keep it from that) or 3 s passed.
    const sink = slowSink(untilOr(() => stack.app.bigEnded > before, 3_000));
    const r = await fetchCli([`/big?n=${n}`], sink);
    // Failed before the fix: exit 1, CLIENT_BUFFER_FULL once 64 MiB were unread.
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(sink.total()).toBe(n);
    expect(sink.sha256()).toBe(sha256Hex(patternBytes(n)));
  });
});

describe('enclave-agent fetch --json holds the body up to its cap', () => {
  it('a small body is the "body" field', async () => {
    const r = await fetchCli(['/hello', '--json'], byteSink());
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out.join(''))).toMatchObject({ status: 200, body: 'hello' });
  });

  it('a body one byte over the cap fails with CLI_BODY_TOO_LARGE, exit 1, nothing on stdout', async () => {
    const sink = byteSink();
    const r = await fetchCli([`/chunked?n=${JSON_BODY_MAX_BYTES + 1}`, '--json'], sink);
    expect(r.code).toBe(1);
    expect(r.out).toEqual([]);
    expect(sink.bytes().length).toBe(0);
    expect(r.err).toEqual([`enclave-agent fetch: CLI_BODY_TOO_LARGE: --json: the response body is over ${JSON_BODY_MAX_BYTES} bytes, the most held in memory; the rest was not read`]);
  });
});

describe('enclave-agent fetch and its stdout', () => {
  it('a reader that leaves (EPIPE, as `| head -c 10`) ends the command with 23 and one line, no stack', async () => {
    let written = 0;
    const closed = new Writable({
      write(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
      },
    });
    const r = await fetchCli(['/hello'], closed);
    expect(written).toBeGreaterThan(0);
    expect(r.code).toBe(23);
    expect(r.err).toEqual(['enclave-agent fetch: stdout was closed before the whole body was written (EPIPE)']);
  });

  it('a <url> it refuses is described, never quoted (it may carry user:pass@)', async () => {
    const err: string[] = [];
    const code = await runCli(['fetch', 'ftp://alice:hunter2@example.com/', '/'], { out: () => {}, err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
    expect(code).toBe(2);
    expect(err.join('\n')).toMatch(/must be ws:\/\/ or wss:\/\//);
    expect(err.join('\n')).not.toMatch(/hunter2|alice/);
  });
});
