// `[keyring] source = "kms"`: the keyring sealed by `keys seal` (and extended by `keys rotate`), opened at boot
// with data keys KMS releases only to this attested enclave (kms-attested.ts: an RSA key made here, a fresh
// attestation document per Decrypt, the CMS envelope). One Decrypt per key generation, newest first; every data
// key is wiped as soon as its generation is open.
import { promises as fs } from 'node:fs';
import { KeyMaterial, type KeyScalars, type KeySource } from './keyring.ts';
import { createAttestedKmsDecryptor, type AttestedKmsOptions } from './kms-attested.ts';
import { KmsKeyringError } from './kms-errors.ts';
import { openSealedGeneration, parseSealedKeyring } from './sealed-keyring.ts';

export interface KmsKeySourceOptions extends AttestedKmsOptions {
  /** The sealed-keyring file. */
  file: string;
  /** [keyring] region; must equal the file's (a replica in another region needs its own sealed file). */
  region: string;
}

export function kmsKeySource(o: KmsKeySourceOptions): KeySource {
  return {
    async load(): Promise<KeyMaterial> {
      let text: Buffer;
      try {
        text = await fs.readFile(o.file);
      } catch (err) {
        throw new KmsKeyringError('KMS_IO', `cannot read the sealed keyring ${o.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
      const sealed = parseSealedKeyring(text);
      if (sealed.kms.region !== o.region) {
        throw new KmsKeyringError('KMS_BAD_SEALED_FILE', `sealed keyring ${o.file} was sealed in region ${sealed.kms.region}; [keyring] region is ${o.region}`);
      }
      const { file: _file, ...kmsOptions } = o;
      const kms = await createAttestedKmsDecryptor(kmsOptions);
      const scalars: KeyScalars[] = [];
      try {
        // The current generation first: it authenticates the chain of the retired ones (sealed-keyring.ts).
        for (let g = 0; g < sealed.generations.length; g++) {
          const gen = sealed.generations[g]!;
          const dataKey = await kms.decrypt(gen.ciphertextBlob, `key ${gen.keyId}`, gen.keyId);
          try {
            scalars.push(openSealedGeneration(sealed, g, dataKey));
          } finally {
            dataKey.fill(0);
          }
        }
        return KeyMaterial.fromGenerations(scalars);
      } finally {
        for (const s of scalars) {
          s.p256.fill(0);
          s.secp256k1.fill(0);
        }
        kms.close();
      }
    },
  };
}
