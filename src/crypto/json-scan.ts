// Walking the strings of a JSON text in bounded steps. Every scanner of request bodies (counting ev: values,
// decrypting them) moves through the text with a JsonStrings cursor and yields to its DecryptScheduler every
// SCAN_STEP_STRINGS strings, so a body of any size, however many of its strings look like ev: values, is
// examined in slices: the event loop runs other requests' callbacks between them.
import { tryParseEv } from './ev-parse.ts';
import type { EvToken } from './ev-parse.ts';
import { followedByColon, stringEnd } from './json-lex.ts';

/** JSON strings one step examines at most (each: a lexical check, and a parse when it is a candidate). */
export const SCAN_STEP_STRINGS = 256;

/** Cursor over the strings of a JSON text (assumed valid): `q`/`e` are the quotes of the current one. */
export class JsonStrings {
  q = -1;
  e = -1;
  #from = 0;

  constructor(readonly json: string) {}

  /** Moves to the next string; false at the end of the text. */
  next(): boolean {
    const q = this.json.indexOf('"', this.#from);
    const e = q < 0 ? -1 : stringEnd(this.json, q);
    if (e < 0) return false;
    this.q = q;
    this.e = e;
    this.#from = e + 1;
    return true;
  }

  /**
   * True when the current string could be an ev: value: its raw content starts with `ev:` and ends with `$`
   * (no parse). Every string decryption opens is one; so are near-tokens such as "ev:Tk9D:A:A:A:$".
   */
  candidate(): boolean {
    const { json, q, e } = this;
    return e - q >= 10 && json.charCodeAt(q + 1) === 0x65 /* e */ && json.charCodeAt(q + 2) === 0x76 /* v */ && json.charCodeAt(q + 3) === 0x3a /* : */ && json.charCodeAt(e - 1) === 0x24 /* $ */;
  }

  /** The current string as a token (JSON escapes such as PHP's `\/` decoded first), or null. Never throws. */
  token(): EvToken | null {
    if (!this.candidate()) return null;
    let content = this.json.slice(this.q + 1, this.e);
    if (content.includes('\\')) {
      try {
        content = JSON.parse(this.json.slice(this.q, this.e + 1)) as string;
      } catch {
        return null;
      }
    }
    return tryParseEv(content);
  }

  /**
   * candidate(), for a value only: false when the current string is an object key. A key is structure (it
   * reaches route tables and logs as a name), so an `ev:` key is left as it is; only values are decrypted.
   */
  valueCandidate(): boolean {
    return this.candidate() && !followedByColon(this.json, this.e + 1);
  }

  /** token(), for a value only: null when the current string is an object key (valueCandidate). */
  valueToken(): EvToken | null {
    return this.valueCandidate() ? this.token() : null;
  }
}

/** False when no string of `json` can be a candidate (none starts with `ev:`): one native search, no steps. */
export function mayHoldCandidates(json: string): boolean {
  return json.indexOf('"ev:') >= 0;
}

/**
 * How many string values of `json` are ev: candidates (valid or not), in steps of SCAN_STEP_STRINGS strings;
 * stops once the count exceeds `stopAfter`. The cap on ev: values per request counts these: a body of strings
 * that look like values costs no more than a body of values. Object keys are not counted: they are never
 * decrypted (valueCandidate), so a body of `ev:`-looking keys costs no ECDH and is no reason to refuse it.
 */
export function* countJsonCandidateSteps(json: string, stopAfter = Infinity): Generator<void, number, void> {
  if (!mayHoldCandidates(json)) return 0;
  const s = new JsonStrings(json);
  let count = 0;
  for (let seen = 1; s.next(); seen++) {
    if (s.valueCandidate() && ++count > stopAfter) return count;
    if (seen % SCAN_STEP_STRINGS === 0) yield;
  }
  return count;
}
