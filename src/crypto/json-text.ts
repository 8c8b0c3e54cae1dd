// Whether a request body is JSON, as the HTTP decrypt stage asks it before scanning for ev: values: a strict
// UTF-8 decode and a JSON.parse of the whole body. Both are O(body) and, for an 8 MiB body, hold a thread for
// a few hundred ms, so DecryptScheduler hands large bodies to its pool (decrypt-worker.ts runs this there).
// Nesting is checked before JSON.parse runs: V8 parses deeply nested arrays 10–20× slower per byte (64 KiB of
// `[[[…]]]` 10–15 ms against 1.4 ms nested at most MAX_DEPTH, below the pool's threshold, so on the event loop
// and without a budget slot; 8 MiB 2.8 s of a pool worker against 0.37 s flat). Such a body is not JSON here.
import { MAX_DEPTH, nestedWithin } from './json-lex.ts';

const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Valid JSON text (a leading BOM tolerated and kept, RFC 8259 §8.1), or null when not valid UTF-8 JSON or nested
 * deeper than MAX_DEPTH levels (not parsed then).
 */
export function jsonText(bytes: Uint8Array): string | null {
  let text: string;
  try {
    text = UTF8_STRICT.decode(bytes);
  } catch {
    return null;
  }
  const json = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  if (!nestedWithin(json, MAX_DEPTH)) return null;
  try {
    JSON.parse(json);
  } catch {
    return null;
  }
  return text;
}

/**
 * `bytes` as a view of a whole ArrayBuffer of its own, to transfer to another thread: as it is when `owned`
 * (the caller gives it up) and it already spans its buffer, else one exact copy (the caller keeps its bytes).
 * Transferred, not shared: a SharedArrayBuffer lives until every thread that saw it collects garbage, and a
 * thread that only relays (the main thread, for a session worker) rarely does — 8 MiB bodies piled up there.
 */
export function transferableBytes(bytes: Uint8Array, owned = false): Uint8Array<ArrayBuffer> {
  const buf = bytes.buffer;
  if (owned && buf instanceof ArrayBuffer && bytes.byteOffset === 0 && bytes.byteLength === buf.byteLength) return bytes as Uint8Array<ArrayBuffer>;
  return new Uint8Array(bytes);
}
