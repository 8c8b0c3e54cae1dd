// Public API of the agent package. Modules add their exports here as they land.
import './attestation/ecdsa-node.ts'; // node:crypto ECDSA for attestation checks (ecdsa.ts says why)
export { AgentError, isAgentError } from './errors.ts';
// noise
export { createHandshake, DEFAULT_PROTOCOL, CipherState, NoiseError, noblePrimitives, parseProtocol } from './noise/index.ts';
export type { Handshake, HandshakeOptions, Transport, NoisePrimitives, CipherName, HashName, NoiseErrorCode } from './noise/index.ts';
export { nodePrimitives } from './noise/suite-node.ts';
// wire
export { WireError } from './wire/errors.ts';
export type { WireErrorCode, WireDecodeDetail } from './wire/errors.ts';
export { FrameReader, encodeFrame, MAX_FRAME_LEN, MIN_FRAME_LEN, MAX_WRITE, FRAME_HEADER_LEN } from './wire/frames.ts';
export { FrameWriter } from './wire/frame-writer.ts';
export {
  encodeClientMessage, decodeClientMessage, encodeServerMessage, decodeServerMessage,
  clientMessageSize, serverMessageSize, MAX_MESSAGE_LEN, NONCE_LEN, MAX_SKIP_DEPTH,
} from './wire/messages.ts';
export type { ByteEncoding, ClientMessage, ServerMessage, DecodeOptions } from './wire/messages.ts';
// responder
export { createResponder, startAgent } from './responder/server.ts';
export type { Responder, ResponderOptions, Agent, AgentOptions, ListenTarget } from './responder/server.ts';
export { createRawForwarder } from './responder/raw-forwarder.ts';
export type { RawForwarder, RawForwarderOptions } from './responder/raw-forwarder.ts';
export type { Forwarder, ForwardContext } from './responder/forwarder.ts';
export { DEFAULT_LIMITS, resolveLimits } from './responder/limits.ts';
export type { Limits } from './responder/limits.ts';
export type { ResponderCounters } from './responder/admission.ts';
export { createControlNonce, handleControl, parseControlPublicKey } from './responder/control.ts';
export type { ControlCommand, ControlHandler, ControlResult, ControlNonceState, ControlPublicKeyInput } from './responder/control.ts';
export { ResponderError, ForwardError } from './responder/errors.ts';
export type { ResponderErrorCode, ForwardErrorCode } from './responder/errors.ts';
export type { Channel, CloseReason, SessionStats, SessionSummary } from './responder/session.ts';
// crypto (ev: values, keyring)
export { encryptValue, decryptToken, decryptTokenDetailed, parseEv, formatEv, isEvToken, EvEncryptor, ROLE_PATTERN } from './crypto/ev-format.ts';
export type { EvToken, EvType, EvVersion, EvCurve, EvValue, EvMetadata, EncryptionPublicKey, EncryptOptions, DecryptedValue } from './crypto/ev-format.ts';
export { decryptJsonTokens, decryptHeaderValue, walkDecrypt, walkEncrypt, encryptJsonText } from './crypto/json-decrypt.ts';
export { Keyring, KeyMaterial, loadKeyring, devKeySource, encryptedFileKeySource, sealKeyMaterial, unsealKeyMaterial, encodeAttestationPublicKey } from './crypto/keyring.ts';
export type { KeySource, PublicKeys } from './crypto/keyring.ts';
export { EvFormatError, EvDecryptError, KeyringError } from './crypto/errors.ts';
// local API (127.0.0.1:9999)
export { startApiServer, API_HOST, API_PORT } from './api/server.ts';
export type { ApiServer, ApiServerOptions } from './api/server.ts';
export { ApiError } from './api/errors.ts';
export { appFieldDigest, APP_FIELD_LABELS, type AppField } from './api/app-fields.ts';
// attestation (browser-safe parts also from ./attestation/index.ts)
export * from './attestation/index.ts';
export { createDeviceNsm, NSM_MAX_RANDOM_BYTES, type NsmIoctl } from './attestation/nsm-device.ts';
export { createNsmSimulator, simulatorPcrs } from './attestation/simulator.ts';
export type { NsmSimulator, NsmSimulatorOptions, SimulatorIdentity, DocumentTweak } from './attestation/simulator.ts';
export { NSM_MAX_REQUEST_BYTES, NSM_RESPONSE_BUFFER_BYTES, NSM_MAX_USER_DATA, NSM_MAX_NONCE, NSM_MAX_PUBLIC_KEY } from './attestation/nsm-messages.ts';
