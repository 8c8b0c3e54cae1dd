// The agent's log stream (createReconnectingLogSink) and the host's log sink server, over AF_UNIX — the same
// code paths as vsock with another address family.
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { LineSplitter, startLogSinkServer, validJsonLine, type LogSinkListen, type LogSinkServer } from '../../src/host/log-sink-server.ts';
import type { ConnectionInfo } from '../../src/transport/types.ts';
import { createReconnectingLogSink, type ReconnectingLogSink } from '../../src/runtime/stream-log-sink.ts';
import { connectStream } from '../../src/transport/connect.ts';
import { defaultLogTarget } from '../../src/runtime/logs.ts';
import { configFromObject } from '../../src/config.ts';
import { until } from './harness.ts';
import { vsockStandIn } from '../host/vsock-stand-in.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function sockPath(): string {
  return path.join(mkdtempSync(path.join(os.tmpdir(), 'ea-logs-')), 'logs.sock');
}

function collector(): { stream: PassThrough; lines: () => Record<string, unknown>[]; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (c: string) => (text += c));
  return { stream, text: () => text, lines: () => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function server(p: string, output: Writable, extra: { maxLineBytes?: number; maxConnections?: number } = {}): Promise<LogSinkServer> {
  const s = await startLogSinkServer({ listen: { kind: 'unix', path: p }, output, ...extra });
  cleanup.push(() => s.close());
  return s;
}

function sink(p: string, extra: { maxQueuedBytes?: number; maxLineBytes?: number } = {}): ReconnectingLogSink {
  const s = createReconnectingLogSink({ connect: () => connectStream({ kind: 'unix', path: p }, { timeoutMs: 1_000 }), reconnectInitialMs: 20, reconnectMaxMs: 100, ...extra });
  cleanup.push(() => s.close(500));
  return s;
}

function rawClient(p: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path: p });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
    cleanup.push(() => void s.destroy());
  });
}

describe('default log target', () => {
  it('is the parent instance, vsock CID 3 (never CID 2, the hypervisor host), on [log] vsock_port', () => {
    const log = configFromObject({ log: { sink: 'vsock', vsock_port: 6001 } }).log;
    expect(defaultLogTarget(log)).toEqual({ kind: 'vsock', cid: 3, port: 6001 });
  });
});

describe('agent log stream → host log sink (AF_UNIX)', () => {
  it('delivers operational logs and transaction records as JSON lines, in order', async () => {
    const p = sockPath();
    const out = collector();
    await server(p, out.stream);
    const s = sink(p);
    const logger = pino({ base: { name: 'enclave-agent' } }, s.destination);
    logger.info({ port: 5000 }, 'agent listening');
    s.write({ txid: 'a1', status: 200 });
    for (let i = 0; i < 100; i++) s.write({ n: i });
    await until(() => (out.lines().length === 102 ? true : undefined), 5_000, '102 lines');
    const lines = out.lines();
    expect(lines[0]).toMatchObject({ level: 30, name: 'enclave-agent', port: 5000, msg: 'agent listening' });
    expect(lines[1]).toEqual({ level: 'info', txid: 'a1', status: 200 });
    expect(lines.slice(2).map((l) => l.n)).toEqual([...Array(100).keys()]);
    expect(s.dropped).toBe(0);
  });

  it('sends the lines of one tick in one write of at most 32 KiB (not one write per line)', async () => {
    // Failed before: 300 records written in one tick were 300 writes to the stream (a syscall each on vsock).
    const writes: string[] = [];
    const stream = new (class extends PassThrough {
      override _write(chunk: Buffer, enc: BufferEncoding, cb: (err?: Error | null) => void): void {
        writes.push(chunk.toString('utf8'));
        super._write(chunk, enc, cb);
      }
    })();
    stream.resume();
    const s = createReconnectingLogSink({ connect: () => Promise.resolve(stream) });
    cleanup.push(() => s.close(500));
    await until(() => (s.connected ? true : undefined), 2_000, 'the stream to open');
    for (let i = 0; i < 300; i++) s.write({ txid: `t${i}`, pad: 'x'.repeat(200) });
    await until(() => (writes.join('').split('\n').length === 301 ? true : undefined), 2_000, '300 lines');
    expect(writes.length).toBeLessThanOrEqual(3); // ~72 KB of lines in writes of ≤ 32 KiB
    for (const w of writes) expect(Buffer.byteLength(w)).toBeLessThanOrEqual(32 * 1024);
    expect(writes.join('').split('\n').slice(0, -1).map((l) => (JSON.parse(l) as { txid: string }).txid)).toEqual([...Array(300).keys()].map((i) => `t${i}`));
  });

  it('buffers while the host is down, keeps the newest lines within the bound, and reports the loss first', async () => {
    const p = sockPath();
    const s = sink(p, { maxQueuedBytes: 4096, maxLineBytes: 512 });
    for (let i = 0; i < 500; i++) s.write({ n: i });
    expect(s.connected).toBe(false);
    expect(s.queuedBytes).toBeLessThanOrEqual(4096);
    expect(s.dropped).toBeGreaterThan(0);
    const dropped = s.dropped;

    const out = collector();
    await server(p, out.stream);
    await until(() => (out.lines().some((l) => l.n === 499) ? true : undefined), 5_000, 'the newest record');
    const lines = out.lines();
    expect(lines[0]).toEqual({ level: 'warn', msg: 'log records dropped (log stream down or backed up)', dropped });
    const ns = lines.slice(1).map((l) => l.n as number);
    expect(ns).toEqual([...Array(ns.length).keys()].map((i) => 500 - ns.length + i));
    expect(ns.length + dropped).toBe(500);
  });

  it('reconnects after the host restarts and goes on delivering', async () => {
    const p = sockPath();
    const out1 = collector();
    const first = await server(p, out1.stream);
    const s = sink(p);
    s.write({ n: 1 });
    await until(() => (out1.lines().length === 1 ? true : undefined), 5_000, 'first line');
    await first.close();
    await until(() => (s.connected ? undefined : true), 5_000, 'the sink to see the close');

    const out2 = collector();
    await server(p, out2.stream);
    s.write({ n: 2 });
    await until(() => (out2.lines().length === 1 ? true : undefined), 5_000, 'a line on the new server');
    expect(out2.lines()[0]).toEqual({ level: 'info', n: 2 });
  });

  it('replaces a record larger than maxLineBytes with a warning instead of sending it', async () => {
    const p = sockPath();
    const out = collector();
    await server(p, out.stream);
    const s = sink(p, { maxLineBytes: 1024 });
    s.write({ big: 'x'.repeat(5000) });
    s.write({ after: true });
    await until(() => (out.lines().length === 2 ? true : undefined), 5_000, 'two lines');
    expect(out.lines()[0]).toMatchObject({ level: 'warn', msg: 'log record too large; replaced', limit: 1024 });
    expect(out.lines()[1]).toEqual({ level: 'info', after: true });
  });

  it('flushes what is queued on close and ends the stream', async () => {
    const p = sockPath();
    const out = collector();
    const srv = await server(p, out.stream);
    const s = sink(p);
    await until(() => (s.connected ? true : undefined), 5_000, 'connected');
    for (let i = 0; i < 1000; i++) s.write({ n: i, pad: 'y'.repeat(100) });
    await s.close();
    await until(() => (out.lines().length === 1000 ? true : undefined), 5_000, 'all lines');
    s.write({ late: true });
    expect(s.dropped).toBe(1);
    expect(srv.stats.lines).toBe(1000);
  });
});

describe('host log sink server', () => {
  it('drops lines that are not JSON objects and lines over the limit, and keeps the rest', async () => {
    const p = sockPath();
    const out = collector();
    const srv = await server(p, out.stream, { maxLineBytes: 100 });
    const c = await rawClient(p);
    c.write('{"a":1}\nnot json\n[1,2]\n"str"\n{"b":');
    c.write('2}\r\n{"big":"' + 'z'.repeat(60));
    c.write('z'.repeat(60) + '"}\n\n{"c":3}\n{"unterminated":');
    await until(() => (srv.stats.lines === 3 ? true : undefined), 5_000, 'three lines');
    c.end();
    expect(out.lines()).toEqual([{ a: 1 }, { b: 2 }, { c: 3 }]);
    expect(srv.stats).toMatchObject({ lines: 3, invalid: 3, oversized: 1 });
  });

  it("writes no raw CR of the agent's: one between JSON tokens becomes a space, in the output and for onLine", async () => {
    const p = sockPath();
    const out = collector();
    const taken: string[] = [];
    const srv = await startLogSinkServer({ listen: { kind: 'unix', path: p }, output: out.stream, onLine: (text, value) => (value.db === true ? (taken.push(text), true) : false) });
    cleanup.push(() => srv.close());
    const c = await rawClient(p);
    // Shown on a terminal, the CR would put "forged" over the start of the line.
    c.write('{"msg":"real",\r"forged":1}\r\n{\r"db":true}\n');
    await until(() => (srv.stats.lines === 2 ? true : undefined), 5_000, 'two lines');
    c.end();
    expect(out.text()).toBe('{"msg":"real", "forged":1}\n');
    expect(taken).toEqual(['{ "db":true}']);
  });

  it("writes no raw C1 control of the agent's: each becomes a \\u escape, the same JSON value", async () => {
    const p = sockPath();
    const out = collector();
    const srv = await startLogSinkServer({ listen: { kind: 'unix', path: p }, output: out.stream });
    cleanup.push(() => srv.close());
    const c = await rawClient(p);
    // A client's User-Agent byte 0x9b as Node reads it (U+009B, CSI): raw, "[2J" would clear the operator's
    // terminal; U+009D (OSC) could set its title or clipboard. An escaped backslash before one stays one.
    const value = { msg: 'trx', user_agent: 'a\u009b2Jb', error: '\u009d0;x\u0007', path: '\\\u0085' };
    c.write(JSON.stringify(value) + '\n');
    await until(() => (srv.stats.lines === 1 ? true : undefined), 5_000, 'one line');
    c.end();
    const text = out.text();
    expect(text).not.toMatch(/[\u0080-\u009f]/);
    expect(text).toContain('a\\u009b2Jb');
    expect(JSON.parse(text)).toEqual(value);
  });

  it('reassembles a multi-byte character split across chunks', async () => {
    const p = sockPath();
    const out = collector();
    const srv = await server(p, out.stream);
    const c = await rawClient(p);
    const bytes = Buffer.from('{"msg":"héllo ✓"}\n');
    for (const b of bytes) {
      c.write(Buffer.of(b));
      await new Promise((r) => setImmediate(r));
    }
    await until(() => (srv.stats.lines === 1 ? true : undefined), 5_000, 'one line');
    expect(out.lines()).toEqual([{ msg: 'héllo ✓' }]);
  });

  it('refuses connections over maxConnections', async () => {
    const p = sockPath();
    const srv = await server(p, collector().stream, { maxConnections: 1 });
    await rawClient(p);
    await until(() => (srv.stats.connections === 1 ? true : undefined), 5_000, 'first connection');
    const second = await rawClient(p);
    await new Promise<void>((resolve) => second.once('close', () => resolve()));
    expect(srv.stats).toMatchObject({ connections: 1, refused: 1 });
  });

  it("over vsock reads only the enclave's CID: another CID (or an unreadable one) is closed unread, counted, and takes no slot", async () => {
    // Every enclave on the instance reaches the parent's vsock port, and the lines feed the activity store. A
    // stand-in listener hands the server unix-socket connections labelled with the peer CID the native vsock
    // listener reports: the server's own code path from there on.
    const standIn = vsockStandIn(5008);
    cleanup.push(() => standIn.cleanup());
    const out = collector();
    const warnings: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line) as Record<string, unknown>) });
    const srv = await startLogSinkServer({ listen: { kind: 'vsock', port: 5008, enclaveCid: 16 }, output: out.stream, listenWith: standIn.listenWith, maxConnections: 1, logger });
    cleanup.push(() => srv.close());
    const peer = (info: ConnectionInfo): Promise<net.Socket> => standIn.peer(info);
    for (const info of [
      { remote: 'vsock:17:1024', transport: 'vsock', peerCid: 17 }, // another enclave
      { remote: 'vsock:17:1025', transport: 'vsock', peerCid: 17 }, // the same one again
      { remote: 'vsock:3:1024', transport: 'vsock', peerCid: 3 }, // the parent itself
      { remote: 'vsock:?', transport: 'vsock' }, // the peer address could not be read
    ] as const) {
      const c = await peer(info);
      const closed = new Promise((r) => c.once('close', r));
      c.write('{"type":"trx","method":"POST","path":"/injected","status":200}\n');
      await closed;
    }
    expect(srv.stats).toMatchObject({ foreignPeers: 4, connections: 0, refused: 0, lines: 0 });
    const refusals = warnings.filter((w) => /CID other than the enclave/.test(String(w.msg)));
    expect(refusals.map((w) => w.peerCid)).toEqual([17, 3, null]);
    expect(JSON.stringify(warnings)).not.toContain('injected');

    // the enclave's own connection is read (the one slot was not taken by the refused ones)
    const agent = await peer({ remote: 'vsock:16:1024', transport: 'vsock', peerCid: 16 });
    agent.write('{"msg":"from the enclave"}\n');
    await until(() => (srv.stats.lines === 1 ? true : undefined), 5_000, 'one line');
    expect(out.lines()).toEqual([{ msg: 'from the enclave' }]);
    expect(srv.stats).toMatchObject({ foreignPeers: 4, connections: 1, refused: 0 });
  });

  it('over vsock without the CID of the enclave, it refuses to start (it would read every enclave)', async () => {
    const standIn = vsockStandIn(5008);
    cleanup.push(() => standIn.cleanup());
    for (const enclaveCid of [undefined, -1, 1.5, 0xffffffff]) {
      const listen = { kind: 'vsock', port: 5008, enclaveCid } as unknown as LogSinkListen;
      await expect(startLogSinkServer({ listen, output: collector().stream, listenWith: standIn.listenWith }), String(enclaveCid)).rejects.toMatchObject({ code: 'LOG_SINK_SERVER_BAD_OPTIONS', message: expect.stringContaining("enclave's CID") });
    }
    expect(standIn.listened).toBe(0);
  });

  it('stops reading from the agent while the output is backed up, then catches up', async () => {
    const p = sockPath();
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let written = 0;
    const output = new Writable({
      highWaterMark: 1024,
      write(_chunk, _enc, cb) {
        written++;
        void released.then(() => cb());
      },
    });
    const srv = await server(p, output);
    const c = await rawClient(p);
    const line = JSON.stringify({ pad: 'q'.repeat(200) }) + '\n';
    const total = 20_000; // ~4 MB
    let i = 0;
    const writeMore = (): void => {
      while (i < total) {
        i++;
        if (!c.write(line)) {
          c.once('drain', writeMore);
          return;
        }
      }
    };
    writeMore();
    await new Promise((r) => setTimeout(r, 500));
    // Paused: far fewer lines taken than sent, so the server is not buffering the rest in memory.
    expect(srv.stats.lines).toBeLessThan(total / 2);
    expect(written).toBe(1);
    release();
    await until(() => (srv.stats.lines === total ? true : undefined), 20_000, 'every line');
  });

  it('splits lines exactly and validates JSON objects only (unit)', () => {
    const got: string[] = [];
    let over = 0;
    const s = new LineSplitter(
      8,
      (l) => got.push(l.toString()),
      () => over++,
    );
    s.push(Buffer.from('ab\ncd'));
    s.push(Buffer.from('ef\n123456789\nx\n'));
    expect(got).toEqual(['ab', 'cdef', 'x']);
    expect(over).toBe(1);
    expect(validJsonLine(Buffer.from('{"a":1}\r'))).toBe('{"a":1}');
    expect(validJsonLine(Buffer.from('{"a":1} trailing'))).toBeNull();
    expect(validJsonLine(Buffer.from('null'))).toBeNull();
  });
});
