// Browser-safe attestation API: parsing and verification of Nitro attestation documents, and the NSM contract.
// Node-only parts (the NSM simulator, the device client) are exported from src/index.ts.
export { AttestationError, NsmError, type AttestationErrorCode } from './errors.ts';
export {
  parseAttestationDocument,
  parseCoseSign1,
  parseAttestationPayload,
  coseSign1SigStructure,
  isDebugModeDocument,
  pcrHex,
  PAYLOAD_KEYS,
  MAX_DOCUMENT_BYTES,
  type AttestationDocument,
  type CoseSign1,
  type ParsedAttestation,
  type ParseOptions,
} from './document.ts';
export { verifyAttestation, AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256, type PcrPins, type VerifyExpectations } from './verify.ts';
export type { AttestationRequest, Nsm } from './nsm.ts';
