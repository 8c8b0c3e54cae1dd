// Public API of the agent package. Modules add their exports here as they land.
export { AgentError, isAgentError } from './errors.ts';
