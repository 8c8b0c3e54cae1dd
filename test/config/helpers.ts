import { isAgentError } from '../../src/errors.ts';

/** The code and message of the AgentError `fn` throws; rethrows anything else, fails if it does not throw. */
export function errorOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (err) {
    if (isAgentError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a ConfigError');
}
