/**
 * The one interface the agent uses to reach the Nitro Security Module: the real device (/dev/nsm through
 * an injected ioctl) or the simulator. Both take the device's own request shape and return raw bytes.
 */
export interface AttestationRequest {
  userData?: Uint8Array | null;
  nonce?: Uint8Array | null;
  publicKey?: Uint8Array | null;
}

export interface Nsm {
  /** Returns the attestation document: COSE_Sign1 bytes, exactly as the NSM produced them. */
  attest(req: AttestationRequest): Promise<Uint8Array>;
  /** `n` random bytes from the NSM's RNG. */
  random(n: number): Promise<Uint8Array>;
}
