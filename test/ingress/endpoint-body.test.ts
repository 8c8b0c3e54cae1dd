// The agent's own endpoints (/.well-known/health, /.well-known/attestation) answer before the API key is checked
// and read no request body. A request to one whose body is still arriving must not keep its connection: the
// answer says `Connection: close` and the connection ends, however long the client would go on sending (before,
// Node drained such a body for as long as it came, so a client without a key held the connection past every head
// timeout). A request without a body keeps its connection, on the http.Server path too.
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKeyHash } from '../../src/http/stages/api-key.ts';
import { startIngressStack, type IngressStack } from './helpers.ts';

let s: IngressStack;

beforeAll(async () => {
  s = await startIngressStack({ forwarder: { apiKeyHashes: [apiKeyHash('k-endpoint-body')] } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

interface Answer {
  head: string;
  closed: Promise<void>;
  socket: tls.TLSSocket;
}

/** Writes `request` on a new TLS connection and resolves with the first response head. */
function ask(request: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port: s.port, servername: 'localhost', rejectUnauthorized: false }, () => t.write(request, 'latin1'));
    const closed = new Promise<void>((r) => t.once('close', () => r()));
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      t.off('data', onData);
      t.resume();
      resolve({ head: buf.slice(0, end).toLowerCase(), closed, socket: t });
    };
    t.on('data', onData);
    t.once('error', reject);
  });
}

describe('TLS ingress: an endpoint answer to a request whose body is still arriving', () => {
  it.each([
    ['/.well-known/health, chunked (405)', 'POST /.well-known/health HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n', '405'],
    ['/.well-known/attestation, a large Content-Length (200)', 'GET /.well-known/attestation HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n0123456789', '200'],
  ])('%s: says Connection: close and the connection ends while the client still sends', async (_, request, status) => {
    const a = await ask(request);
    expect(a.head.split('\r\n')[0]).toBe(`http/1.1 ${status} ${status === '200' ? 'ok' : 'method not allowed'}`);
    expect(a.head).toMatch(/\r\nconnection: close(\r\n|$)/);
    let ended = false;
    void a.closed.then(() => (ended = true));
    // The client goes on sending body bytes until the agent ends the connection (bounded by the test's timeout).
    while (!ended) {
      a.socket.write(request.includes('chunked') ? '1\r\na\r\n' : 'x'.repeat(100));
      await new Promise((r) => setTimeout(r, 20));
    }
    await a.closed;
    expect(s.app.seen).toEqual([]);
  });

  it('a request without a body keeps its connection (http.Server path: a header the fast path does not take)', async () => {
    const request = 'GET /.well-known/health HTTP/1.1\r\nHost: localhost\r\nX-Obs-Text: caf\xe9\r\n\r\n';
    const a = await ask(request);
    expect(a.head).not.toMatch(/\r\nconnection: close/);
    // The first answer's body may still be on its way: the second answer is the next status line.
    const second = await new Promise<string>((resolve) => {
      let buf = '';
      a.socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        const m = /HTTP\/1\.1 \d{3} [^\r]*/.exec(buf);
        if (m !== null) resolve(m[0]);
      });
      a.socket.write(request, 'latin1');
    });
    expect(second).toMatch(/^HTTP\/1\.1 (200|503) /);
    a.socket.destroy();
  });
});
