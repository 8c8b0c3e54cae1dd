// Memory a hostile pipelining client can make the http.Server path hold: Node's parser takes in every request
// of a chunk it is handed before the connection's hold (server-connection.ts) can stop it, so a chunk of tiny
// pipelined requests behind one the app is still answering once became thousands of parsed requests
// (IncomingMessage, ServerResponse, Exchange: ~4 KB each, ~8 MB per connection) waiting their turn. The
// server's end of the pair is fed in slices (SERVER_READ_SLICE_BYTES), so what waits is one slice's worth.
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createHttpForwarder, SERVER_READ_SLICE_BYTES } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { attachFront, fakeContext, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

type Cleanups = (() => Promise<void> | void)[];
let cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

const TINY = 'GET / HTTP/1.1\r\nHost:a\r\n\r\n';
/** The most requests of TINY's size one slice can hold (and the one the slice ends inside). */
const MOST_PARSED_AHEAD = Math.ceil(SERVER_READ_SLICE_BYTES / TINY.length) + 1;

async function waitFor(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 10));
}

describe('requests parsed ahead on the http.Server path', () => {
  for (const via of ['keep-alive relay (TLS ingress)', 'stream'] as const) {
    it(`takes in at most one slice of pipelined requests behind a request at the app (${via})`, async () => {
      const app: TestApp = await startApp((req, res) => {
        if (req.url === '/hold') return; // never answered: everything behind it waits
        res.end('ok');
      });
      cleanups.push(() => app.close());
      const sink = createMemoryLogSink();
      const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink });
      cleanups.push(() => fwd.close());
      // A chunked body: the keep-alive fast path hands the connection to the http.Server from this request on.
      const first = 'POST /hold HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n';
      const flood = first + TINY.repeat(4000);
      let client: { write(b: string): unknown; destroy(): unknown };
      if (via === 'stream') {
        client = await fwd.connect(fakeContext({ kind: 'stream' }));
      } else {
        const port = await attachFront(fwd, cleanups);
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        await new Promise<void>((r) => s.once('connect', () => r()));
        expect((s.address() as AddressInfo).port).toBeGreaterThan(0);
        client = s;
      }
      client.write(flood);
      await waitFor(() => app.seen.some((s) => s.url === '/hold'));
      // Whatever the server was going to take in from what it was handed, it has (parsing is synchronous).
      await new Promise((r) => setTimeout(r, 200));
      // The client's own close would not be seen (the agent is not reading from it: backpressure), the agent's
      // shutdown is. Every request taken in and never run gets its record (CLIENT_GONE) once the connection is gone.
      await fwd.close();
      client.destroy();
      await waitFor(() => sink.records.some((r) => r.path === '/hold'));
      await new Promise((r) => setTimeout(r, 100));
      const parsedAhead = sink.records.filter((r) => r.path === '/' && r.error === 'CLIENT_GONE').length;
      expect(parsedAhead).toBeGreaterThan(0);
      expect(parsedAhead).toBeLessThanOrEqual(MOST_PARSED_AHEAD);
      expect(app.seen.map((s) => s.url)).toEqual(['/hold']);
    });
  }
});
