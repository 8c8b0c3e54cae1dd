// The SDK end to end: client ⇄ real host bridge ⇄ real agent (HTTP mode, simulated NSM) ⇄ a test app.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, connect, type Client } from '../../src/client/node.ts';
import { patternBytes, sha256Hex, startStack, type Stack } from './stack.ts';

let stack: Stack;
let client: Client;

beforeAll(async () => {
  stack = await startStack();
  client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
});

afterAll(async () => {
  await client?.close();
  await stack?.close();
});

/** The reader's `closed` promise, or a rejection naming the wait when it does not settle within `ms`. */
function closedWithin(reader: ReadableStreamDefaultReader<Uint8Array>, ms: number): Promise<unknown> {
  return Promise.race([reader.closed, new Promise((_, reject) => setTimeout(() => reject(new Error(`not closed within ${ms} ms`)), ms))]);
}

describe('fetch through the bridge', () => {
  it('exposes the verified attestation bound to the session', () => {
    expect(client.attestation.moduleId).toBe(stack.sim.moduleId);
    expect(Buffer.from(client.attestation.pcrs.get(0)!).toString('hex')).toBe(stack.pins.PCR0);
    expect(client.attestation.nonce?.length).toBe(32);
    expect(client.features).toContain('bstr');
    expect(client.connected).toBe(true);
  });

  it('GETs a text response as a standard Response', async () => {
    const res = await client.fetch('/hello');
    expect(res).toBeInstanceOf(Response);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain');
    expect(await res.text()).toBe('hello');
  });

  it('POSTs bytes and strings and gets them back', async () => {
    const bytes = patternBytes(1000);
    const res = await client.fetch('/echo', { method: 'POST', body: bytes, headers: { 'Content-Type': 'application/x-test' } });
    expect(res.headers.get('content-type')).toBe('application/x-test');
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(bytes);
    const text = await client.post('/echo', { body: 'grüße' });
    expect(await text.text()).toBe('grüße');
  });

  it('sends JSON with its content type and parses JSON answers', async () => {
    const res = await client.fetch('/json', { method: 'POST', json: { amount: 12, tags: ['a'] } });
    expect(await res.json()).toEqual({ got: { amount: 12, tags: ['a'] }, contentType: 'application/json' });
    expect(await client.json('/json', { method: 'POST', body: { plain: true } })).toEqual({ got: { plain: true }, contentType: 'application/json' });
  });

  it('returns 204 with a null body and 404 as a Response, not an error', async () => {
    const empty = await client.fetch('/empty');
    expect(empty.status).toBe(204);
    expect(empty.body).toBeNull();
    const missing = await client.fetch('/nope');
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe('not found');
  });

  it('delivers a 5 MB response intact', async () => {
    const n = 5 * 1024 * 1024;
    const res = await client.fetch(`/big?n=${n}`);
    expect(res.headers.get('content-length')).toBe(String(n));
    const body = new Uint8Array(await res.arrayBuffer());
    expect(body.length).toBe(n);
    expect(sha256Hex(body)).toBe(sha256Hex(patternBytes(n)));
  }, 60_000);

  it('uploads a 3 MB body and a streamed body of unknown size', async () => {
    const big = patternBytes(3 * 1024 * 1024);
    const res = await client.fetch('/echo', { method: 'PUT', body: big });
    expect(res.headers.get('x-body-length')).toBe(String(big.length));
    expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(sha256Hex(big));

    // eslint-disable-next-line @typescript-eslint/require-await -- an async generator is the plainest AsyncIterable body
    async function* parts(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 20; i++) yield patternBytes(50_000, i * 50_000);
    }
    const streamed = await client.fetch('/echo', { method: 'POST', body: parts() });
    expect(streamed.headers.get('x-body-length')).toBe('1000000');
    expect(sha256Hex(new Uint8Array(await streamed.arrayBuffer()))).toBe(sha256Hex(patternBytes(1_000_000)));
  }, 60_000);

  it('decodes a chunked response', async () => {
    const res = await client.fetch('/chunked?n=200000');
    expect(res.headers.get('transfer-encoding')).toBe('chunked');
    expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(sha256Hex(patternBytes(200_000)));
  });

  it('runs 100 concurrent fetches on one client and matches every answer to its request', async () => {
    const before = stack.app.requests;
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const res = await client.fetch('/echo', { method: 'POST', body: `request-${i}` });
        return res.text();
      }),
    );
    expect(results).toEqual(Array.from({ length: 100 }, (_, i) => `request-${i}`));
    expect(stack.app.requests - before).toBe(100);
  }, 60_000);

  it('times out and aborts with typed errors', async () => {
    await expect(client.fetch('/slow?ms=2000', { timeoutMs: 100 })).rejects.toMatchObject({ code: 'CLIENT_TIMEOUT' });
    const ctl = new AbortController();
    const p = client.fetch('/slow?ms=2000', { signal: ctl.signal });
    setTimeout(() => ctl.abort(new Error('user gave up')), 50);
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_ABORTED');
    // The session is still fine.
    expect(await (await client.fetch('/hello')).text()).toBe('hello');
  });
});

describe('response bodies that stop early', () => {
  it('errors the body with CLIENT_ABORTED when the signal aborts mid-body, and frees the stream', async () => {
    const ctl = new AbortController();
    const res = await client.fetch(`/big?n=${20 * 1024 * 1024}`, { signal: ctl.signal });
    const reader = res.body!.getReader();
    await reader.read();
    ctl.abort();
    let err: unknown;
    try {
      for (;;) if ((await reader.read()).done) break;
    } catch (e) {
      err = e;
    }
    expect((err as ClientError).code).toBe('CLIENT_ABORTED');
    expect(await (await client.fetch('/hello')).text()).toBe('hello');
  });

  it('releases the stream when the caller cancels the body (a one-slot client keeps working)', async () => {
    const one = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxInFlight: 1 });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await one.fetch(`/big?n=${4 * 1024 * 1024}`);
        await res.body!.cancel();
      }
      expect(await (await one.fetch('/hello', { timeoutMs: 5000 })).text()).toBe('hello');
    } finally {
      await one.close();
    }
  });

  it('gives up a body nobody reads past maxBufferedBytes (CLIENT_BUFFER_FULL), delivers it to a reader that keeps up, and keeps the session', async () => {
    const capped = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxInFlight: 1, maxBufferedBytes: 256 * 1024 });
    try {
      const n = 4 * 1024 * 1024;
      // Read as it arrives: the queue never holds more than a few frames.
      const fast = await capped.fetch(`/big?n=${n}`);
      expect(sha256Hex(new Uint8Array(await fast.arrayBuffer()))).toBe(sha256Hex(patternBytes(n)));
      // Not read while it arrives: the body errors instead of buffering 4 MiB.
      const slow = await capped.fetch(`/big?n=${n}`);
      const reader = slow.body!.getReader();
      await expect(closedWithin(reader, 10_000)).rejects.toMatchObject({ code: 'CLIENT_BUFFER_FULL' });
      await expect(reader.read()).rejects.toMatchObject({ code: 'CLIENT_BUFFER_FULL' });
      // The stream's slot was released (maxInFlight 1) and the session goes on.
      expect(await (await capped.fetch('/hello', { timeoutMs: 5000 })).text()).toBe('hello');
      // The same for a raw stream nobody reads.
      const raw = await capped.openStream(`GET /big?n=${n} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n`);
      const rawReader = raw.readable.getReader();
      await expect(closedWithin(rawReader, 10_000)).rejects.toMatchObject({ code: 'CLIENT_BUFFER_FULL' });
      expect(await (await capped.fetch('/hello', { timeoutMs: 5000 })).text()).toBe('hello');
      await expect(connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxBufferedBytes: 0 })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
    } finally {
      await capped.close();
    }
  });

  it('aborts a request still waiting for a window slot without sending it', async () => {
    const one = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxInFlight: 1 });
    try {
      const before = stack.app.requests;
      const slow = one.fetch('/slow?ms=300');
      const ctl = new AbortController();
      const queued = one.fetch('/hello', { signal: ctl.signal }).catch((e: unknown) => e);
      setTimeout(() => ctl.abort(), 50); // while it waits in the window queue
      expect(((await queued) as ClientError).code).toBe('CLIENT_ABORTED');
      expect(await (await slow).text()).toBe('slow');
      expect(stack.app.requests - before).toBe(1);
    } finally {
      await one.close();
    }
  });

  it('accepts a Request object as input', async () => {
    const res = await client.fetch(new Request('https://ignored.example/echo?x=1', { method: 'POST', body: 'from a Request', headers: { 'content-type': 'text/x-req' } }));
    expect(res.headers.get('content-type')).toBe('text/x-req');
    expect(await res.text()).toBe('from a Request');
  });
});

describe('WebSocket through upgrade()', () => {
  it('echoes WebSocket messages through an upgraded stream', async () => {
    const up = await client.upgrade('/ws', {
      headers: { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version': '13' },
    });
    expect(up.status).toBe(101);
    expect(up.headers.get('sec-websocket-accept')).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo='); // RFC 6455 §1.3 example
    const writer = up.writable.getWriter();
    const reader = up.readable.getReader();
    const frames = new WsFrameReader(reader);
    for (const text of ['hello', 'x'.repeat(70_000)]) {
      await writer.write(maskedTextFrame(text));
      expect(await frames.nextText()).toBe(text);
    }
    up.close();
  });
});

/** A client→server WebSocket text frame (masked, RFC 6455 §5.2). */
function maskedTextFrame(text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const mask = Uint8Array.of(1, 2, 3, 4);
  const len = payload.length;
  const header = len < 126 ? [0x81, 0x80 | len] : len < 65536 ? [0x81, 0x80 | 126, len >> 8, len & 0xff] : [0x81, 0x80 | 127, 0, 0, 0, 0, (len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff];
  const out = new Uint8Array(header.length + 4 + len);
  out.set(header, 0);
  out.set(mask, header.length);
  for (let i = 0; i < len; i++) out[header.length + 4 + i] = payload[i]! ^ mask[i % 4]!;
  return out;
}

/** Reads unmasked server frames (text only, unfragmented) from a byte reader. */
class WsFrameReader {
  #buf = new Uint8Array(0);
  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  async #need(n: number): Promise<void> {
    while (this.#buf.length < n) {
      const { done, value } = await this.reader.read();
      if (done) throw new Error('stream ended inside a WebSocket frame');
      const next = new Uint8Array(this.#buf.length + value.length);
      next.set(this.#buf);
      next.set(value, this.#buf.length);
      this.#buf = next;
    }
  }

  async nextText(): Promise<string> {
    await this.#need(2);
    let len = this.#buf[1]! & 0x7f;
    let off = 2;
    if (len === 126) {
      await this.#need(4);
      len = (this.#buf[2]! << 8) | this.#buf[3]!;
      off = 4;
    } else if (len === 127) {
      await this.#need(10);
      len = Number(new DataView(this.#buf.buffer, this.#buf.byteOffset + 2, 8).getBigUint64(0));
      off = 10;
    }
    await this.#need(off + len);
    expect(this.#buf[0]).toBe(0x81);
    const text = new TextDecoder().decode(this.#buf.subarray(off, off + len));
    this.#buf = this.#buf.slice(off + len);
    return text;
  }
}
