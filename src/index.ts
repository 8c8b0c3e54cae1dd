// Public API of the agent package. Modules add their exports here as they land.
export { AgentError, isAgentError } from './errors.ts';
// noise
export { createHandshake, DEFAULT_PROTOCOL, CipherState, NoiseError, noblePrimitives, parseProtocol } from './noise/index.ts';
export type { Handshake, HandshakeOptions, Transport, NoisePrimitives, CipherName, HashName, NoiseErrorCode } from './noise/index.ts';
export { nodePrimitives } from './noise/suite-node.ts';
