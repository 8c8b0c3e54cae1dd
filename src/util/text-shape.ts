// What an error may say about text the caller gave that may be secret (a request path can carry a token, a header
// line a credential): its length and the kind of its first character, never the text. Browser-safe.

function kind(c: string | undefined): string {
  if (c === undefined) return 'nothing';
  if (/[A-Za-z]/.test(c)) return 'a letter';
  if (/[0-9]/.test(c)) return 'a digit';
  if (/\s/.test(c)) return 'whitespace';
  // eslint-disable-next-line no-control-regex -- matching them is the point
  if (/[\u0000-\u001f\u007f-\u009f]/.test(c)) return 'a control character';
  if (c.charCodeAt(0) > 0x7f) return 'a non-ASCII character';
  return 'a symbol';
}

/** "12 characters, starting with a letter" (or "an empty string"). */
export function textShape(text: string): string {
  if (text.length === 0) return 'an empty string';
  return `${text.length} character${text.length === 1 ? '' : 's'}, starting with ${kind(text[0])}`;
}
