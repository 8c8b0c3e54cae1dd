import { X509Certificate, createPublicKey, verify as nodeVerify } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeStrict } from '../../src/attestation/cbor.ts';
import { coseSign1SigStructure, parseAttestationDocument, PAYLOAD_KEYS } from '../../src/attestation/document.ts';
import { NsmError, type AttestationError } from '../../src/attestation/errors.ts';
import { createNsmSimulator, simulatorPcrs, type SimulatorIdentity } from '../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { fromHex, toHex } from '../../src/util/bytes.ts';
import { fixtureBytes, nitroIndex } from './fixtures.ts';

const identity: SimulatorIdentity = { agentVersion: '0.1.0', app: 'node server.js', config: '[app]\nport = 8008\n' };
const T0 = Date.UTC(2025, 0, 15, 9, 0, 0);
const MIN = 60_000;
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'nsm-sim-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const pinsOf = (p: Record<number, Uint8Array>) => ({ PCR0: p[0]!, PCR1: p[1]!, PCR2: p[2]!, PCR8: p[8]! });

describe('NSM simulator', () => {
  it('produces documents in the real format: untagged COSE_Sign1, nine keys in the real order, 16 PCRs of 48 bytes, [root, intermediate], ES384', async () => {
    const sim = await createNsmSimulator({ stateDir: tmp(), identity, now: () => T0 });
    const nonce = new Uint8Array(32).fill(0xab);
    const doc = await sim.attest({ nonce, userData: Uint8Array.of(1), publicKey: Uint8Array.of(2, 3) });
    const real = fixtureBytes(nitroIndex.documents[1]!);
    // Same envelope prefix as a real document: array(4), bstr(4) {1: -35}, {}, bstr with 2-byte length, map(9) "module_id".
    expect(toHex(doc.subarray(0, 8))).toBe(toHex(real.subarray(0, 8)));
    expect(toHex(doc.subarray(10, 13))).toBe(toHex(real.subarray(10, 13)));
    const { cose, document } = parseAttestationDocument(doc);
    expect([...(decodeStrict(cose.payload) as Map<string, unknown>).keys()]).toEqual([...PAYLOAD_KEYS]);
    expect([...document.pcrs.keys()]).toEqual([...Array(16).keys()]);
    expect([...document.pcrs.values()].every((v) => v.length === 48)).toBe(true);
    expect(document.timestamp).toBe(T0);
    expect(toHex(cose.payload)).toContain('74696d657374616d701b'); // timestamp as uint64, like the NSM
    expect(document.cabundle.length).toBe(2);
    expect(toHex(document.cabundle[0]!)).toBe(toHex(sim.rootDer));
    expect(toHex(document.nonce!)).toBe(toHex(nonce));
    expect(toHex(document.userData!)).toBe('01');
    expect(toHex(document.publicKey!)).toBe('0203');
    expect(document.moduleId).toBe(sim.moduleId);
    expect(sim.moduleId).toMatch(/^i-[0-9a-f]{17}-enc[0-9a-f]{16}$/);

    // Independent check with node:crypto (OpenSSL): the chain and the COSE signature.
    const root = new X509Certificate(document.cabundle[0]!);
    const inter = new X509Certificate(document.cabundle[1]!);
    const leaf = new X509Certificate(document.certificate);
    expect(root.verify(root.publicKey) && inter.verify(root.publicKey) && leaf.verify(inter.publicKey)).toBe(true);
    expect(root.ca && inter.ca && !leaf.ca).toBe(true);
    expect(new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime()).toBe(3 * 60 * MIN);
    const ok = nodeVerify('sha384', coseSign1SigStructure(cose.protectedBytes, cose.payload), { key: createPublicKey(leaf.publicKey.export({ format: 'pem', type: 'spki' })), dsaEncoding: 'ieee-p1363' }, cose.signature);
    expect(ok).toBe(true);
  });

  it('passes verifyAttestation with the simulator root and fails with the AWS root', async () => {
    const sim = await createNsmSimulator({ stateDir: tmp(), identity });
    const nonce = Uint8Array.of(1, 2, 3);
    const doc = await sim.attest({ nonce });
    await expect(verifyAttestation(doc, { roots: [sim.rootPem], nonce, pcrs: pinsOf(sim.pcrs) })).resolves.toBeTruthy();
    await expect(verifyAttestation(doc, { roots: [readFileSync(sim.rootPath, 'utf8')], nonce, pcrs: pinsOf(sim.pcrs) })).resolves.toBeTruthy();
    const err = (await verifyAttestation(doc, { nonce, pcrs: pinsOf(sim.pcrs) }).catch((e: unknown) => e)) as AttestationError;
    expect(err.code).toBe('ATTESTATION_UNTRUSTED_ROOT');
  });

  it('keeps its CA in stateDir across restarts, with private keys readable by the owner only', async () => {
    const dir = tmp();
    const a = await createNsmSimulator({ stateDir: dir, identity, now: () => T0 });
    const b = await createNsmSimulator({ stateDir: dir, identity, now: () => T0 + 60 * MIN });
    expect(toHex(b.rootDer)).toBe(toHex(a.rootDer));
    expect(b.moduleId).toBe(a.moduleId);
    expect(a.rootPath.startsWith(dir)).toBe(true);
    expect(readFileSync(a.rootPath, 'utf8')).toBe(a.rootPem);
    for (const f of ['root.key.pem', 'intermediate.key.pem']) expect(statSync(join(dir, 'nsm-ca', f)).mode & 0o777).toBe(0o600);
    // A document from the restarted simulator verifies against the root pinned before the restart.
    const doc = await b.attest({});
    await expect(verifyAttestation(doc, { roots: [a.rootPem], pcrs: pinsOf(a.pcrs), now: T0 + 61 * MIN })).resolves.toBeTruthy();
  });

  it('agrees on one CA when two simulators start at once on a fresh stateDir', async () => {
    const dir = tmp();
    const [a, b] = await Promise.all([createNsmSimulator({ stateDir: dir, identity }), createNsmSimulator({ stateDir: dir, identity })]);
    expect(toHex(a.rootDer)).toBe(toHex(b.rootDer));
  });

  it('rotates the 3-hour leaf when less than 30 minutes remain, and every document verifies at its own time', async () => {
    let now = T0;
    const sim = await createNsmSimulator({ stateDir: tmp(), identity, now: () => now });
    const leafOf = async () => {
      const doc = await sim.attest({});
      await verifyAttestation(doc, { roots: [sim.rootDer], pcrs: pinsOf(sim.pcrs), now });
      return toHex(parseAttestationDocument(doc).document.certificate);
    };
    const first = await leafOf();
    now = T0 + 150 * MIN; // 30 minutes left: keep
    expect(await leafOf()).toBe(first);
    now = T0 + 151 * MIN; // 29 minutes left: rotate
    const second = await leafOf();
    expect(second).not.toBe(first);
    now = T0 + 200 * MIN;
    expect(await leafOf()).toBe(second);
    const leaf = new X509Certificate(fromHex(second));
    expect(new Date(leaf.validFrom).getTime()).toBe(T0 + 151 * MIN);
  });

  it('derives PCRs from the identity: stable, and each part moves the PCRs it is measured into', () => {
    const base = simulatorPcrs(identity);
    const hex = (p: Record<number, Uint8Array>) => [0, 1, 2, 8].map((i) => toHex(p[i]!));
    expect(hex(simulatorPcrs({ ...identity }))).toEqual(hex(base));
    expect(hex(simulatorPcrs({ ...identity, config: new TextEncoder().encode(identity.config as string) }))).toEqual(hex(base));
    const changed = (other: SimulatorIdentity) => {
      const o = hex(simulatorPcrs(other));
      return [0, 1, 2, 3].filter((i) => o[i] !== hex(base)[i]).map((i) => ['PCR0', 'PCR1', 'PCR2', 'PCR8'][i]);
    };
    expect(changed({ ...identity, app: 'node other.js' })).toEqual(['PCR0', 'PCR2']);
    expect(changed({ ...identity, config: '[app]\nport = 8009\n' })).toEqual(['PCR0']);
    expect(changed({ ...identity, agentVersion: '0.1.1' })).toEqual(['PCR0', 'PCR1']);
    expect(changed({ ...identity, signingCert: 'release-key-2025' })).toEqual(['PCR8']);
    // Length-prefixed: moving bytes between fields changes PCR0.
    expect(changed({ ...identity, agentVersion: '0.1.0node', app: ' server.js' })).toContain('PCR0');
    expect(hex(base)[3]).toBe('00'.repeat(48)); // unsigned image
    expect(hex(base).slice(0, 3).every((h) => h !== '00'.repeat(48))).toBe(true);
  });

  it('reports all-zero PCR0/1/2/8 in debug mode, and its documents pass a debug-mode check with zero pins', async () => {
    expect(([0, 1, 2, 8] as const).map((i) => toHex(simulatorPcrs({ ...identity, signingCert: 'x' }, true)[i]!))).toEqual(Array(4).fill('00'.repeat(48)));
    const sim = await createNsmSimulator({ stateDir: tmp(), identity: { ...identity, signingCert: 'x' }, debug: true });
    const doc = await sim.attest({});
    const zero = '00'.repeat(48);
    const d = await verifyAttestation(doc, { debug: true, pcrs: { PCR0: zero, PCR1: zero, PCR2: zero, PCR8: zero } });
    expect(toHex(d.pcrs.get(4)!)).not.toBe(zero);
  });

  it('reports the PCRs simulatorPcrs computes without starting anything', async () => {
    const sim = await createNsmSimulator({ stateDir: tmp(), identity });
    const p = simulatorPcrs(identity);
    for (const i of [0, 1, 2, 8] as const) expect(toHex(sim.pcrs[i]!)).toBe(toHex(p[i]));
  });

  it('answers device-shaped requests: InputTooLarge over the limits, GetRandom, InvalidOperation, InvalidArgument', async () => {
    const sim = await createNsmSimulator({ stateDir: tmp(), identity });
    for (const req of [{ userData: new Uint8Array(513) }, { nonce: new Uint8Array(513) }, { publicKey: new Uint8Array(1025) }]) {
      const err = (await sim.attest(req).catch((e: unknown) => e)) as NsmError;
      expect(err).toBeInstanceOf(NsmError);
      expect(err.nsmCode).toBe('InputTooLarge');
    }
    await expect(sim.attest({ userData: new Uint8Array(512), nonce: new Uint8Array(512), publicKey: new Uint8Array(1024) })).resolves.toBeInstanceOf(Uint8Array);
    const r = await sim.random(1000);
    expect(r.length).toBe(1000);
    expect(new Set(r).size).toBeGreaterThan(100);
    expect(toHex(await sim.handle(fromHex('6b44657363726962654e534d')))).toBe(toHex(fromHex('a1654572726f72704' + '96e76616c69644f7065726174696f6e'))); // "DescribeNSM" → InvalidOperation
    expect(toHex(await sim.handle(fromHex('ff')))).toBe('a1654572726f726f496e76616c6964417267756d656e74'); // garbage → InvalidArgument
    const random = decodeStrict(await sim.handle(fromHex('6947657452616e646f6d'))) as Map<string, Map<string, Uint8Array>>;
    expect(random.get('GetRandom')!.get('random')!.length).toBe(256);
  });
});
