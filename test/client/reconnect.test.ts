// Sessions die (agent restart, redeploy, close): in-flight requests fail retryable and are not re-sent, the next
// request re-establishes a verified session with the same pins, and a changed measurement fails closed.
import { afterEach, describe, expect, it } from 'vitest';
import { ClientError, connect, type Client } from '../../src/client/node.ts';
import { SessionManager } from '../../src/client/reconnect.ts';
import type { Session } from '../../src/client/session.ts';
import { IDENTITY, startStack, type Stack } from './stack.ts';

let stack: Stack | undefined;
let client: Client | undefined;

afterEach(async () => {
  await client?.close();
  await stack?.close();
  client = stack = undefined;
});

async function until(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('reconnect', () => {
  it('reconnects on the next fetch after an agent restart, with a fresh verified session', async () => {
    stack = await startStack();
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    expect(await (await client.fetch('/hello')).text()).toBe('hello');
    const firstNonce = client.attestation.nonce;
    await stack.restartAgent();
    await until(() => !client!.connected, 'the client to notice the dead session');
    expect(await (await client.fetch('/hello')).text()).toBe('hello');
    expect(client.connected).toBe(true);
    expect(Buffer.from(client.attestation.nonce!).equals(Buffer.from(firstNonce!))).toBe(false);
    expect(stack.app.requests).toBe(2);
  });

  it('fails an in-flight request as retryable, does not re-send it, and serves the retry', async () => {
    stack = await startStack();
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    const slow = client.fetch('/slow?ms=3000').catch((e: unknown) => e);
    await until(() => stack!.app.requests === 1, 'the slow request to reach the app');
    await stack.restartAgent();
    const err = (await slow) as ClientError;
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe('CLIENT_RETRYABLE');
    expect(err.retryable).toBe(true);
    const retry = await client.fetch('/slow?ms=10');
    expect(await retry.text()).toBe('slow');
    expect(stack.app.requests).toBe(2); // the lost one once, the retry once: nothing re-sent behind our back
  });

  it('fails closed with the PCR error when the enclave was redeployed with other code', async () => {
    stack = await startStack();
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    await stack.restartAgent({ identity: { ...IDENTITY, app: 'node other-app.js' } });
    await until(() => !client!.connected, 'the client to notice the dead session');
    const err = (await client.fetch('/hello').catch((e: unknown) => e)) as ClientError;
    expect(err.code).toBe('CLIENT_ATTESTATION_FAILED');
    expect(err.attestationCode).toBe('ATTESTATION_PCR_MISMATCH');
    expect(stack.app.requests).toBe(0);
  });

  it('backs off between failed attempts and recovers once the agent is back', async () => {
    stack = await startStack();
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    await stack.stopAgent();
    await until(() => !client!.connected, 'the client to notice the dead session');
    const first = (await client.fetch('/hello').catch((e: unknown) => e)) as ClientError;
    expect(first.code).toBe('CLIENT_CONNECT_FAILED');
    expect(first.retryable).toBe(true);
    await stack.restartAgent();
    let res: Response | undefined;
    for (let i = 0; i < 50 && res === undefined; i++) {
      res = await client.fetch('/hello').catch(async () => {
        await new Promise((r) => setTimeout(r, 100));
        return undefined;
      });
    }
    expect(await res?.text()).toBe('hello');
  });

  it('reconnects transparently after the agent closed an idle session', async () => {
    stack = await startStack({ limits: { idleTimeoutMs: 200 } });
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    await until(() => !client!.connected, 'the idle session to be closed by the agent');
    expect(await (await client.fetch('/hello')).text()).toBe('hello');
    expect(stack.sessions.some((s) => s.reason === 'idle')).toBe(true);
  });

  it('with reconnect off, a dead session makes later requests fail CLIENT_CLOSED', async () => {
    stack = await startStack();
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem], reconnect: false });
    await stack.restartAgent();
    await until(() => !client!.connected, 'the client to notice the dead session');
    await expect(client.fetch('/hello')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
  });

  it('close() fails pending and later requests with CLIENT_CLOSED', async () => {
    stack = await startStack();
    client = await connect(stack.url, { pcrs: stack.pins, roots: [stack.sim.rootPem] });
    const pending = client.fetch('/slow?ms=2000').catch((e: unknown) => e);
    await until(() => stack!.app.requests === 1, 'the slow request to reach the app');
    await client.close();
    expect(((await pending) as ClientError).code).toBe('CLIENT_CLOSED');
    await expect(client.fetch('/hello')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(client.connected).toBe(false);
  });
});

describe('SessionManager.close()', () => {
  it('aborts a reconnect in flight and fails its waiters CLIENT_CLOSED (nothing keeps connecting after close)', async () => {
    const signals: (AbortSignal | undefined)[] = [];
    const manager = new SessionManager(
      (signal) => {
        signals.push(signal);
        return new Promise<Session>((_resolve, reject) => signal?.addEventListener('abort', () => reject(new ClientError('CLIENT_ABORTED', 'connecting was aborted'))));
      },
      { enabled: true, backoffBaseMs: 100, backoffMaxMs: 5_000, now: Date.now },
    );
    manager.adopt({ alive: false, close: () => {} } as unknown as Session); // the first session died
    const waiting = manager.get();
    await until(() => signals.length === 1, 'the reconnect to start');
    manager.close();
    expect(signals[0]?.aborted).toBe(true);
    await expect(waiting).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
  });
});
