// SNI `<nonce>.attest.<host>` (Evervault's fresh-document request, attested-cert.ts header): the nonce bytes,
// null for any other name, IngressError INGRESS_BAD_NONCE for an attest name whose label[0] is not base64.
import { callerNonceRefusal } from '../attestation/caller-nonce.ts';
import { IngressError } from './errors.ts';

const MAX_LABEL = 63;
const MAX_NONCE_BYTES = 64;
const STD = /^[A-Za-z0-9+/]+={0,2}$/;
const URL = /^[A-Za-z0-9_-]+$/;

export function nonceFromSni(servername: string | undefined): Uint8Array | null {
  if (servername === undefined || servername === '') return null;
  const labels = servername.split('.');
  if (labels.length < 3 || labels[1]!.toLowerCase() !== 'attest') return null;
  const label = labels[0]!;
  if (label.length === 0 || label.length > MAX_LABEL) {
    throw new IngressError('INGRESS_BAD_NONCE', `SNI nonce label: expected 1–${MAX_LABEL} characters, found ${label.length}`);
  }
  let bytes: Buffer;
  if (STD.test(label)) bytes = Buffer.from(label, 'base64');
  else if (URL.test(label)) bytes = Buffer.from(label, 'base64url');
  else throw new IngressError('INGRESS_BAD_NONCE', 'SNI nonce label: expected standard base64 or base64url');
  // Node's decoder drops a dangling 6 bits: a label of one character (or 4n+1) carries no whole byte.
  if (bytes.length === 0 || bytes.length > MAX_NONCE_BYTES || label.replace(/=+$/, '').length % 4 === 1) {
    throw new IngressError('INGRESS_BAD_NONCE', `SNI nonce: expected 1–${MAX_NONCE_BYTES} bytes of base64`);
  }
  const refused = callerNonceRefusal(bytes);
  if (refused !== null) throw new IngressError('INGRESS_BAD_NONCE', `SNI nonce: ${refused}`);
  return new Uint8Array(bytes);
}
