// connect() verifies before it sends anything: a wrong pin or an untrusted root rejects with the attestation
// error, and the agent saw exactly one frame (RequestAttestation) from that session — no request reached the app.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket as UndiciWebSocket } from 'undici';
import { connect as connectPortable, type WebSocketConstructor } from '../../src/client/index.ts';
import { ClientError, connect } from '../../src/client/node.ts';
import { startStack, type Stack } from './stack.ts';

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.close();
});

async function sessionSummaries(n: number): Promise<Stack['sessions']> {
  for (let i = 0; i < 100 && stack.sessions.length < n; i++) await new Promise((r) => setTimeout(r, 20));
  return stack.sessions;
}

describe('verification before any request', () => {
  it('rejects a wrong PCR with the PCR error, and no request reaches the app', async () => {
    const before = stack.sessions.length;
    const wrong = { ...stack.pins, PCR2: 'ab'.repeat(48) };
    const err = await connect(stack.url, { pcrs: wrong, roots: [stack.sim.rootPem] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_ATTESTATION_FAILED');
    expect((err as ClientError).attestationCode).toBe('ATTESTATION_PCR_MISMATCH');
    expect(((err as ClientError).cause as { code?: string }).code).toBe('ATTESTATION_PCR_MISMATCH');
    expect((err as ClientError).message).toContain('PCR2 expected abab');
    expect(stack.app.requests).toBe(0);
    const [summary] = (await sessionSummaries(before + 1)).slice(before);
    expect(summary?.stats).toMatchObject({ framesIn: 1, attestations: 1, data: 0, streams: 0 });
  });

  it('compares a pinned PCR3 (beyond PCR0/1/2/8): a wrong one rejects, the right one connects', async () => {
    const hex = (i: number): string => Buffer.from(stack.sim.pcrs[i]!).toString('hex');
    const wrong = { ...stack.pins, PCR3: 'ab'.repeat(48) };
    const err = await connect(stack.url, { pcrs: wrong, roots: [stack.sim.rootPem] }).catch((e: unknown) => e);
    expect((err as ClientError).attestationCode).toBe('ATTESTATION_PCR_MISMATCH');
    expect((err as ClientError).message).toContain('PCR3 expected abab');
    const client = await connect(stack.url, { pcrs: { ...stack.pins, PCR3: hex(3), PCR4: hex(4) }, roots: [stack.sim.rootPem] });
    await client.close();
    expect(stack.app.requests).toBe(0);
  });

  it('rejects a pin key that names no PCR (a misspelt pcr8) before connecting', async () => {
    const err = await connect(stack.url, { pcrs: { ...stack.pins, pcr8: 'ab'.repeat(48) } as typeof stack.pins, roots: [stack.sim.rootPem] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).attestationCode).toBe('ATTESTATION_BAD_EXPECTATIONS');
    expect((err as ClientError).message).toContain('did you mean PCR8?');
  });

  it.each([['debug', 'false'], ['allowDebugEnclave', 'false'], ['debug', 1]])('refuses %s: %j as CLIENT_BAD_OPTIONS before connecting', async (name, v) => {
    const before = stack.sessions.length;
    const err = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], [name]: v }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_BAD_OPTIONS');
    expect((err as ClientError).message).toBe(`${name}: expected true or false, found ${JSON.stringify(v)}`);
    expect(stack.sessions.length).toBe(before);
  });

  it('rejects the simulator root when only the AWS root is trusted', async () => {
    const err = await connect(stack.url, { pcrs: stack.pins }).catch((e: unknown) => e);
    expect((err as ClientError).code).toBe('CLIENT_ATTESTATION_FAILED');
    expect((err as ClientError).attestationCode).toBe('ATTESTATION_UNTRUSTED_ROOT');
    expect(stack.app.requests).toBe(0);
  });

  it('rejects a document older than maxAgeMs (clock injected)', async () => {
    const err = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], maxAgeMs: 1000, now: () => Date.now() + 60_000 }).catch((e: unknown) => e);
    expect((err as ClientError).attestationCode).toBe('ATTESTATION_TOO_OLD');
  });

  it('rejects a non-debug enclave for a client that pins debug-mode zero PCRs', async () => {
    const zeros = { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) };
    const err = await connect(stack.url, { pcrs: zeros, debug: true }).catch((e: unknown) => e);
    expect((err as ClientError).attestationCode).toBe('ATTESTATION_PCR_MISMATCH');
    expect(stack.app.requests).toBe(0);
  });

  it('fails to connect with CLIENT_CONNECT_FAILED (retryable) when nothing listens', async () => {
    const err = await connect('ws://127.0.0.1:1/', { pcrs: stack.pins, connectTimeoutMs: 5000 }).catch((e: unknown) => e);
    expect((err as ClientError).code).toBe('CLIENT_CONNECT_FAILED');
    expect((err as ClientError).retryable).toBe(true);
  });

  it('refuses bad options before connecting', async () => {
    await expect(connect('http://127.0.0.1/', { pcrs: stack.pins })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
    await expect(connect(stack.url, {} as never)).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
    await expect(connectPortable(stack.url, { pcrs: stack.pins, WebSocket: undefined })).rejects.toMatchObject({ code: 'CLIENT_BAD_OPTIONS' });
  });

  it('verifies and fetches with the portable (noble) Noise suite, as a browser would', async () => {
    const client = await connectPortable(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], WebSocket: UndiciWebSocket as unknown as WebSocketConstructor });
    try {
      expect(await (await client.fetch('/hello')).text()).toBe('hello');
      expect(stack.app.requests).toBe(1);
    } finally {
      await client.close();
    }
  });
});
