// Public API of the agent package. Modules add their exports here as they land.
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
