// Header lists as flat arrays `[name, value, name, value, ...]` — the shape of `req.rawHeaders`, of undici's
// raw response headers and of what `res.writeHead` accepts — so order, case and duplicates (Set-Cookie)
// survive the trip. Names are compared case-insensitively.

/** Flat `[name, value, ...]` list. */
export type HeaderList = string[];

/** Hop-by-hop fields (RFC 9110 §7.6.1, plus the legacy ones proxies drop) and `Expect`, which is per hop here. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'trailer', 'upgrade', 'expect']);

/** `name` is `lower` (already lower-case), ignoring case; the length is compared first (most names differ there). */
export function isHeader(name: string, lower: string): boolean {
  return name.length === lower.length && (name === lower || name.toLowerCase() === lower);
}

const EMPTY: ReadonlySet<string> = new Set();

/** Token sets of single Connection values seen before (`close`, `keep-alive`, ...), bounded. */
const knownTokens = new Map<string, ReadonlySet<string>>();
const MAX_KNOWN_TOKENS = 64;

function tokensOf(value: string, into: Set<string> | null): Set<string> | null {
  for (const t of value.split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '') (into ??= new Set<string>()).add(token);
  }
  return into;
}

/** Lower-cased tokens of every Connection header in the list (a shared empty set when there is none). */
export function connectionTokens(list: HeaderList): ReadonlySet<string> {
  let out: Set<string> | null = null;
  let only: string | null = null;
  let count = 0;
  for (let i = 0; i < list.length; i += 2) {
    if (!isHeader(list[i]!, 'connection')) continue;
    count++;
    if (count === 1) only = list[i + 1]!;
    else {
      if (count === 2) out = tokensOf(only!, out);
      out = tokensOf(list[i + 1]!, out);
    }
  }
  if (count === 0) return EMPTY;
  if (count > 1) return out ?? EMPTY;
  // One Connection header (the usual case): its set is shared by every list with the same value. Callers
  // only read it.
  const known = knownTokens.get(only!);
  if (known !== undefined) return known;
  const tokens: ReadonlySet<string> = tokensOf(only!, null) ?? EMPTY;
  if (knownTokens.size < MAX_KNOWN_TOKENS) knownTokens.set(only!, tokens);
  return tokens;
}

/** Bit `min(length, 31)` set for each name: a name whose bit is clear is certainly not in `names`. */
function lengthMask(names: ReadonlySet<string>): number {
  let mask = 0;
  for (const n of names) mask |= 1 << Math.min(n.length, 31);
  return mask;
}

const HOP_BY_HOP_MASK = lengthMask(HOP_BY_HOP);

/**
 * Copy of `list` without hop-by-hop fields and without the fields the Connection header names.
 * `keep` names hop-by-hop fields to retain (the upgrade path keeps `upgrade`); `drop` adds names to remove.
 */
export function endToEndHeaders(list: HeaderList, opts: { keep?: ReadonlySet<string>; drop?: ReadonlySet<string> } = {}): HeaderList {
  const named = connectionTokens(list);
  const drop = opts.drop ?? EMPTY;
  // A name whose length matches no hop-by-hop, Connection-named or dropped name is copied without being
  // lower-cased and looked up.
  const lengths = HOP_BY_HOP_MASK | lengthMask(named) | lengthMask(drop);
  const out: HeaderList = [];
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    if ((lengths & (1 << Math.min(name.length, 31))) !== 0) {
      const lower = name.toLowerCase();
      const hop = HOP_BY_HOP.has(lower) || named.has(lower);
      if ((hop && !(opts.keep?.has(lower) ?? false)) || drop.has(lower)) continue;
    }
    out.push(name, list[i + 1]!);
  }
  return out;
}

/** Values of `name` (lower-case) in order. */
export function getHeaders(list: HeaderList, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < list.length; i += 2) if (isHeader(list[i]!, name)) out.push(list[i + 1]!);
  return out;
}

/** First value of `name` (lower-case), or undefined. */
export function getHeader(list: HeaderList, name: string): string | undefined {
  for (let i = 0; i < list.length; i += 2) if (isHeader(list[i]!, name)) return list[i + 1];
  return undefined;
}

/** Removes every field called `name` (lower-case) in place. */
export function removeHeader(list: HeaderList, name: string): void {
  let w = 0;
  for (let r = 0; r < list.length; r += 2) {
    if (isHeader(list[r]!, name)) continue;
    list[w] = list[r]!;
    list[w + 1] = list[r + 1]!;
    w += 2;
  }
  list.length = w;
}

/**
 * Removes, in place, every field whose name has an underscore and reads as one of `names` (lower-case, with
 * dashes) once `_` is taken for `-`: CGI and WSGI servers (and frameworks on them) hand `X_Forwarded_For` and
 * `X-Forwarded-For` to the app as the same variable, so a header the agent sets or strips must not reach the
 * app under that alias.
 */
export function removeUnderscoreAliases(list: HeaderList, names: ReadonlySet<string>): void {
  let w = 0;
  for (let r = 0; r < list.length; r += 2) {
    const name = list[r]!;
    if (name.includes('_') && names.has(name.toLowerCase().replaceAll('_', '-'))) continue;
    list[w] = name;
    list[w + 1] = list[r + 1]!;
    w += 2;
  }
  list.length = w;
}

/** Lower-case header names with their lengthMask, and name prefixes, made once for removeHeaders. */
export interface HeaderNames {
  readonly names: ReadonlySet<string>;
  readonly lengths: number;
  /** Lower-case prefixes (with dashes): a longer name that starts with one is removed too. */
  readonly prefixes: readonly string[];
  /** Lower-case first character codes of the prefixes: other names are not lower-cased for them. */
  readonly prefixStarts: ReadonlySet<number>;
}

export function headerNames(names: Iterable<string>, prefixes: readonly string[] = []): HeaderNames {
  const set = new Set(names);
  const lower = prefixes.map((p) => p.toLowerCase());
  return { names: set, lengths: lengthMask(set), prefixes: lower, prefixStarts: new Set(lower.map((p) => p.charCodeAt(0))) };
}

/** A prefix of `prefixes` starts `lower` and is shorter than it. */
function hasPrefix(lower: string, prefixes: readonly string[]): boolean {
  for (const p of prefixes) if (lower.length > p.length && lower.startsWith(p)) return true;
  return false;
}

/**
 * Removes, in one pass and in place, every field whose name is in `names` (lower-case) or starts with one of
 * `prefixes`, and every underscore alias of one (removeUnderscoreAliases). A name whose length no member has
 * and whose first letter no prefix has is kept without being lower-cased.
 */
export function removeHeaders(list: HeaderList, { names, lengths, prefixes, prefixStarts }: HeaderNames): void {
  let w = 0;
  for (let r = 0; r < list.length; r += 2) {
    const name = list[r]!;
    const byLength = (lengths & (1 << Math.min(name.length, 31))) !== 0;
    // `| 0x20` lower-cases an ASCII letter (names are tokens; a non-letter start matches no prefix letter).
    if (byLength || prefixStarts.has(name.charCodeAt(0) | 0x20)) {
      const lower = name.toLowerCase();
      const dashed = lower.includes('_') ? lower.replaceAll('_', '-') : lower;
      if ((byLength && (names.has(lower) || names.has(dashed))) || hasPrefix(dashed, prefixes)) continue;
    }
    list[w] = name;
    list[w + 1] = list[r + 1]!;
    w += 2;
  }
  list.length = w;
}

/** Replaces every field called `name` (lower-case) with one `name: value` at the end. */
export function setHeader(list: HeaderList, name: string, value: string): void {
  removeHeader(list, name);
  list.push(name, value);
}

/** `Name: value\r\n` lines for a hand-written HTTP head. Values come from Node's or undici's parser, or from us. */
export function serializeHeaders(list: HeaderList): string {
  let out = '';
  for (let i = 0; i < list.length; i += 2) out += `${list[i]!}: ${list[i + 1]!}\r\n`;
  return out;
}
