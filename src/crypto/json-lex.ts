// Lexical helpers shared by the JSON scanners. They assume JSON's string grammar: a string starts at
// an unescaped `"` outside any string and ends at the next `"` preceded by an even number of backslashes.

/** Index of the closing quote of the string opening at `open`, or -1 when unterminated. */
export function stringEnd(text: string, open: number): number {
  let e = open + 1;
  for (;;) {
    e = text.indexOf('"', e);
    if (e < 0) return -1;
    let k = e - 1;
    while (text.charCodeAt(k) === 92 /* \ */) k--;
    if ((e - 1 - k) % 2 === 0) return e;
    e++;
  }
}

/** True when the first non-whitespace character at or after `from` is `:` (the string was an object key). */
export function followedByColon(text: string, from: number): boolean {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) continue;
    return c === 0x3a;
  }
  return false;
}

/**
 * Nesting limit for JSON the agent reads: walks of decoded values stop there (JSON.parse accepts nesting deep
 * enough to overflow recursion), and a request body nested deeper is not JSON to the agent (json-text.ts).
 */
export const MAX_DEPTH = 512;

/**
 * False when an array or object of `text` opens more than `max` levels deep (strings skipped; text that is not
 * JSON gets an answer too, meaningful for JSON only). One pass, stopping at the first level past `max`.
 */
export function nestedWithin(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const e = stringEnd(text, i);
      if (e < 0) return true;
      i = e;
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > max) return false;
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) {
      depth--;
    }
  }
  return true;
}
