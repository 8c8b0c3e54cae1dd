// A DecryptPool worker thread: opens the ev: values of whole JSON texts with its own Keyring, built from the
// scalars it was started with (the pool's workerData). It answers each {id, text} with {id, json, count}, or
// {id, reason, detail} for a value that does not decrypt (the EvDecryptError fields; the main thread rebuilds
// the error), or {id, failed} for anything else. Nothing here logs.
import { parentPort, workerData } from 'node:worker_threads';
import { EvDecryptError } from './errors.ts';
import { decryptJsonTokens } from './json-decrypt.ts';
import { KeyMaterial, Keyring } from './keyring.ts';

const scalars = workerData as { p256: Uint8Array; secp256k1: Uint8Array };
const keyring = Keyring.fromMaterial(new KeyMaterial(scalars));
scalars.p256.fill(0);
scalars.secp256k1.fill(0);

parentPort!.on('message', ({ id, text }: { id: number; text: string }) => {
  try {
    const out = decryptJsonTokens(text, keyring);
    parentPort!.postMessage({ id, json: out.json, count: out.count });
  } catch (err) {
    if (err instanceof EvDecryptError) parentPort!.postMessage({ id, reason: err.reason, detail: err.detail });
    else parentPort!.postMessage({ id, failed: err instanceof Error ? err.name : 'unknown' });
  }
});
parentPort!.postMessage({ ready: true });
