// End to end against the real TLS ingress: `enclave-agent start --json` with tls_termination = true (the agent's
// attested certificate, the simulated NSM), then the https:// client side — the SDK's connect(), `fetch`,
// `attest`, `attestation inspect` on the served certificate (and --cert with /.well-known/attestation), and
// `proxy https://…` reached with curl.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../../src/client/node.ts';
import { runBin, startBin, type Running } from '../cli/spawn.ts';

interface StartLine {
  bridgeUrl: string;
  httpsUrl: string | null;
  rootPem: string;
  pcrs: { PCR0: string; PCR1: string; PCR2: string; PCR8: string };
}

let dir: string;
let start: Running;
let info: StartLine;
let pcrsFile: string;
const procs: Running[] = [];

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '20', ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1, stdout, stderr });
    });
  });
}

/** The certificate the ingress presents (no verification: the test inspects it with the CLI). */
function servedCertificate(url: string): Promise<Buffer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: Number(u.port), servername: u.hostname, rejectUnauthorized: false }, () => {
      const raw = s.getPeerX509Certificate()!.raw;
      s.destroy();
      resolve(raw);
    });
    s.once('error', reject);
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tls-e2e-'));
  const config = path.join(dir, 'enclave.toml');
  writeFileSync(config, 'name = "tls-e2e"\ntls_termination = true\n\n[app]\nport = 8008\n');
  start = startBin(['start', '--json', '--config', config, '--state-dir', path.join(dir, 'state'), '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0']);
  procs.push(start);
  info = JSON.parse(await start.firstLine(90_000)) as StartLine;
  pcrsFile = path.join(dir, 'pins.json');
  writeFileSync(pcrsFile, JSON.stringify(info.pcrs));
}, 120_000);

afterAll(async () => {
  for (const p of procs) await p.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe('the https:// client side against the agent’s TLS ingress', () => {
  it('start prints httpsUrl; the SDK verifies the served certificate and fetches (with and without an SNI nonce)', async () => {
    expect(info.httpsUrl).toMatch(/^https:\/\/localhost:\d+\/$/);
    const url = info.httpsUrl!.replace('localhost', '127.0.0.1');
    const pins = { PCR0: info.pcrs.PCR0, PCR1: info.pcrs.PCR1, PCR2: info.pcrs.PCR2 };
    const roots = [(await import('node:fs')).readFileSync(info.rootPem, 'utf8')];
    for (const nonce of [false, true]) {
      const client = await connect(url, { pcrs: pins, roots, nonce });
      try {
        const res = await client.fetch('/echo', { method: 'POST', body: 'over tls' });
        expect(res.status).toBe(200);
        const echo = (await res.json()) as { body: string; path: string };
        expect(echo.body).toBe('over tls');
        if (nonce) expect(client.attestation.nonce?.length).toBe(24);
      } finally {
        await client.close();
      }
    }
    await expect(connect(url, { pcrs: { ...pins, PCR2: '0'.repeat(95) + '1' }, roots })).rejects.toMatchObject({ code: 'CLIENT_ATTESTATION_FAILED', attestationCode: 'ATTESTATION_PCR_MISMATCH' });
  });

  it('enclave-agent fetch and attest https://… verify the certificate; a wrong pin exits 1 naming the code', async () => {
    const ok = await runBin(['fetch', info.httpsUrl!, '/echo', '-d', 'hi', '--pcrs', pcrsFile, '--root', info.rootPem, '--nonce']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect((JSON.parse(ok.stdout) as { body: string }).body).toBe('hi');
    const bad = await runBin(['fetch', info.httpsUrl!, '/echo', '-d', 'secret', '--pcr0', 'ab'.repeat(48), '--pcr1', info.pcrs.PCR1, '--pcr2', info.pcrs.PCR2, '--root', info.rootPem]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('ATTESTATION_PCR_MISMATCH');
    const attest = await runBin(['attest', info.httpsUrl!, '--pcrs', pcrsFile, '--root', info.rootPem, '--json']);
    expect(attest.code).toBe(0);
    const a = JSON.parse(attest.stdout) as { verified: boolean; match: boolean; pcrs: Record<string, string> };
    expect(a.verified).toBe(true);
    expect(a.match).toBe(true);
    expect(a.pcrs.PCR0).toBe(info.pcrs.PCR0);
    const untrusted = await runBin(['attest', info.httpsUrl!, '--pcrs', pcrsFile]);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toContain('ATTESTATION_UNTRUSTED_ROOT');
  });

  it('attestation inspect takes the served certificate (PEM and DER), and --cert with the /.well-known document', async () => {
    const der = await servedCertificate(info.httpsUrl!);
    const pemFile = path.join(dir, 'served.pem');
    const derFile = path.join(dir, 'served.der');
    writeFileSync(pemFile, `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`);
    writeFileSync(derFile, der);
    for (const f of [pemFile, derFile]) {
      const r = await runBin(['attestation', 'inspect', f, '--root', info.rootPem, '--pcrs', pcrsFile, '--json']);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { tlsCertificate: { hostnames: string[]; spkiBytes: number; document: string }; verdict: { ok: boolean; notes: string[] } };
      expect(out.tlsCertificate.spkiBytes).toBe(120);
      expect(out.tlsCertificate.document).toBe('subjectAltName');
      expect(out.verdict.ok).toBe(true);
      expect(out.verdict.notes.join(' ')).toContain("user_data = the certificate's key");
    }
    const wk = await curl(['-k', `${info.httpsUrl!}.well-known/attestation`]);
    expect(wk.code, wk.stderr).toBe(0);
    const docFile = path.join(dir, 'well-known.b64');
    writeFileSync(docFile, (JSON.parse(wk.stdout) as { attestation_doc: string }).attestation_doc);
    const paired = await runBin(['attestation', 'inspect', docFile, '--cert', pemFile, '--root', info.rootPem, '--pcrs', pcrsFile]);
    expect(paired.code, paired.stdout).toBe(0);
    expect(paired.stdout).toContain('Verdict: PASS');
    // The same document against another key's certificate: refused.
    const other = await startAttestedCertFile();
    const mismatch = await runBin(['attestation', 'inspect', docFile, '--cert', other, '--root', info.rootPem]);
    expect(mismatch.code).toBe(1);
    expect(mismatch.stdout).toContain('ATTESTED_CERT_KEY_MISMATCH');
  });

  it('proxy https://… lets curl reach the app over the verified TLS ingress', async () => {
    const p = startBin(['proxy', info.httpsUrl!, '--json', '--pcrs', pcrsFile, '--root', info.rootPem, '--log-level', 'warn']);
    procs.push(p);
    const line = JSON.parse(await p.firstLine(60_000)) as { url: string; attestation: string };
    expect(line.attestation).toBe('verified');
    const r = await curl(['-d', 'via proxy', `${line.url}/echo`]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { body: string }).body).toBe('via proxy');

    const wrong = startBin(['proxy', info.httpsUrl!, '--json', '--pcr0', 'ab'.repeat(48), '--pcr1', info.pcrs.PCR1, '--pcr2', info.pcrs.PCR2, '--root', info.rootPem, '--log-level', 'silent']);
    procs.push(wrong);
    const refused = JSON.parse(await wrong.firstLine(60_000)) as { url: string; attestation: string };
    expect(refused.attestation).toBe('ATTESTATION_PCR_MISMATCH');
    const head = await curl(['-i', '-d', 'must not arrive', `${refused.url}/echo`]);
    expect(head.stdout).toMatch(/^HTTP\/1\.1 502/);
    expect(head.stdout.toLowerCase()).toContain('x-enclave-agent-error: attestation_pcr_mismatch');
  });
});

/** A self-signed certificate for a fresh key (openssl), to pair a document with the wrong key. */
async function startAttestedCertFile(): Promise<string> {
  const key = path.join(dir, 'other.key');
  const cert = path.join(dir, 'other.pem');
  await new Promise<void>((resolve, reject) =>
    execFile('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-nodes', '-keyout', key, '-out', cert, '-subj', '/CN=other', '-days', '1'], (err) => (err ? reject(err) : resolve())),
  );
  return cert;
}
