// Every certificate the NSM simulator issues, through an independent strict DER parser: Debian's python3 with
// `cryptography` (strict-x509.py). Before the fix pkijs wrote C, O, OU and CN as one multi-valued RDN with an
// unsorted SET OF, and `cryptography` refused every local-stack document (InvalidSetOrdering). The names must
// also have AWS's shape: one attribute per RDN, AWS's attribute order and string types.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { fixtureBytes, nitroIndex } from './fixtures.ts';

const PYTHON = '/usr/bin/python3';
const SCRIPT = resolve(import.meta.dirname, 'strict-x509.py');
const identity = { agentVersion: '0.1.0', app: 'node server.js', config: '[app]\nport = 8008\n' };
const HOUR = 60 * 60_000;

type Rdn = [oid: string, type: string, value: string][];
type Checked = { subject: string; rdns: Rdn[] } | { error: string };

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'sim-der-'));
  dirs.push(d);
  return d;
};

/** Runs strict-x509.py on a chain (root first). */
async function strictCheck(chain: Uint8Array[]): Promise<Checked[]> {
  const dir = tmp();
  const files = chain.map((der, i) => {
    const f = join(dir, `${i}.der`);
    writeFileSync(f, der);
    return f;
  });
  const { stdout } = await promisify(execFile)(PYTHON, [SCRIPT, ...files], { timeout: 30_000 });
  return JSON.parse(stdout) as Checked[];
}

function chainOf(doc: Uint8Array): Uint8Array[] {
  const { document } = parseAttestationDocument(doc, { allowEmptyPublicKey: true });
  return [...document.cabundle, document.certificate];
}

/** [oid, string type] per RDN: the shape of a Name without its values. */
const shape = (c: Checked): string[][] => ('rdns' in c ? c.rdns.map((rdn) => rdn.map(([oid, type]) => `${oid}:${type}`)) : [[c.error]]);

describe('simulator certificates under a strict DER parser (python3-cryptography)', () => {
  it('the script accepts a real AWS chain (root → regional → zonal → instance → enclave)', async () => {
    const aws = await strictCheck(chainOf(fixtureBytes(nitroIndex.documents.find((f) => !f.debug_mode)!)));
    expect(aws.filter((c) => 'error' in c)).toEqual([]);
    expect(aws.length).toBeGreaterThanOrEqual(3);
  });

  it('root, intermediate and every leaf parse, chain and verify, with names shaped as AWS shapes them', async () => {
    const awsChain = await strictCheck(chainOf(fixtureBytes(nitroIndex.documents.find((f) => !f.debug_mode)!)));
    const awsRoot = awsChain[0]!;
    const awsLeaf = awsChain[awsChain.length - 1]!;

    let t = Date.UTC(2025, 5, 1, 12, 0, 0);
    const sim = await createNsmSimulator({ stateDir: tmp(), identity, now: () => t });
    const first = chainOf(await sim.attest({ nonce: new Uint8Array(32) }));
    t += 3 * HOUR; // past the leaf's rotation point: a new leaf is minted
    const second = chainOf(await sim.attest({}));
    expect(Buffer.from(second[2]!).equals(Buffer.from(first[2]!))).toBe(false);

    for (const chain of [first, second]) {
      const [root, inter, leaf] = await strictCheck(chain);
      for (const c of [root, inter, leaf]) expect(c, JSON.stringify(c)).not.toHaveProperty('error');
      // Root and intermediate: C, O, OU, CN (AWS's root and regional certificates); leaf: C, ST, L, O, OU, CN
      // (AWS's enclave certificate). One attribute per RDN; C PrintableString, the rest UTF8String.
      expect(shape(root!)).toEqual(shape(awsRoot));
      expect(shape(inter!)).toEqual(shape(awsRoot));
      expect(shape(leaf!)).toEqual(shape(awsLeaf));
      expect((root as { subject: string }).subject).toMatch(/^CN=sim-[0-9a-f]{16}\.nitro-enclaves,OU=NSM simulator,O=enclave-agent \(simulated\\, not AWS\),C=US$/);
    }
  });
});
