// Text that came from a peer (a document's module_id, a certificate's subject, an error quoting them) printed on
// a terminal: control characters (C0, DEL, C1) become \uXXXX, so a hostile document cannot move the cursor, hide
// the real verdict (ESC[8m) or start a line of its own (CR, LF) in what a person reads. Browser-safe.

// eslint-disable-next-line no-control-regex -- matching them is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

export function printable(text: string): string {
  return text.replace(CONTROL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
