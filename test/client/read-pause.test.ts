// onBufferFull 'pause' (what `enclave-agent fetch` uses): a response body read more slowly than the enclave sends
// it stops the connection being read at half of maxBufferedBytes unread, instead of failing CLIENT_BUFFER_FULL
// past it; TCP holds the bridge back, the bridge the agent, the agent the app. The reader here reads nothing
// until the app has written the whole body or a bound of a few seconds passed — then reads it all: the body
// arrives whole. The same for the readable of openStream and upgrade (the client's onBufferFull, or the stream's).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Client } from '../../src/client/node.ts';
import { patternBytes, sha256Hex, startStack, untilOr, type Stack } from './stack.ts';

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
});

describe("client onBufferFull 'pause'", () => {
  it('a body not read while it arrives holds the enclave back and arrives whole, 8x the cap', async () => {
    const max = 4 * 1024 * 1024;
    const n = 8 * max;
    const client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxBufferedBytes: max, onBufferFull: 'pause' });
    try {
      const before = stack.app.bigEnded;
      const res = await client.fetch(`/big?n=${n}`);
      // Nothing read until the app wrote it all, or the bound: unread, the body would pass the cap either way
      // without the pause (failed before the fix: CLIENT_BUFFER_FULL). How much the kernel's socket buffers on
      // the way absorb varies, so whether the app got to its end is not checked.
      await untilOr(() => stack.app.bigEnded > before, 3_000);
      expect(sha256Hex(new Uint8Array(await res.arrayBuffer()))).toBe(sha256Hex(patternBytes(n)));
      // The connection reads on: the session serves the next request.
      expect(await (await client.fetch('/hello', { timeoutMs: 5_000 })).text()).toBe('hello');
    } finally {
      await client.close();
    }
  });

  it('refuses an unknown value', async () => {
    await expect(connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], onBufferFull: 'drop' as 'pause' })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
  });
});

/** All of `readable`, read only once the app wrote its last byte (or the bound passed). */
async function readAfterTheApp(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const before = stack.app.bigEnded;
  await untilOr(() => stack.app.bigEnded > before, 3_000);
  return new Uint8Array(await new Response(readable).arrayBuffer());
}

/** The bytes after an HTTP head. */
function afterHead(raw: Uint8Array): Uint8Array {
  const end = Buffer.from(raw).indexOf('\r\n\r\n');
  expect(end).toBeGreaterThan(0);
  return raw.subarray(end + 4);
}

describe("streams with onBufferFull 'pause' (failed before: streams kept 'error', CLIENT_BUFFER_FULL)", () => {
  const max = 4 * 1024 * 1024;
  const n = 8 * max;
  const withClient = async (opts: { onBufferFull?: 'pause' }, use: (client: Client) => Promise<void>): Promise<void> => {
    const client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxBufferedBytes: max, ...opts });
    try {
      await use(client);
      // The connection reads on: the session serves the next request.
      expect(await (await client.fetch('/hello', { timeoutMs: 5_000 })).text()).toBe('hello');
    } finally {
      await client.close();
    }
  };

  it("openStream: the client's 'pause' holds the enclave back, 8x the cap arrives whole", async () => {
    await withClient({ onBufferFull: 'pause' }, async (client) => {
      const s = await client.openStream(`GET /big?n=${n} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n`);
      expect(sha256Hex(afterHead(await readAfterTheApp(s.readable)))).toBe(sha256Hex(patternBytes(n)));
    });
  });

  it("upgrade: the stream's own 'pause' (the client's is 'error') holds the enclave back, 8x the cap arrives whole", async () => {
    await withClient({}, async (client) => {
      const up = await client.upgrade(`/upgrade-big?n=${n}`, { headers: { Upgrade: 'x-bytes', Connection: 'Upgrade' }, onBufferFull: 'pause' });
      expect(up.status).toBe(101);
      expect(sha256Hex(await readAfterTheApp(up.readable))).toBe(sha256Hex(patternBytes(n)));
      up.close();
    });
  });

  it("a stream's 'error' under a client's 'pause' still gives up past the cap; an unknown value is refused", async () => {
    await withClient({ onBufferFull: 'pause' }, async (client) => {
      const s = await client.openStream(`GET /big?n=${n} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n`, { onBufferFull: 'error' });
      await expect(readAfterTheApp(s.readable)).rejects.toMatchObject({ code: 'CLIENT_BUFFER_FULL' });
      await expect(client.openStream('', { onBufferFull: 'drop' as 'pause' })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
    });
  });
});
