// nsm-proxy: a worker's Nsm answered by the main thread's: documents byte-exact and verifiable, request
// bytes copied exactly (not the pool a Buffer views), NSM failures as the same typed errors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestationError, NsmError } from '../../../src/attestation/errors.ts';
import type { AttestationRequest, Nsm } from '../../../src/attestation/nsm.ts';
import { createNsmSimulator, type NsmSimulator } from '../../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../../src/attestation/verify.ts';
import { WorkerServiceError } from '../../../src/runtime/worker-services/errors.ts';
import { remoteNsm, serveNsm } from '../../../src/runtime/worker-services/nsm-proxy.ts';

const stateDir = mkdtempSync(join(tmpdir(), 'nsm-proxy-'));
let sim: NsmSimulator;
const closers: (() => void)[] = [];
beforeAll(async () => {
  sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'nsm-proxy', config: '' } });
});
afterAll(() => {
  for (const c of closers) c();
  rmSync(stateDir, { recursive: true, force: true });
});

function over(nsm: Nsm): Nsm & { close(): void } {
  const { port1, port2 } = new MessageChannel();
  const served = serveNsm(port1, nsm);
  const remote = remoteNsm(port2);
  closers.push(() => remote.close(), () => served.close());
  return remote;
}

describe('remoteNsm / serveNsm', () => {
  it('returns the simulator’s document byte for byte, and it verifies with the nonce and public key bound', async () => {
    const seen: AttestationRequest[] = [];
    const remote = over({ attest: (req) => (seen.push(req), sim.attest(req)), random: (n) => sim.random(n) });
    // Views into a larger buffer: only their own bytes may cross.
    const pool = Buffer.alloc(256, 0xee);
    const nonce = pool.subarray(16, 48).fill(7);
    const publicKey = pool.subarray(64, 129).fill(4);
    const doc = await remote.attest({ nonce, publicKey, userData: null });
    expect(seen[0]!.nonce).toEqual(new Uint8Array(nonce));
    expect(seen[0]!.nonce!.buffer.byteLength).toBe(32);
    expect(seen[0]!.publicKey!.buffer.byteLength).toBe(65);
    expect(seen[0]!.userData).toBeNull();
    const parsed = await verifyAttestation(doc, { roots: [sim.rootPem], nonce: new Uint8Array(nonce) });
    expect(parsed.publicKey).toEqual(new Uint8Array(publicKey));
    expect(doc.buffer.byteLength).toBe(doc.length);
    // Byte-exact: what the main thread's Nsm returned is what arrives.
    let direct: Uint8Array | undefined;
    const same = over({ attest: async (req) => (direct = await sim.attest(req)), random: (n) => sim.random(n) });
    expect(Buffer.from(await same.attest({ nonce }))).toEqual(Buffer.from(direct!));
  });

  it('returns random bytes of the length asked', async () => {
    const remote = over(sim);
    const r = await remote.random(48);
    expect(r).toBeInstanceOf(Uint8Array);
    expect(r.length).toBe(48);
  });

  it('rejects with the NSM’s own typed errors', async () => {
    const remote = over({
      attest: () => Promise.reject(new NsmError('InputTooLarge', 'NSM replied Error "InputTooLarge" to Attestation request')),
      random: () => Promise.reject(new AttestationError('NSM_ERROR', 'NSM GetRandom returned no bytes')),
    });
    const a = (await remote.attest({ nonce: new Uint8Array(4096) }).catch((e: unknown) => e)) as NsmError;
    expect(a).toBeInstanceOf(NsmError);
    expect({ code: a.code, nsmCode: a.nsmCode }).toEqual({ code: 'NSM_ERROR', nsmCode: 'InputTooLarge' });
    const r = (await remote.random(8).catch((e: unknown) => e)) as AttestationError;
    expect(r).toBeInstanceOf(AttestationError);
    expect(r.code).toBe('NSM_ERROR');
    // The simulator's own refusal (a nonce over its limit) arrives as what the simulator throws.
    const direct = await sim.attest({ nonce: new Uint8Array(4096) }).catch((e: unknown) => e);
    const viaPort = await over(sim)
      .attest({ nonce: new Uint8Array(4096) })
      .catch((e: unknown) => e);
    expect(viaPort).toBeInstanceOf((direct as Error).constructor);
    expect({ code: (viaPort as NsmError).code, nsmCode: (viaPort as NsmError).nsmCode }).toEqual({ code: (direct as NsmError).code, nsmCode: (direct as NsmError).nsmCode });
  });

  it('refuses a request whose fields are not bytes before it reaches the NSM', async () => {
    let calls = 0;
    const { port1, port2 } = new MessageChannel();
    const served = serveNsm(port1, { attest: () => (calls++, sim.attest({})), random: () => sim.random(1) });
    closers.push(() => served.close());
    const raw = await import('../../../src/runtime/worker-services/rpc-port.ts');
    const client = raw.rpcEndpoint(port2, { service: 'nsm' });
    closers.push(() => client.close());
    await expect(client.call('attest', [{ nonce: 'abc' }])).rejects.toBeInstanceOf(WorkerServiceError);
    await expect(client.call('attest', [null])).rejects.toMatchObject({ code: 'WORKER_SERVICE_BAD_MESSAGE' });
    await expect(client.call('random', ['8'])).rejects.toMatchObject({ code: 'WORKER_SERVICE_BAD_MESSAGE' });
    expect(calls).toBe(0);
  });
});
