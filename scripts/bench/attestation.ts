// Attestation verification cost: verifyAttestation on a real Nitro document (4 certificates + COSE ES384), next to
// the raw WebCrypto floor measured in the same run (one ES384 verify + one SHA-384 over the same payload).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { parseAttestationDocument, coseSign1SigStructure } from '../../src/attestation/document.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { clearVerifierCaches, parseCertificate } from '../../src/attestation/x509.ts';
import { medianMs, printTable } from './lib.ts';

export default async function bench(): Promise<void> {
  const dir = resolve(process.cwd(), '../shared/fixtures/nitro');
  const index = JSON.parse(readFileSync(resolve(dir, 'index.json'), 'utf8')) as { documents: { file: string; verify_at: string; pcr0: string; pcr1: string; pcr2: string }[] };
  const f = index.documents.find((d) => d.file.startsWith('marlin'))!;
  const doc = new Uint8Array(readFileSync(resolve(dir, f.file)));
  const exp = { now: new Date(f.verify_at), pcrs: { PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2 } };
  const { cose, document } = parseAttestationDocument(doc);
  const subtle = globalThis.crypto.subtle;
  const leafKey = await subtle.importKey('raw', parseCertificate(document.certificate, 'certificate').publicKey as Uint8Array<ArrayBuffer>, { name: 'ECDSA', namedCurve: 'P-384' }, false, ['verify']);
  const sigStructure = coseSign1SigStructure(cose.protectedBytes, cose.payload) as Uint8Array<ArrayBuffer>;
  if (!(await subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, leafKey, cose.signature as Uint8Array<ArrayBuffer>, sigStructure))) throw new Error('baseline verify failed');
  await verifyAttestation(doc, exp);

  const n = 300;
  const baseline = await medianMs(async () => {
    await subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, leafKey, cose.signature as Uint8Array<ArrayBuffer>, sigStructure);
    await subtle.digest('SHA-384', cose.payload as Uint8Array<ArrayBuffer>);
  }, n);
  const parseOnly = await medianMs(() => parseAttestationDocument(doc), n);
  const warm = await medianMs(() => verifyAttestation(doc, exp), n);
  const cold = await medianMs(() => {
    clearVerifierCaches();
    return verifyAttestation(doc, exp);
  }, n);
  // A new signing certificate under a warm CA (what a client sees per enclave instance): simulator documents,
  // each signed by a fresh leaf (the clock jumps past the rotation point between documents).
  const stateDir = mkdtempSync(join(tmpdir(), 'bench-attestation-'));
  let clock = Date.UTC(2025, 0, 1);
  const sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'bench', app: 'bench', config: '' }, now: () => clock });
  const fresh: { doc: Uint8Array; at: number }[] = [];
  const m = 60;
  for (let i = 0; i < m + 6; i++) {
    clock += 151 * 60_000;
    fresh.push({ doc: await sim.attest({ nonce: new Uint8Array(32) }), at: clock });
  }
  const simPins = { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! };
  let k = 0;
  const freshLeaf = await medianMs(() => {
    const { doc, at } = fresh[k++]!;
    return verifyAttestation(doc, { roots: [sim.rootPem], pcrs: simPins, now: at, nonce: new Uint8Array(32) });
  }, m, 5);
  rmSync(stateDir, { recursive: true, force: true });

  const x = (v: number) => `${(v / baseline).toFixed(2)}×`;
  printTable(`attestation: verify a real Nitro document (${doc.length} bytes, 4 CA certs + leaf), median of ${n}, one core`, [
    ['operation', 'median ms', 'vs baseline', 'target'],
    ['baseline: 1 WebCrypto ES384 verify + SHA-384', baseline, '1.00×', ''],
    ['parseAttestationDocument (CBOR + structure)', parseOnly, x(parseOnly), ''],
    ['verifyAttestation, same document again (caches warm)', warm, x(warm), warm < 5 ? '< 5 ms ✓' : '< 5 ms ✗'],
    ['verifyAttestation, new leaf under a warm CA (simulator)', freshLeaf, x(freshLeaf), freshLeaf < 5 ? '< 5 ms ✓' : '< 5 ms ✗'],
    ['verifyAttestation, all caches cleared each call', cold, x(cold), cold < 5 ? '< 5 ms ✓' : '< 5 ms ✗'],
  ]);
}
