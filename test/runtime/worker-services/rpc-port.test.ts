// rpc-port: calls and notes over one MessagePort, errors rebuilt as the classes callers check, a closed
// port rejecting what is pending, and garbage ignored on both sides.
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { AttestationError, NsmError } from '../../../src/attestation/errors.ts';
import { EvBudgetError, EvDecryptError, EvPoolError } from '../../../src/crypto/errors.ts';
import { RuntimeError } from '../../../src/runtime/errors.ts';
import { WorkerServiceError } from '../../../src/runtime/worker-services/errors.ts';
import { rpcEndpoint, type RpcEndpoint } from '../../../src/runtime/worker-services/rpc-port.ts';
import { until } from './helpers.ts';

const open: RpcEndpoint[] = [];
afterEach(() => {
  for (const e of open.splice(0)) e.close();
});

function pair(methods: Record<string, (...a: unknown[]) => unknown>, notes: Record<string, (v: unknown) => void> = {}): { client: RpcEndpoint; server: RpcEndpoint; channel: MessageChannel } {
  const channel = new MessageChannel();
  const server = rpcEndpoint(channel.port1, { service: 'svc', methods, notes });
  const client = rpcEndpoint(channel.port2, { service: 'svc' });
  open.push(client, server);
  return { client, server, channel };
}

describe('rpcEndpoint', () => {
  it('answers calls by id, in any order, with the values the methods return', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { client } = pair({ slow: async (x) => (await gate, `slow ${String(x)}`), fast: (x) => ({ echo: x, bytes: Uint8Array.of(1, 2, 3) }) });
    const slow = client.call('slow', [1]);
    const fast = await client.call('fast', [2]);
    expect(fast).toEqual({ echo: 2, bytes: Uint8Array.of(1, 2, 3) });
    expect(client.pending).toBe(1);
    release();
    expect(await slow).toBe('slow 1');
    expect(client.pending).toBe(0);
  });

  it('rebuilds the errors callers test with instanceof, with their typed fields', async () => {
    const errors: Record<string, Error> = {
      nsm: new NsmError('InputTooLarge', 'NSM replied Error "InputTooLarge" to Attestation request'),
      attestation: new AttestationError('NSM_ERROR', 'NSM ioctl failed: EIO'),
      decrypt: new EvDecryptError('AUTHENTICATION_FAILED', 'Tk9D p256 key 1'),
      budget: new EvBudgetError(7),
      pool: new EvPoolError('EV_POOL_WORKER_FAILED', 'a decrypt worker stopped (exit 1)'),
      range: new RangeError('random(n): n must be an integer in [0, 256]; found 999'),
    };
    const { client } = pair(Object.fromEntries(Object.entries(errors).map(([k, e]) => [k, () => Promise.reject(e)])));
    const got = async (m: string): Promise<Error> => (await client.call(m).catch((e: unknown) => e)) as Error;

    const nsm = await got('nsm');
    expect(nsm).toBeInstanceOf(NsmError);
    expect(nsm).toBeInstanceOf(AttestationError);
    expect({ code: (nsm as NsmError).code, nsmCode: (nsm as NsmError).nsmCode, message: nsm.message }).toEqual({ code: 'NSM_ERROR', nsmCode: 'InputTooLarge', message: errors.nsm!.message });
    const att = await got('attestation');
    expect(att).toBeInstanceOf(AttestationError);
    expect(att).not.toBeInstanceOf(NsmError);
    expect((att as AttestationError).code).toBe('NSM_ERROR');
    const dec = (await got('decrypt')) as EvDecryptError;
    expect(dec).toBeInstanceOf(EvDecryptError);
    expect(dec.toLog()).toEqual({ code: 'EV_DECRYPT_FAILED', reason: 'AUTHENTICATION_FAILED', detail: 'Tk9D p256 key 1' });
    expect(dec.status).toBe(422);
    const budget = (await got('budget')) as EvBudgetError;
    expect(budget).toBeInstanceOf(EvBudgetError);
    expect({ code: budget.code, limit: budget.limit, message: budget.message }).toEqual({ code: 'EV_DECRYPT_BUDGET', limit: 7, message: errors.budget!.message });
    const pool = (await got('pool')) as EvPoolError;
    expect(pool).toBeInstanceOf(EvPoolError);
    expect({ code: pool.code, message: pool.message }).toEqual({ code: 'EV_POOL_WORKER_FAILED', message: errors.pool!.message });
    const range = await got('range');
    expect(range).toBeInstanceOf(RangeError);
    expect(range.message).toBe(errors.range!.message);
  });

  it('turns any other error into WORKER_SERVICE_FAILED naming its class and code, and a sync throw into an answer', async () => {
    const { client } = pair({
      runtime: () => {
        throw new RuntimeError('RUNTIME_NSM_UNAVAILABLE', '/dev/nsm not found');
      },
      plain: () => {
        throw 'a string';
      },
    });
    const err = (await client.call('runtime').catch((e: unknown) => e)) as WorkerServiceError;
    expect(err).toBeInstanceOf(WorkerServiceError);
    expect({ code: err.code, remoteName: err.remoteName, remoteCode: err.remoteCode }).toEqual({ code: 'WORKER_SERVICE_FAILED', remoteName: 'RuntimeError', remoteCode: 'RUNTIME_NSM_UNAVAILABLE' });
    expect(err.message).toContain('/dev/nsm not found');
    await expect(client.call('plain')).rejects.toMatchObject({ code: 'WORKER_SERVICE_FAILED', remoteName: 'Error' });
  });

  it('answers a call to a method it does not serve (even one on Object.prototype) with WORKER_SERVICE_BAD_MESSAGE', async () => {
    const { client, server } = pair({ ok: () => 1 });
    for (const m of ['nope', 'toString', '__proto__', 'constructor']) {
      await expect(client.call(m)).rejects.toMatchObject({ name: 'WorkerServiceError', code: 'WORKER_SERVICE_BAD_MESSAGE' });
    }
    expect(server.ignored).toBe(4);
    expect(await client.call('ok')).toBe(1);
  });

  it('rejects pending calls with WORKER_SERVICE_CLOSED when the other side closes the port, and later calls at once', async () => {
    const { client, server } = pair({ never: () => new Promise(() => {}) });
    const a = client.call('never');
    const b = client.call('never');
    await until(() => client.pending === 2);
    server.close();
    for (const p of [a, b]) {
      const err = (await p.catch((e: unknown) => e)) as WorkerServiceError;
      expect(err).toBeInstanceOf(WorkerServiceError);
      expect(err.code).toBe('WORKER_SERVICE_CLOSED');
    }
    expect(client.closed).toBe(true);
    await expect(client.call('never')).rejects.toMatchObject({ code: 'WORKER_SERVICE_CLOSED' });
    expect(client.notify('x', 1)).toBe(false);
  });

  it('rejects its own pending calls when closed here', async () => {
    const { client } = pair({ never: () => new Promise(() => {}) });
    const p = client.call('never');
    client.close();
    await expect(p).rejects.toMatchObject({ code: 'WORKER_SERVICE_CLOSED' });
  });

  it('ignores and counts garbage on both sides, and keeps answering', async () => {
    const seen: unknown[] = [];
    const { client, server, channel } = pair({ add: (a, b) => (a as number) + (b as number) }, { note: (v) => seen.push(v) });
    const garbage = [42, null, 'call', [], { k: 'call' }, { k: 'call', id: -1, m: 'add', a: [] }, { k: 'call', id: 1.5, m: 'add', a: [] }, { k: 'ok', id: 9999, v: 1 }, { k: 'err', id: 'x' }, { k: 'note', m: 'missing', v: 1 }, { k: 'what' }];
    for (const g of garbage) {
      channel.port2.postMessage(g); // to the server
      channel.port1.postMessage(g); // to the client
    }
    // A call whose method exists but whose arguments are not an array: refused with an answer.
    channel.port2.postMessage({ k: 'call', id: 5000, m: 'add', a: 'nope' });
    // An answer with an unreadable error settles the call it names as BAD_MESSAGE.
    const pending = client.call('add', [1, 2]);
    expect(await pending).toBe(3);
    client.notify('note', { x: 1 });
    await until(() => seen.length === 1 && server.ignored >= garbage.length + 1 && client.ignored >= garbage.length + 1);
    expect(seen).toEqual([{ x: 1 }]);
    expect(server.ignored).toBe(garbage.length + 1);
    expect(client.ignored).toBe(garbage.length + 1); // the server's answer to id 5000 is for no call of the client's
    expect(await client.call('add', [2, 3])).toBe(5);
  });

  it('settles a call answered with an unreadable error as WORKER_SERVICE_BAD_MESSAGE', async () => {
    const channel = new MessageChannel();
    const client = rpcEndpoint(channel.port2, { service: 'svc' });
    open.push(client);
    channel.port1.on('message', (m: { id: number }) => channel.port1.postMessage({ k: 'err', id: m.id, e: { name: 7 } }));
    await expect(client.call('x')).rejects.toMatchObject({ code: 'WORKER_SERVICE_BAD_MESSAGE' });
    channel.port1.close();
  });

  it('refuses arguments that cannot cross (a function) without sending anything', async () => {
    const { client, server } = pair({ f: () => 1 });
    await expect(client.call('f', [() => 1])).rejects.toMatchObject({ code: 'WORKER_SERVICE_BAD_MESSAGE' });
    expect(client.pending).toBe(0);
    expect(server.ignored).toBe(0);
  });
});
