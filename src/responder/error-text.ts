// What a session says about an error: a stable code for logs, a bounded message for the client's
// `Error{id, message}` — never an error's own message unless it was written to be sent (ForwardError).

/** Longest `Error.message` we send (forwarder messages are bounded here, whatever they say). */
const MAX_ERROR_TEXT = 1024;

/** The stable code of an error (AgentError code, errno code) or its class name; never its message. */
export function errorCode(err: unknown): string {
  if (err !== null && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const name = (err as { name?: unknown }).name;
    if (typeof name === 'string') return name;
  }
  return 'unknown';
}

/** ForwardError messages are written to be sent to the client; anything else is reduced to its code. */
export function forwardErrorMessage(err: unknown): string {
  if (err !== null && typeof err === 'object' && typeof (err as { code?: unknown }).code === 'string') {
    const e = err as { code: string; message?: unknown };
    if (e.code.startsWith('FORWARD_') && typeof e.message === 'string') return truncate(e.message);
    return `cannot reach the app (${e.code})`;
  }
  return 'cannot reach the app';
}

export function truncate(text: string): string {
  return text.length <= MAX_ERROR_TEXT ? text : `${text.slice(0, MAX_ERROR_TEXT - 1)}…`;
}
