// decrypt-proxy: a worker's DecryptScheduler sends whole bodies to the main thread's DecryptPool: same
// results, the same refusals (EvDecryptError with its reason, EvBudgetError, EvPoolError), the budget
// charged once, on the worker's side.
import { MessageChannel } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { DecryptPool } from '../../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler } from '../../../src/crypto/decrypt-scheduler.ts';
import { EcdhBudget } from '../../../src/crypto/ecdh-budget.ts';
import { EV_DECRYPT_MESSAGE, EvBudgetError, EvBusyError, EvDecryptError, EvPoolError } from '../../../src/crypto/errors.ts';
import { encryptValue } from '../../../src/crypto/ev-format.ts';
import { decryptJsonTokens } from '../../../src/crypto/json-decrypt.ts';
import { Keyring } from '../../../src/crypto/keyring.ts';
import { remoteDecryptPool, serveDecryptPool } from '../../../src/runtime/worker-services/decrypt-proxy.ts';
import { rpcEndpoint } from '../../../src/runtime/worker-services/rpc-port.ts';
import { failingValues } from '../../crypto/ev-forge.ts';

const keyring = Keyring.generate();
const pub = keyring.publicKeys();
const pool = new DecryptPool(keyring, { size: 1 });
const closers: (() => void)[] = [];
afterAll(async () => {
  for (const c of closers) c();
  await pool.close();
});

function over(main: Pick<DecryptPool, 'decryptJson' | 'isJsonText'> = pool): ReturnType<typeof remoteDecryptPool> {
  const { port1, port2 } = new MessageChannel();
  const served = serveDecryptPool(port1, main);
  // The worker's own keyring object (its copy of the scalars): the scheduler matches the pool by it.
  const remote = remoteDecryptPool(port2, keyring);
  closers.push(() => remote.close(), () => served.close());
  return remote;
}

describe('remoteDecryptPool / serveDecryptPool', () => {
  it('decrypts an ev: body on the main thread’s pool with the in-thread result', async () => {
    const remote = over();
    const body = JSON.stringify({ card: encryptValue('4242 4242', pub), n: encryptValue(12.5, pub, { curve: 'secp256k1' }), plain: 'x' });
    expect(await remote.decryptJson(body)).toEqual(decryptJsonTokens(body, keyring));
  });

  it('rejects each failing value with EvDecryptError and the same reason', async () => {
    const remote = over();
    for (const [reason, value] of Object.entries(failingValues(keyring))) {
      const err = (await remote.decryptJson(JSON.stringify([value])).catch((e: unknown) => e)) as EvDecryptError;
      expect(err, reason).toBeInstanceOf(EvDecryptError);
      expect({ reason: err.reason, message: err.message, code: err.code }).toEqual({ reason, message: EV_DECRYPT_MESSAGE, code: 'EV_DECRYPT_FAILED' });
    }
  });

  it('passes the request’s ECDH budget and returns EvBudgetError past it', async () => {
    const remote = over();
    const body = JSON.stringify([encryptValue(1, pub), encryptValue(2, pub), encryptValue(3, pub)]);
    const err = (await remote.decryptJson(body, 2).catch((e: unknown) => e)) as EvBudgetError;
    expect(err).toBeInstanceOf(EvBudgetError);
    expect(err.limit).toBe(2);
    expect((await remote.decryptJson(body, 3)).json).toBe('[1,2,3]');
  });

  it('returns the pool’s EvPoolError as EvPoolError', async () => {
    const closedPool = new DecryptPool(keyring, { size: 1 });
    await closedPool.close();
    const err = (await over(closedPool).decryptJson('[]').catch((e: unknown) => e)) as EvPoolError;
    expect(err).toBeInstanceOf(EvPoolError);
    expect(err.code).toBe('EV_POOL_CLOSED');
  });

  it('stands in for the pool of a worker’s DecryptScheduler, whose budget is the only one charged', async () => {
    let mainCalls = 0;
    const counted: Pick<DecryptPool, 'decryptJson' | 'isJsonText'> = { decryptJson: (t, m) => (mainCalls++, pool.decryptJson(t, m)), isJsonText: (b) => pool.isJsonText(b) };
    const scheduler = new DecryptScheduler({ maxConcurrent: 1, pool: over(counted) });
    const body = JSON.stringify([encryptValue('a', pub)]);
    const first = scheduler.decryptJson(body, keyring, new EcdhBudget(4));
    await expect(scheduler.decryptJson(body, keyring)).rejects.toBeInstanceOf(EvBusyError);
    expect((await first).json).toBe('["a"]');
    expect(mainCalls).toBe(1);
    expect(scheduler.active).toBe(0);
    // Another keyring's body does not go to the pool.
    const other = Keyring.generate();
    expect((await scheduler.decryptJson(JSON.stringify([encryptValue(5, other.publicKeys())]), other)).json).toBe('[5]');
    expect(mainCalls).toBe(1);
  });

  it('checks bodies for JSON on the main thread’s pool: the same answers, the bytes handed on (not kept), bad arguments refused', async () => {
    const seen: Uint8Array[] = [];
    const remote = over({ decryptJson: (t, m) => pool.decryptJson(t, m), isJsonText: (b, owned) => (seen.push(b), pool.isJsonText(b, owned)) });
    const token = encryptValue('4242', pub);
    const valid = Buffer.from(`\ufeff{"a":${JSON.stringify(token)}}`);
    const invalid = Buffer.concat([Buffer.from(`{"a":"${token}`), Buffer.from([0xc3]), Buffer.from('"}')]);
    expect([await remote.isJsonText(valid), await remote.isJsonText(invalid), await remote.isJsonText(Buffer.from(`[${token}]`))]).toEqual([true, false, false]);
    // Not shared memory (which lives until the relaying thread collects garbage): each body was transferred on
    // to the pool's thread, so nothing of it stays on the main thread.
    expect(seen.map((b) => b.buffer instanceof SharedArrayBuffer)).toEqual([false, false, false]);
    expect(seen.map((b) => b.byteLength)).toEqual([0, 0, 0]);
    expect(valid.toString('utf8')).toBe(`\ufeff{"a":${JSON.stringify(token)}}`); // the sender's bytes stay its own
    // A caller on the worker side that sends something else is refused, typed.
    const { port1, port2 } = new MessageChannel();
    const served = serveDecryptPool(port1, pool);
    closers.push(() => served.close());
    const raw = rpcEndpoint(port2, { service: 'decrypt' });
    closers.push(() => raw.close());
    await expect(raw.call('isJsonText', ['{"a":1}'])).rejects.toMatchObject({ code: 'WORKER_SERVICE_BAD_MESSAGE' });
  });
});
