// The log sink drops lines that are not one JSON object, and lines over --max-line-bytes. Each drop was one warn
// line in the host's own log: a peer writing garbage as fast as it can (a compromised enclave, anything local on
// the TCP port) turned its flood into the operator's log, one line per line. Drops are now counted in one line
// per interval (per reason), and the counters still count each one.
import net from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startLogSinkServer } from '../../src/host/log-sink-server.ts';
import { until } from '../runtime/harness.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('log sink: dropped lines', () => {
  it('are logged as one counted line per interval, not one warning each; nothing of them reaches the log', async () => {
    const logged: Record<string, unknown>[] = [];
    const logStream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) logged.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const taken: string[] = [];
    const srv = await startLogSinkServer({
      listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, output: new PassThrough(), maxLineBytes: 64,
      onLine: (text) => (taken.push(text), true), logger: pino({ level: 'info' }, logStream),
    });
    cleanup.push(() => srv.close());
    const sock = net.connect({ host: '127.0.0.1', port: srv.port! });
    cleanup.push(() => void sock.destroy());
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    const garbage = Array.from({ length: 500 }, (_, i) => `secret-garbage-${i}`).join('\n');
    const long = `{"x":"${'y'.repeat(100)}"}`;
    sock.write(`{"first":1}\n${garbage}\n${long}\n${long}\n{"last":1}\n`);
    await until(() => (taken.length === 2 ? true : undefined), 10_000, 'both good lines');
    expect(srv.stats).toMatchObject({ lines: 2, invalid: 500, oversized: 2 });
    await srv.close();
    const about = logged.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('log line'));
    expect(about).toEqual([expect.objectContaining({ level: 40, msg: 'log lines dropped: not a JSON object, or too long', total: 502, counts: { 'not-json': 500, 'too-long': 2 } })]);
    expect(logged.filter((l) => l.level === 40)).toHaveLength(1);
    expect(JSON.stringify(logged)).not.toContain('secret-garbage');
  });
});
