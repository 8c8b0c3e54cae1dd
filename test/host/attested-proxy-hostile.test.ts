// `enclave-agent proxy` against local clients that misbehave and apps that answer oddly: a client that leaves while
// the proxy still verifies the enclave or the app still answers an upgrade, a request Node's parser refuses, an
// upload the app answers early, a response head whose framing or hop-by-hop headers must not pass as they are, and
// close() with a connect in flight. The enclave is a stand-in Client that records what it was asked and which
// streams were released: this is about the proxy's door, not the attested channel behind it.
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Client, UpgradedStream } from '../../src/client/index.ts';
import { ERROR_HEADER, startAttestedProxy, type AttestedProxy } from '../../src/host/attested-proxy.ts';

let proxy: AttestedProxy | null = null;
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await proxy?.close();
  proxy = null;
});

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Opens a raw connection to the proxy and writes `bytes`; resolves once written. */
function rawRequest(bytes: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect(proxy!.port, '127.0.0.1', () => s.write(bytes, () => resolve(s)));
    s.on('error', () => {});
    sockets.push(s);
  });
}

/** One request through the proxy, whole response read. */
function get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: proxy!.port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/**
 * A round trip the proxy answers itself (403, no client needed): once it is back, the proxy has also handled
 * what an earlier connection did before it (a close), and what was queued in its microtasks.
 */
async function barrier(): Promise<void> {
  const r = await get('/barrier', { host: 'elsewhere.example' });
  expect(r.headers[ERROR_HEADER]).toBe('PROXY_HOST_REFUSED');
}

/** A stand-in upgraded stream that records whether it was released (closed, readable cancelled, writable aborted). */
function fakeUpgraded(): { stream: UpgradedStream; released: () => boolean } {
  let released = false;
  const stream = {
    id: 1,
    status: 101,
    statusText: 'Switching Protocols',
    headers: new Headers({ upgrade: 'websocket', connection: 'Upgrade' }),
    head: { status: 101, statusText: 'Switching Protocols', version: 'HTTP/1.1', headers: [], headLength: 0 },
    readable: new ReadableStream<Uint8Array>({ cancel: () => void (released = true) }),
    writable: new WritableStream<Uint8Array>({ abort: () => void (released = true) }),
    closeWrite: () => {},
    close: () => void (released = true),
  } as UpgradedStream;
  return { stream, released: () => released };
}

describe('attested proxy: a local client that leaves early', () => {
  it('releases the enclave stream of an upgrade whose client left before the app answered 101', async () => {
    const answered = gate();
    const asked = gate();
    const up = fakeUpgraded();
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: () => Promise.reject(new Error('no fetch here')),
      upgrade: async () => {
        asked.open();
        await answered.promise;
        return up.stream;
      },
      close: () => Promise.resolve(),
    } as unknown as Client;
    proxy = await startAttestedProxy({ connect: () => Promise.resolve(client) });

    const s = await rawRequest('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await asked.promise; // the upgrade is at the app
    s.destroy(); // the local client gives up (a handshake timeout, a tab closed)
    await barrier();
    answered.open(); // the app answers 101 to nobody
    await barrier();
    // Before the fix nothing ever closed it: the app kept a connection open and the session a stream slot.
    await vi.waitFor(() => expect(up.released()).toBe(true), { timeout: 5_000 });
  });

  it('forwards nothing for a request whose client left while the proxy was still verifying the enclave', async () => {
    const verified = gate();
    const forwarded: string[] = [];
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: (url: string) => {
        forwarded.push(url);
        return Promise.resolve(new Response('from the app'));
      },
      upgrade: () => Promise.reject(new Error('no upgrade here')),
      close: () => Promise.resolve(),
    } as unknown as Client;
    proxy = await startAttestedProxy({
      connect: async () => {
        await verified.promise;
        return client;
      },
    });

    const s = await rawRequest('POST /pay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n');
    s.destroy(); // e.g. curl --max-time ran out during a slow attestation
    await barrier();
    verified.open();
    const later = await get('/later');
    expect(later.body).toBe('from the app');
    expect(forwarded).toEqual(['/later']);
  });
});

/** A proxy in front of a stand-in app that answers every request with `respond()`. */
async function proxyAnswering(respond: () => Response): Promise<void> {
  const client = {
    attestation: { moduleId: 'i-test-enc' },
    fetch: () => Promise.resolve(respond()),
    upgrade: () => Promise.reject(new Error('no upgrade here')),
    close: () => Promise.resolve(),
  } as unknown as Client;
  proxy = await startAttestedProxy({ connect: () => Promise.resolve(client) });
}

describe('attested proxy: the response head it hands back', () => {
  it('drops Content-Length when the app framed its answer with Transfer-Encoding (the body no longer matches it)', async () => {
    // The SDK decodes by Transfer-Encoding (RFC 9112 §6.3) and the proxy re-frames; a Content-Length passed on
    // would make the local client cut the body short and read the rest as the next response on the connection.
    const body = 'first' + 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL';
    await proxyAnswering(() => new Response(body, { headers: { 'content-length': '5', 'transfer-encoding': 'chunked' } }));
    const r = await get('/a');
    expect(r.body).toBe(body);
    expect(r.headers['content-length']).toBeUndefined();
  });

  it("drops the headers the app's Connection header names (hop-by-hop, RFC 9110 §7.6.1)", async () => {
    await proxyAnswering(() => new Response('ok', { headers: { connection: 'X-Upstream-Hop, close', 'x-upstream-hop': 'internal', 'x-app': 'kept' } }));
    const r = await get('/a');
    expect(r.body).toBe('ok');
    expect(r.headers['x-app']).toBe('kept');
    expect(r.headers['x-upstream-hop']).toBeUndefined();
  });

  it(`drops the app's own ${ERROR_HEADER}: only the proxy's answers carry it (a plain answer and a 101 alike)`, async () => {
    await proxyAnswering(() => new Response('fake', { status: 502, headers: { [ERROR_HEADER]: 'ATTESTATION_PCR_MISMATCH', 'x-app': 'kept' } }));
    const r = await get('/a');
    expect([r.status, r.body, r.headers['x-app']]).toEqual([502, 'fake', 'kept']);
    expect(r.headers[ERROR_HEADER]).toBeUndefined();

    const up = fakeUpgraded();
    up.stream.headers.set(ERROR_HEADER, 'CLIENT_RETRYABLE');
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: () => Promise.reject(new Error('no fetch here')),
      upgrade: () => Promise.resolve(up.stream),
      close: () => Promise.resolve(),
    } as unknown as Client;
    await proxy!.close();
    proxy = await startAttestedProxy({ connect: () => Promise.resolve(client) });
    const s = await rawRequest('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    let head = '';
    s.setEncoding('latin1');
    await new Promise<void>((resolve) =>
      s.on('data', (c: string) => {
        head += c;
        if (head.includes('\r\n\r\n')) resolve();
      }),
    );
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(head.toLowerCase()).toContain('upgrade: websocket');
    expect(head.toLowerCase()).not.toContain(ERROR_HEADER);
  });
});

describe('attested proxy: the request head it forwards', () => {
  it('drops Proxy (httpoxy) and the hop-by-hop headers (RFC 9110 §7.6.1), Connection-listed ones too (Upgrade: the upgrade tests)', async () => {
    const seen: [string, string][][] = [];
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: (_url: string, init: { headers: [string, string][] }) => {
        seen.push(init.headers);
        return Promise.resolve(new Response('ok'));
      },
      upgrade: () => Promise.reject(new Error('no upgrade here')),
      close: () => Promise.resolve(),
    } as unknown as Client;
    proxy = await startAttestedProxy({ connect: () => Promise.resolve(client) });
    const hop = ['Proxy: http://attacker.example:8080', 'Keep-Alive: timeout=5', 'Proxy-Connection: keep-alive', 'Proxy-Authorization: Basic YTpi', 'TE: trailers', 'Trailer: X-T', 'X-Listed: 1'];
    const answer = await rawExchange(
      `POST /a HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close, X-Listed\r\n${hop.join('\r\n')}\r\nTransfer-Encoding: chunked\r\nX-App: kept\r\n\r\n2\r\nhi\r\n0\r\n\r\n`,
    );
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    const names = seen[0]!.map(([k]) => k.toLowerCase());
    expect(names).toEqual(['x-app']);
  });
});

/** Writes `bytes` on a new connection and resolves with everything the proxy sent until it closed. */
async function rawExchange(bytes: string): Promise<string> {
  const s = await rawRequest(bytes);
  return new Promise((resolve) => {
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => (out += c));
    s.on('close', () => resolve(out));
  });
}

describe('attested proxy: a request the local HTTP parser refuses', () => {
  it('is answered with a status and the error header, not a silent reset (a 20 KB cookie, a bare LF, a bad Content-Length)', async () => {
    await proxyAnswering(() => new Response('must not be asked'));
    const big = await rawExchange(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    expect(big.toLowerCase()).toContain(`${ERROR_HEADER}: proxy_headers_too_large`);
    const bareLf = await rawExchange('GET / HTTP/1.1\nHost: 127.0.0.1\nX-A: a\n\n');
    expect(bareLf).toMatch(/^HTTP\/1\.1 400 /);
    expect(bareLf.toLowerCase()).toContain(`${ERROR_HEADER}: proxy_bad_request`);
    const twoLengths = await rawExchange('POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    expect(twoLengths).toMatch(/^HTTP\/1\.1 400 /);
  });
});

describe('attested proxy: an app that answers before the upload ended', () => {
  it('lets the local client finish sending and read the answer instead of resetting its connection', async () => {
    // What the SDK does (fetch.ts): it uploads with `for await` over the body and returns from that loop once
    // the response is complete, which calls the body iterator's return().
    const client = {
      attestation: { moduleId: 'i-test-enc' },
      fetch: (_url: string, init: { body: AsyncIterable<Uint8Array> }) => {
        let answered = false;
        void (async () => {
          for await (const _chunk of init.body) if (answered) return;
        })();
        const body = new ReadableStream<Uint8Array>({
          pull: (c) => {
            c.enqueue(new TextEncoder().encode('too large'));
            c.close();
            answered = true;
          },
        });
        return Promise.resolve(new Response(body, { status: 413 }));
      },
      upgrade: () => Promise.reject(new Error('no upgrade here')),
      close: () => Promise.resolve(),
    } as unknown as Client;
    proxy = await startAttestedProxy({ connect: () => Promise.resolve(client) });

    const piece = Buffer.alloc(64 * 1024, 1);
    const pieces = 512; // 32 MiB: more than loopback's socket buffers hold, so the client is still sending
    const s = await rawRequest(`POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${piece.length * pieces}\r\n\r\n`);
    let answer = '';
    s.setEncoding('latin1');
    const answered = new Promise<void>((resolve) =>
      s.on('data', (c: string) => {
        answer += c;
        if (answer.endsWith('\r\n0\r\n\r\n')) resolve(); // the chunked answer is complete
      }),
    );
    // Like Python's http.client: send the whole body, then read the answer.
    const sent = await new Promise<string>((resolve) => {
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      let n = 0;
      const pump = (): void => {
        while (n < pieces && !s.destroyed) {
          n++;
          if (n === pieces) s.write(piece, () => resolve('sent'));
          else if (!s.write(piece)) {
            s.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    expect(sent).toBe('sent'); // ECONNRESET / EPIPE before the fix
    await answered;
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    expect(answer).toContain('too large');
  });
});

describe('attested proxy: close()', () => {
  it('aborts a connect still in flight (a SIGTERM must not wait for --timeout on a bridge that does not answer)', async () => {
    const signals: (AbortSignal | undefined)[] = [];
    proxy = await startAttestedProxy({
      retryAfterMs: 0,
      connect: (signal?: AbortSignal) => {
        signals.push(signal);
        return new Promise<Client>((_resolve, reject) => signal?.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { code: 'CLIENT_ABORTED' }))));
      },
    });
    const answer = get('/while-connecting');
    await vi.waitFor(() => expect(signals).toHaveLength(1));
    await proxy.close();
    proxy = null;
    expect(signals[0]?.aborted).toBe(true);
    expect((await answer.catch(() => null))?.status ?? 'reset').not.toBe(200);
  });
});
