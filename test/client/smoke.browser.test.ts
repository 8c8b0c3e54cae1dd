// @vitest-environment happy-dom
// The SDK entry loads in a browser-like environment and fails cleanly where a browser would.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { WebSocket as UndiciWebSocket } from 'undici';
import { spawn, type ChildProcess } from 'node:child_process';
import type { PcrPins } from '../../src/attestation/verify.ts';
import { ClientError, connect, type WebSocketConstructor } from '../../src/client/index.ts';

// The agent and the bridge run in a child process: they are Node servers, not part of the browser under test.
let child: ChildProcess;
let stack: { url: string; pins: PcrPins; rootPem: string };
beforeAll(async () => {
  child = spawn(process.execPath, ['--import', 'tsx', 'test/client/stack-child.ts'], { stdio: ['pipe', 'pipe', 'inherit'] });
  stack = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Uint8Array) => {
      out += new TextDecoder().decode(c);
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as typeof stack);
    });
    child.once('exit', (code) => reject(new Error(`stack child exited with ${code}`)));
  });
}, 60_000);
afterAll(async () => {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.stdin!.end();
  await exited;
});

it('imports in a browser-like environment and exposes connect and ClientError', () => {
  expect(typeof window).toBe('object');
  expect(typeof connect).toBe('function');
  expect(new ClientError('CLIENT_CLOSED', 'x')).toBeInstanceOf(Error);
});

it('reports a missing WebSocket implementation and a bad URL as CLIENT_BAD_OPTIONS', async () => {
  const pcrs = { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) };
  await expect(connect('https://x.example/', { pcrs })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
});

it('fails to connect with a typed, retryable error when the WebSocket cannot open', async () => {
  const pcrs = { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) };
  class FailingWebSocket extends EventTarget {
    binaryType = 'blob';
    readyState = 0;
    bufferedAmount = 0;
    constructor(_url: string) {
      super();
      setTimeout(() => {
        this.dispatchEvent(new Event('error'));
        this.dispatchEvent(new Event('close'));
      }, 0);
    }
    send(): void {}
    close(): void {}
  }
  const err = (await connect('wss://x.example/', { pcrs, WebSocket: FailingWebSocket as never }).catch((e: unknown) => e)) as ClientError;
  expect(err).toBeInstanceOf(ClientError);
  expect(err.code).toBe('CLIENT_CONNECT_FAILED');
  expect(err.retryable).toBe(true);
});

it('connects, verifies and fetches with the portable suite under happy-dom', async () => {
  const WS = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? (UndiciWebSocket as unknown as WebSocketConstructor);
  const client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.rootPem], WebSocket: WS });
  try {
    const res = await client.fetch('/json', { method: 'POST', json: { browser: true } });
    expect(await res.json()).toEqual({ got: { browser: true }, contentType: 'application/json' });
    const big = await client.fetch('/big?n=300000');
    expect((await big.arrayBuffer()).byteLength).toBe(300_000);
  } finally {
    await client.close();
  }
});
