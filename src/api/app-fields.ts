// What the local API signs in place of a caller's bytes. The Noise session binds `nonce = handshake hash`, the
// TLS ingress binds `user_data = certificate key`, and KMS releases keys to the holder of `public_key`; a
// document the app can fill with arbitrary bytes would be a genuine attestation for somebody else's handshake,
// certificate or key (issue 14: a host that relays the app's endpoint MITMs every client). So each value a caller
// gives is replaced by
//
//   SHA-256("enclave-agent/app/<field>/v1" ‖ value)      field ∈ nonce | user_data | public_key
//
// 32 bytes that nobody can steer to a chosen handshake hash, control nonce or key (that would be a SHA-256
// preimage). No label is a prefix of another, so the three fields never share a digest. A caller that wants
// freshness computes the same digest of what it sent and compares.
import { createHash } from 'node:crypto';

export type AppField = 'nonce' | 'user_data' | 'public_key';

export const APP_FIELD_LABELS: Readonly<Record<AppField, string>> = Object.freeze({
  nonce: 'enclave-agent/app/nonce/v1',
  user_data: 'enclave-agent/app/user_data/v1',
  public_key: 'enclave-agent/app/public_key/v1',
});

/** SHA-256(label(field) ‖ value): the bytes the document carries for a caller-given `value`. */
export function appFieldDigest(field: AppField, value: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(APP_FIELD_LABELS[field], 'utf8').update(value).digest());
}
