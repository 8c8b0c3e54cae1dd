// A DecryptPool worker thread: opens the ev: values of whole JSON texts with its own Keyring, built from the
// scalars it was started with (the pool's workerData, with the [secrets] ciphertexts to refuse), and checks bodies for JSON: {id, bytes} is answered
// {id, valid} (jsonText, json-text.ts). It answers each {id, text} with {id, json, count}, or
// {id, reason, detail} for a value that does not decrypt (the EvDecryptError fields; the main thread rebuilds
// the error), {id, budget} when the request's ECDH budget ran out, or {id, failed} for anything else. Nothing here logs.
import { parentPort, workerData } from 'node:worker_threads';
import { EcdhBudget } from './ecdh-budget.ts';
import { ECDH_CACHE_MAX, EcdhCache, setEcdhCache } from './ecdh-cache.ts';
import { EvBudgetError, EvDecryptError } from './errors.ts';
import { decryptJsonTokens } from './json-decrypt.ts';
import { jsonText } from './json-text.ts';
import type { DecryptWorkerData } from './decrypt-pool.ts';
import { KeyMaterial, Keyring, wipeScalars } from './keyring.ts';
import { withholdCiphertextIds } from './secret-ciphertexts.ts';

// Every key generation, newest first (keys rotate): the worker opens values under retired keys too.
const data = workerData as DecryptWorkerData;
const keyring = Keyring.fromMaterial(KeyMaterial.fromGenerations(data.scalars));
wipeScalars(data.scalars);
// Z and the KDF keys in the arena the pool zeroes once this thread has ended, however it ends.
setEcdhCache(keyring, new EcdhCache(ECDH_CACHE_MAX, data.ecdhArena));
// [secrets] ciphertexts refused like on the main thread; {withhold} messages bring those registered later.
withholdCiphertextIds(keyring, data.withheld);

parentPort!.on('message', ({ id, text, maxEcdh, bytes, withhold }: { id: number; text?: string; maxEcdh?: number; bytes?: Uint8Array; withhold?: string[] }) => {
  if (withhold !== undefined) return void withholdCiphertextIds(keyring, withhold);
  try {
    if (bytes !== undefined) return void parentPort!.postMessage({ id, valid: jsonText(bytes) !== null });
    if (text === undefined) throw new TypeError('a message with neither text nor bytes');
    const out = decryptJsonTokens(text, keyring, maxEcdh === undefined ? undefined : new EcdhBudget(maxEcdh));
    parentPort!.postMessage({ id, json: out.json, count: out.count });
  } catch (err) {
    if (err instanceof EvDecryptError) parentPort!.postMessage({ id, reason: err.reason, detail: err.detail });
    else if (err instanceof EvBudgetError) parentPort!.postMessage({ id, budget: err.limit });
    else parentPort!.postMessage({ id, failed: err instanceof Error ? err.name : 'unknown' });
  }
});
parentPort!.postMessage({ ready: true });
