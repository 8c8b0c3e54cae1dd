// The test KMS's envelope builder: `openssl cms` (an implementation independent of ours) encrypts to the
// recipient's SPKI through a throwaway certificate carrying that key and a 32-byte SHA-256 SKI, exactly
// as KMS.md §2.9. BER (-stream: indefinite lengths, chunked content, like real KMS) or DER.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export function opensslRecipientEnvelope(spkiDer: Uint8Array, plaintext: Uint8Array, form: 'ber' | 'der' = 'ber', oaepMd: 'sha256' | 'sha1' = 'sha256'): Uint8Array {
  const dir = mkdtempSync(path.join(tmpdir(), 'kms-cms-'));
  const f = (n: string) => path.join(dir, n);
  const run = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    writeFileSync(f('spki.der'), spkiDer);
    writeFileSync(f('pt.bin'), plaintext, { mode: 0o600 });
    run(['pkey', '-pubin', '-inform', 'DER', '-in', f('spki.der'), '-out', f('pub.pem')]);
    run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', f('ca.key')]);
    const ski = createHash('sha256').update(spkiDer).digest('hex').replace(/../g, '$&:').slice(0, -1);
    writeFileSync(f('ski.ext'), `subjectKeyIdentifier=${ski}\n`);
    run(['x509', '-new', '-subj', '/CN=kms-recipient', '-key', f('ca.key'), '-force_pubkey', f('pub.pem'), '-days', '1', '-extfile', f('ski.ext'), '-out', f('recip.pem')]);
    run([
      'cms', '-encrypt', '-binary', ...(form === 'ber' ? ['-stream'] : []), '-aes-256-cbc', '-keyid', '-recip', f('recip.pem'),
      '-keyopt', 'rsa_padding_mode:oaep', '-keyopt', `rsa_oaep_md:${oaepMd}`, '-keyopt', `rsa_mgf1_md:${oaepMd}`,
      '-in', f('pt.bin'), '-outform', 'DER', '-out', f('cfr.der'),
    ]);
    return new Uint8Array(readFileSync(f('cfr.der')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
