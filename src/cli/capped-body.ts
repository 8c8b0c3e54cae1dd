// `fetch --json` puts the whole response body into one JSON string, so it must hold all of it; every other mode
// streams it. The cap keeps a hostile or broken enclave from growing the CLI without bound within --timeout.
import { AgentError } from '../errors.ts';
import { concatBytes } from '../util/bytes.ts';

/** The largest response body `fetch --json` holds: 16 MiB. */
export const JSON_BODY_MAX_BYTES = 16 * 1024 * 1024;

/** CLI_BODY_TOO_LARGE: a body the CLI must hold whole is over its cap; the rest was not read. */
export class BodyTooLargeError extends AgentError {
  constructor(what: string, max: number) {
    super('CLI_BODY_TOO_LARGE', `${what}: the response body is over ${max} bytes, the most held in memory; the rest was not read`);
  }
}

/** All of `body`, or BodyTooLargeError (the stream cancelled) once more than `max` bytes arrived. */
export async function readCappedBody(body: ReadableStream<Uint8Array> | null, max: number, what: string): Promise<Uint8Array> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return concatBytes(...parts);
    total += value.byteLength;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLargeError(what, max);
    }
    parts.push(value);
  }
}
