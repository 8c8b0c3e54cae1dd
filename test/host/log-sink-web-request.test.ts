// A web page the developer visits can send an HTTP request to the log sink's loopback TCP port (`logs --listen
// tcp:127.0.0.1:PORT --db … --ui …`): `fetch('http://127.0.0.1:PORT/', {method: 'POST', mode: 'no-cors',
// body})`, or a form with enctype="text/plain". The sink reads lines, so the request line and headers were
// dropped as "not JSON" but a body line holding a transaction record was stored and shown on the activity page
// as the enclave's — and a flood of them evicts the real records (retention). A connection that opens with an
// HTTP request line is no agent: it is closed unread.
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { startLogSinkServer, type LogSinkServer } from '../../src/host/log-sink-server.ts';
import { until } from '../runtime/harness.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const FORGED = JSON.stringify({ kind: 'trx', ts: new Date().toISOString(), txid: 'forged', method: 'GET', path: '/forged', status: 200, elapsed_ms: 1 });

async function sink(maxLineBytes?: number): Promise<{ srv: LogSinkServer; taken: string[]; output: string[] }> {
  const taken: string[] = [];
  const output: string[] = [];
  const out = new PassThrough();
  out.setEncoding('utf8');
  out.on('data', (c: string) => output.push(c));
  const srv = await startLogSinkServer({
    listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
    output: out,
    ...(maxLineBytes === undefined ? {} : { maxLineBytes }),
    onLine: (text) => (taken.push(text), true),
  });
  cleanup.push(() => srv.close());
  return { srv, taken, output };
}

/** Writes `pieces` one after the other on a fresh connection; resolves when the sink has closed it. */
function send(port: number, pieces: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    cleanup.push(() => void s.destroy());
    s.on('error', () => {});
    s.once('connect', () => {
      void (async () => {
        for (const p of pieces) {
          if (s.destroyed) break;
          s.write(p);
          await new Promise((r) => setTimeout(r, 5));
        }
        s.end();
      })();
    });
    s.once('close', () => resolve());
    s.setTimeout(5_000, () => reject(new Error('the sink kept the connection open')));
  });
}

/** What chromium sends for fetch(url, { method: 'POST', mode: 'no-cors', body }) from another origin. */
function browserPost(port: number, body: string, target = '/'): string {
  return [
    `POST ${target} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Connection: keep-alive',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Content-Type: text/plain;charset=UTF-8',
    'Origin: http://attacker.example',
    'Referer: http://attacker.example/',
    'Sec-Fetch-Mode: no-cors',
    '',
    body,
  ].join('\r\n');
}

describe('log sink: a web page\'s HTTP request to its TCP port', () => {
  it('is closed unread: no record of its body is stored, however the request is split', async () => {
    const { srv, taken } = await sink();
    const port = srv.port!;
    const body = `\n${FORGED}\n${FORGED}\n`;
    await send(port, [browserPost(port, body)]);
    const whole = browserPost(port, body);
    await send(port, [whole.slice(0, 2), whole.slice(2, 3), whole.slice(3)]);
    expect(taken).toEqual([]);
    expect(srv.stats.lines).toBe(0);
    expect(srv.stats.webRequests).toBe(2);
  });

  it('is closed unread even when its request line is longer than a log line may be', async () => {
    const { srv, taken } = await sink(1024);
    const port = srv.port!;
    await send(port, [browserPost(port, `\n${FORGED}\n`, `/${'a'.repeat(4096)}`)]);
    expect(taken).toEqual([]);
    expect(srv.stats.webRequests).toBe(1);
  });

  it('leaves the agent\'s own stream as it was, even a line that starts with a capital', async () => {
    const { srv, taken } = await sink();
    const c = net.connect({ host: '127.0.0.1', port: srv.port! });
    cleanup.push(() => void c.destroy());
    await new Promise((r) => c.once('connect', r));
    c.write(`${FORGED}\nGET / HTTP/1.1\n{"msg":"after"}\n`);
    await until(() => (taken.length === 2 ? true : undefined), 5_000, 'two lines');
    expect(taken).toEqual([FORGED, '{"msg":"after"}']);
    expect(srv.stats).toMatchObject({ lines: 2, invalid: 1, webRequests: 0 });
  });
});
