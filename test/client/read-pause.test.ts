// onBufferFull 'pause' (what `enclave-agent fetch` uses): a response body read more slowly than the enclave sends
// it stops the connection being read at half of maxBufferedBytes unread, instead of failing CLIENT_BUFFER_FULL
// past it; TCP holds the bridge back, the bridge the agent, the agent the app. The reader here reads nothing
// until the app has written the whole body or a bound of a few seconds passed — then reads it all: the body
// arrives whole.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/node.ts';
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
