// A Decipher's whole output as one Buffer, with the pieces update() and final() gave wiped: the caller wipes
// the result, and no copy of the plaintext (a KMS data key, a keyring's private scalars) stays behind in a
// buffer nobody wipes. A final() that throws (bad padding, a tag that does not verify) leaves nothing either.
import type { Decipher } from 'node:crypto';

export function decipherWhole(d: Decipher, data: Uint8Array): Buffer {
  const parts: Buffer[] = [];
  try {
    parts.push(d.update(data));
    parts.push(d.final());
    return Buffer.concat(parts);
  } finally {
    for (const p of parts) p.fill(0);
  }
}
