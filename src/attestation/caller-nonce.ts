// A nonce a client chooses for a document (TLS ingress: SNI `<nonce>.attest.<host>`, `/.well-known/attestation
// ?nonce=`) must never have the length of a Noise handshake hash. A Noise client takes a document whose nonce is
// its handshake hash as bound to its session (WIRE.md, RequestAttestation); if the enclave signed any 32 bytes a
// caller asked for, a host in the middle of a Noise handshake would ask the TLS port for a document carrying that
// handshake's hash and relay it as the session's attestation. The local API replaces caller values by labelled
// digests (src/api/app-fields.ts); the TLS ingress must echo Evervault's nonces as sent, so it refuses this one
// length instead (Evervault clients send 24 bytes, TLS-INGRESS.md R4). Browser-safe.

/** BLAKE2s output: the handshake hash of Noise_NN_25519_ChaChaPoly_BLAKE2s, the only suite the agent speaks. */
export const HANDSHAKE_HASH_BYTES = 32;

/** Why `nonce`, chosen by a caller, cannot go into a document, or null when it can. */
export function callerNonceRefusal(nonce: Uint8Array): string | null {
  return nonce.length === HANDSHAKE_HASH_BYTES
    ? `a nonce of ${HANDSHAKE_HASH_BYTES} bytes is refused: that is the length of a Noise handshake hash, which binds documents to Noise sessions; use any other length`
    : null;
}
