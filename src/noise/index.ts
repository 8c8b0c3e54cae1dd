// Browser-safe entry of src/noise: everything except the node:crypto suite (import that from
// './suite-node.ts' or from the package root).
export { NoiseError, type NoiseErrorCode } from './errors.ts';
export {
  CIPHER_NAMES,
  DH_LEN,
  HASH_LEN,
  HASH_NAMES,
  KEY_LEN,
  MAX_MESSAGE_LEN,
  MAX_NONCE,
  TAG_LEN,
  type CipherName,
  type HashName,
  type NoisePrimitives,
} from './primitives.ts';
export { noblePrimitives } from './suite-noble.ts';
export { CipherState } from './cipher-state.ts';
export {
  DEFAULT_PROTOCOL,
  PSK_LEN,
  createHandshake,
  parseProtocol,
  type Handshake,
  type HandshakeOptions,
  type ProtocolInfo,
  type Transport,
} from './handshake.ts';
