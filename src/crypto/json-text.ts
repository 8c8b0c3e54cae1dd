// Whether a request body is JSON, as the HTTP decrypt stage asks it before scanning for ev: values: a strict
// UTF-8 decode and a JSON.parse of the whole body. Both are O(body) and, for an 8 MiB body, hold a thread for
// a few hundred ms, so DecryptScheduler hands large bodies to its pool (decrypt-worker.ts runs this there).

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Valid JSON text (a leading BOM tolerated and kept, RFC 8259 §8.1), or null when not valid UTF-8 JSON. */
export function jsonText(bytes: Uint8Array): string | null {
  let text: string;
  try {
    text = UTF8_STRICT.decode(bytes);
  } catch {
    return null;
  }
  try {
    JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch {
    return null;
  }
  return text;
}

/**
 * `bytes` on a SharedArrayBuffer: as it is when it already is one, else one exact copy. Handed to another
 * thread (postMessage, also through a relaying thread) shared memory is not copied again, and the sender keeps
 * its own bytes (a transfer would detach them; structured clone of a view copies its whole backing buffer).
 */
export function sharedBytes(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer instanceof SharedArrayBuffer) return bytes;
  const out = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
  out.set(bytes);
  return out;
}
