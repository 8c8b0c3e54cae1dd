// The request head an HTTP client sends its proxy: the request line and header lines up to the blank line.
// Read incrementally (bounded, no regular expression over the whole head), bytes after it left in the stream.
import type { Duplex } from 'node:stream';
import { EgressError } from './errors.ts';

export const MAX_HEAD_BYTES = 64 * 1024;

export interface ProxyHead {
  method: string;
  target: string;
  version: string;
  /** [name, value] in order, names as sent. */
  headers: [string, string][];
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Whether `line` holds a control character other than HTAB: a bare CR or LF (a line end to lenient servers), NUL, DEL. */
function hasControl(line: string): boolean {
  for (let i = 0; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}

export function parseHead(text: string): ProxyHead {
  const lines = text.split('\r\n');
  // Lines end in CRLF only: a lone LF or CR inside one would end a line for a lenient upstream (Python's
  // http.server does), and whatever follows — another Host, a second request — would reach it unchecked.
  // Errors say which line, never what it holds: the app's head carries its credentials, query values and cookies,
  // and the message goes back in the 400 body (and may be logged by whoever reads it).
  const bad = lines.findIndex(hasControl);
  if (bad >= 0) throw new EgressError('EGRESS_BAD_FRAME', `control character (CR, LF, NUL or DEL) inside line ${bad + 1} of the request head`);
  const parts = lines[0]!.split(' ');
  if (parts.length !== 3 || !TOKEN.test(parts[0]!) || parts[1] === '' || !/^HTTP\/1\.[01]$/.test(parts[2]!)) {
    throw new EgressError('EGRESS_BAD_FRAME', `bad request line (${parts.length} space-separated parts): expected "METHOD target HTTP/1.1"`);
  }
  const headers: [string, string][] = [];
  for (const [i, line] of lines.entries()) {
    if (i === 0 || line === '') continue;
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) throw new EgressError('EGRESS_BAD_FRAME', `bad header line ${i + 1}: no header name (a token) before ":"`);
    headers.push([name, line.slice(colon + 1).trim()]);
  }
  return { method: parts[0]!, target: parts[1]!, version: parts[2]!, headers };
}

/** Reads up to the blank line; the bytes after it are put back into the stream. */
export function readHead(stream: Duplex, timeoutMs: number): Promise<ProxyHead> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: Error | null, head?: ProxyHead): void => {
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      if (err) reject(err);
      else resolve(head!);
    };
    const onEnd = (): void => done(new EgressError('EGRESS_BAD_FRAME', 'the client closed before the end of its request head'));
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = stream.read() as Buffer | null) !== null) {
        const from = Math.max(0, buf.length - 3);
        buf = Buffer.concat([buf, chunk]);
        const end = buf.indexOf('\r\n\r\n', from);
        if (end >= 0) {
          if (end + 4 < buf.length) stream.unshift(buf.subarray(end + 4));
          try {
            done(null, parseHead(buf.subarray(0, end).toString('latin1')));
          } catch (err) {
            done(err as Error);
          }
          return;
        }
        if (buf.length > MAX_HEAD_BYTES) {
          done(new EgressError('EGRESS_BAD_FRAME', `request head larger than ${MAX_HEAD_BYTES} bytes`));
          return;
        }
      }
    };
    const timer = setTimeout(() => done(new EgressError('EGRESS_FRAME_TIMEOUT', `no complete request head within ${timeoutMs} ms`)), timeoutMs);
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    onReadable();
  });
}
