// Tells a connection that opens with an HTTP request ("POST / HTTP/1.1") from one that opens with a JSON line.
// Any web page can send HTTP to a loopback TCP port (fetch with mode "no-cors", a form with
// enctype="text/plain"), and a line-based listener would take the lines of its body for its own. Decided on the
// first bytes — the method token and the space after it — so a request line too long to read whole is told too.

/** Longer than any HTTP method a browser sends. */
const MAX_METHOD = 16;

/** true: the bytes open an HTTP request; false: they do not; null: too few bytes yet to tell. */
export function opensHttpRequest(head: Uint8Array): boolean | null {
  for (let i = 0; i < head.length && i <= MAX_METHOD; i++) {
    const b = head[i]!;
    if (b === 0x20) return i > 0;
    if (b < 0x41 || b > 0x5a) return false; // methods are capitals: A-Z
  }
  return head.length > MAX_METHOD ? false : null;
}
