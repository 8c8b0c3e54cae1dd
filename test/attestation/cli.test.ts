import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeStrict, type CborMap } from '../../src/attestation/cbor.ts';
import { parseCoseSign1 } from '../../src/attestation/document.ts';
import { encodeCbor } from '../../src/attestation/nsm-messages.ts';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { runCli } from '../../src/cli/run.ts';
import { attestationFailureLine } from '../../src/cli/fetch.ts';
import { ClientError } from '../../src/client/errors.ts';
import { toBase64 } from '../../src/util/bytes.ts';
import { fixturePath, isEmptyPublicKeyFixture, nitroIndex, type NitroFixture } from './fixtures.ts';

async function cli(args: string[], stdin: Uint8Array = new Uint8Array(0)) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l), stdin: () => Promise.resolve(stdin) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const inline = (f: NitroFixture) => `PCR0=${f.pcr0},PCR1=${f.pcr1},PCR2=${f.pcr2}`;
const passArgs = (f: NitroFixture) => ['--at', f.verify_at, '--pcrs', inline(f), ...(isEmptyPublicKeyFixture(f) ? ['--allow-empty-public-key'] : []), ...(f.debug_mode ? ['--allow-debug-enclave'] : [])];
const tmp = mkdtempSync(join(tmpdir(), 'inspect-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('enclave-agent attestation inspect', () => {
  for (const f of nitroIndex.documents) {
    it(`prints the PCRs of ${f.file}, passes at verify_at with its PCRs, and fails with wrong ones`, async () => {
      const plain = await cli(['attestation', 'inspect', fixturePath(f)]);
      for (const [i, v] of [f.pcr0, f.pcr1, f.pcr2].entries()) expect(plain.out).toContain(`PCR${i}   ${v}`);
      expect(plain.out).toContain(`module_id   ${f.module_id}`);
      expect(plain.out).toMatch(/cabundle\[0\] C=US, O=Amazon, OU=AWS, CN=aws.nitro-enclaves/);

      const pass = await cli(['attestation', 'inspect', fixturePath(f), ...passArgs(f)]);
      expect(pass.out).toContain('Verdict: PASS (chain to the AWS Nitro root G1 and ES384 signature valid at');
      expect(pass.code).toBe(0);

      const wrongPcr0 = (f.pcr0.startsWith('00') ? 'ff' : '00') + f.pcr0.slice(2);
      const fail = await cli(['attestation', 'inspect', fixturePath(f), ...passArgs(f).slice(0, 2), '--pcrs', inline({ ...f, pcr0: wrongPcr0 }), '--allow-empty-public-key', ...(f.debug_mode ? ['--allow-debug-enclave'] : [])]);
      expect(fail.out).toContain(`Verdict: FAIL ATTESTATION_PCR_MISMATCH: PCR0 expected ${wrongPcr0}, found ${f.pcr0}`);
      expect(fail.code).toBe(1);
    });
  }

  it('fails the empty-public_key document by default and says why', async () => {
    const f = nitroIndex.documents.find(isEmptyPublicKeyFixture)!;
    const r = await cli(['attestation', 'inspect', fixturePath(f), '--at', f.verify_at, '--pcrs', inline(f)]);
    expect(r.out).toContain('public_key  0 bytes');
    expect(r.out).toContain('Verdict: FAIL ATTESTATION_STRUCTURE: public_key must be 1–1024 bytes; found 0');
    expect(r.code).toBe(1);
  });

  it('fails without --at: the real documents\' certificates expired long ago', async () => {
    const r = await cli(['attestation', 'inspect', fixturePath(nitroIndex.documents[1]!)]);
    expect(r.out).toMatch(/Verdict: FAIL ATTESTATION_CERT_EXPIRED: certificate .* verification time is/);
    expect(r.code).toBe(1);
  });

  it('takes --pcrs as a JSON file (plain or nitro-cli Measurements), several sets, --nonce and --json', async () => {
    const f = nitroIndex.documents[1]!; // brave: nonce of 20 zero bytes
    const plain = join(tmp, 'pcrs.json');
    writeFileSync(plain, JSON.stringify({ PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2, PCR8: '00'.repeat(48) }));
    const measurements = join(tmp, 'measurements.json');
    writeFileSync(measurements, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2 } }));
    const r = await cli(['attestation', 'inspect', fixturePath(f), '--at', f.verify_at, '--pcrs', plain, '--nonce', f.nonce_hex!, '--json']);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.out) as { document: { pcrs: Record<string, string>; nonce: string; moduleId: string }; verdict: { ok: boolean; notes: string[] } };
    expect(json.verdict.ok).toBe(true);
    expect(json.verdict.notes).toContain('nonce matches');
    expect(json.document.pcrs['0']).toBe(f.pcr0);
    expect(json.document.moduleId).toBe(f.module_id);
    const other = 'PCR0=' + 'ab'.repeat(48) + `,PCR1=${f.pcr1},PCR2=${f.pcr2}`;
    expect((await cli(['attestation', 'inspect', fixturePath(f), '--at', f.verify_at, '--pcrs', other, '--pcrs', measurements])).code).toBe(0);
    const badNonce = await cli(['attestation', 'inspect', fixturePath(f), '--at', f.verify_at, '--pcrs', plain, '--nonce', '01', '--json']);
    expect(badNonce.code).toBe(1);
    expect(JSON.parse(badNonce.out).verdict).toMatchObject({ ok: false, code: 'ATTESTATION_NONCE_MISMATCH' });
  });

  it('reads the document from stdin ("-"), as a base64 argument, and from a base64 file', async () => {
    const f = nitroIndex.documents[2]!;
    const bytes = new Uint8Array(readFileSync(fixturePath(f)));
    expect((await cli(['attestation', 'inspect', '-', ...passArgs(f)], bytes)).code).toBe(0);
    expect((await cli(['attestation', 'inspect', toBase64(bytes), ...passArgs(f)])).code).toBe(0);
    const b64file = join(tmp, 'doc.b64');
    writeFileSync(b64file, toBase64(bytes).replace(/.{76}/g, '$&\n'));
    expect((await cli(['attestation', 'inspect', b64file, ...passArgs(f)])).code).toBe(0);
  });

  it('checks --root: a real document fails against the simulator root; a simulator document passes with it', async () => {
    const sim = await createNsmSimulator({ stateDir: join(tmp, 'sim'), identity: { agentVersion: '1', app: 'a', config: 'c' } });
    const f = nitroIndex.documents[2]!;
    const r = await cli(['attestation', 'inspect', fixturePath(f), ...passArgs(f), '--root', sim.rootPath]);
    expect(r.out).toContain('Verdict: FAIL ATTESTATION_UNTRUSTED_ROOT');
    expect(r.code).toBe(1);
    const doc = join(tmp, 'sim.cbor');
    writeFileSync(doc, await sim.attest({}));
    const p = sim.pcrs;
    const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
    const ok = await cli(['attestation', 'inspect', doc, '--root', sim.rootPath, '--pcrs', `PCR0=${hex(p[0]!)},PCR1=${hex(p[1]!)},PCR2=${hex(p[2]!)},PCR8=${hex(p[8]!)}`]);
    expect(ok.out).toContain('Verdict: PASS (chain to the given root');
    expect(ok.code).toBe(0);
  });

  it('prints a hostile document\'s text with its control characters escaped (no fake verdict line, no hidden one)', async () => {
    const sim = await createNsmSimulator({ stateDir: join(tmp, 'sim-ansi'), identity: { agentVersion: '1', app: 'a', config: 'c' } });
    const doc = join(tmp, 'ansi.cbor');
    const forged = 'i-0abc\r\nVerdict: PASS (chain to the AWS Nitro root G1)\x1b[8m\u009b';
    writeFileSync(doc, await sim.issueDocument({ nonce: null, userData: null, publicKey: null }, { payload: (p) => p.set('module_id', forged) }));
    const r = await cli(['attestation', 'inspect', doc]);
    expect(r.code).toBe(1);
    expect(r.out).toContain('module_id   i-0abc\\u000d\\u000aVerdict: PASS (chain to the AWS Nitro root G1)\\u001b[8m\\u009b');
    expect(r.out.split('\n').filter((l) => l.startsWith('Verdict:'))).toEqual([expect.stringMatching(/^Verdict: FAIL /)]);
    // eslint-disable-next-line no-control-regex -- none may reach the terminal (LF between lines aside)
    expect(r.out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
  });

  it('passes a debug-mode document with --debug and zero PCRs at any time', async () => {
    const f = nitroIndex.documents.find((d) => d.debug_mode && !isEmptyPublicKeyFixture(d))!;
    const z = '00'.repeat(48);
    const r = await cli(['attestation', 'inspect', fixturePath(f), '--debug', '--pcrs', `PCR0=${z},PCR1=${z},PCR2=${z}`]);
    expect(r.out).toContain('debug mode  yes');
    expect(r.out).toContain('Verdict: PASS (debug: certificate chain and signature NOT checked; PCRs match the pinned set)');
    expect(r.code).toBe(0);
  });

  it.each([
    [['--at', 'yesterday'], /--at: "yesterday" is not an ISO 8601 time/],
    [['--pcrs', 'PCR0=00'], /--pcrs: PCR1 is required/],
    [['--pcrs', 'PCR0=xyz,PCR1=00,PCR2=00'], /--pcrs: PCR0 must be hex/],
    [['--nonce', 'zz'], /--nonce must be hex/],
    [['--frobnicate'], /unknown option "--frobnicate"/],
  ])('exits 2 on bad usage %j', async (extra, message) => {
    const r = await cli(['attestation', 'inspect', fixturePath(nitroIndex.documents[1]!), ...extra]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
  });

  it('reports a timestamp beyond Date\'s range (valid CBOR) as ATTESTATION_STRUCTURE with exit 1, not a crash', async () => {
    const f = nitroIndex.documents.find((d) => !d.debug_mode && !isEmptyPublicKeyFixture(d))!;
    const cose = parseCoseSign1(new Uint8Array(readFileSync(fixturePath(f))));
    const payload = decodeStrict(cose.payload) as CborMap;
    // 8.64e15 ms is the last instant a JS Date holds; CBOR integers go to 2^53 (≈ 9.007e15).
    payload.set('timestamp', BigInt(8.64e15 + 1) as unknown as number);
    const doc = encodeCbor([cose.protectedBytes, new Map(), encodeCbor(payload), cose.signature]);
    for (const json of [false, true]) {
      const r = await cli(['attestation', 'inspect', '-', '--at', f.verify_at, ...(json ? ['--json'] : [])], doc);
      expect(r.err).toBe('');
      expect(r.out).toMatch(/FAIL|"ok": false/);
      expect(r.out).toContain('ATTESTATION_STRUCTURE');
      expect(r.out).toContain('timestamp must be');
      expect(r.code).toBe(1);
    }
    // The last instant Date holds is still a document: it is printed, then fails its signature.
    payload.set('timestamp', BigInt(8.64e15) as unknown as number);
    const edge = await cli(['attestation', 'inspect', '-', '--at', f.verify_at], encodeCbor([cose.protectedBytes, new Map(), encodeCbor(payload), cose.signature]));
    expect(edge.out).toContain('time        +275760-09-13T00:00:00.000Z (8640000000000000)');
    expect(edge.out).toContain('Verdict: FAIL ATTESTATION_SIGNATURE');
    expect(edge.code).toBe(1);
  });

  it('reports garbage input as ATTESTATION_MALFORMED with exit 1', async () => {
    const r = await cli(['attestation', 'inspect', '-'], Uint8Array.of(0x84, 0x01));
    expect(r.out).toMatch(/^Verdict: FAIL ATTESTATION_MALFORMED: COSE_Sign1: truncated/);
    expect(r.code).toBe(1);
  });

  it('runs as a process: node bin/enclave-agent.js exits 0 on a pass and 1 with wrong PCRs', async () => {
    const f = nitroIndex.documents[3]!;
    const run = (args: string[]) =>
      new Promise<{ code: number; stdout: string }>((done) => {
        execFile(process.execPath, [resolve('bin/enclave-agent.js'), 'attestation', 'inspect', fixturePath(f), ...args], { timeout: 30_000 }, (err, stdout) =>
          done({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout }),
        );
      });
    const [pass, fail] = await Promise.all([run(passArgs(f)), run(['--at', f.verify_at, '--pcrs', inline({ ...f, pcr1: 'ee'.repeat(48) })])]);
    expect(pass.stdout).toContain('Verdict: PASS');
    expect(pass.code).toBe(0);
    expect(fail.stdout).toContain('Verdict: FAIL ATTESTATION_PCR_MISMATCH: PCR1 expected eeee');
    expect(fail.code).toBe(1);
  });
});

describe('fetch / attest failure lines', () => {
  it('escape the control characters of a peer\'s text (a certificate subject in the verifier\'s message)', () => {
    const cause = new Error('the chain ends at "CN=i-0abc\r\nenclave-agent fetch: verified, PCRs MATCH\u001b[8m"');
    const err = new ClientError('CLIENT_ATTESTATION_FAILED', 'attestation failed', { cause, attestationCode: 'ATTESTATION_UNTRUSTED_ROOT' });
    const line = attestationFailureLine('fetch', err);
    expect(line).toBe('enclave-agent fetch: attestation failed: ATTESTATION_UNTRUSTED_ROOT: the chain ends at "CN=i-0abc\\u000d\\u000aenclave-agent fetch: verified, PCRs MATCH\\u001b[8m"');
  });
});
