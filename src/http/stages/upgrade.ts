// Stage: Upgrade requests (WebSocket). undici's pool does not tunnel, so the agent opens a raw TCP
// connection to the app, writes the request head (with the stages' header changes), and reads the app's
// response head. On 101 the request id is added to it, the bytes the client sent after its head are
// written, and both directions are piped raw, half-closes included. On any other status the response is
// relayed with `Connection: close` and no byte the client sent after its head reaches the app — neither
// those that came with the head nor later ones: a keep-alive app that does not speak WebSocket would parse
// them as its next request, one that never passed the stages (request id, client address, decryption,
// body limit, transaction log). The app connection is then closed (half-closed at once, destroyed if the
// app has not finished its answer within the timeout).
import type { PairEnd } from '../duplex-pair.ts';
import net from 'node:net';
import type { Stage } from '../exchange.ts';
import { endToEndHeaders, removeHeader, serializeHeaders } from '../headers.ts';
import type { HeaderList } from '../headers.ts';
import { HttpModeError } from '../errors.ts';

export interface UpgradeOptions {
  host: string;
  port: number;
  /** Time to connect and to receive the app's response head (ms). */
  timeoutMs: number;
  /** Largest response head accepted from the app (default 64 KiB). */
  maxHeadBytes?: number;
  /** Response headers the agent sets itself (removed from the app's head). */
  dropResponseHeaders?: ReadonlySet<string>;
}

const KEEP_FOR_UPGRADE = new Set(['upgrade']);
const KEEP_FRAMING: ReadonlySet<string> = new Set(['transfer-encoding']);
const HEAD_END = Buffer.from('\r\n\r\n');

interface ParsedHead {
  status: number;
  reason: string;
  headers: HeaderList;
}

/** A byte a reason phrase or field value may not hold (RFC 9112: HTAB, SP, VCHAR, obs-text only). */
const NOT_FIELD_TEXT = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * Parses an HTTP/1.x response head (without the final CRLF CRLF); null if malformed. The head is relayed to the
 * client as text: a bare CR or LF, a NUL or another control in a value or the reason would reach it as they
 * are (a client takes a bare LF for a line end: a header line of the app's choosing), so they are refused, as
 * the other paths refuse them (response-parser.ts, undici).
 */
function parseResponseHead(text: string): ParsedHead | null {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0] ?? '');
  if (m === null) return null;
  const reason = m[2] ?? '';
  if (NOT_FIELD_TEXT.test(reason)) return null;
  const headers: HeaderList = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0 || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(line.slice(0, colon))) return null;
    const value = line.slice(colon + 1).trim();
    if (NOT_FIELD_TEXT.test(value)) return null;
    headers.push(line.slice(0, colon), value);
  }
  return { status: Number(m[1]), reason, headers };
}

export function upgradeStage(opts: UpgradeOptions): Stage {
  const maxHead = opts.maxHeadBytes ?? 64 * 1024;
  return (ex) =>
    new Promise<void>((resolve, reject) => {
      // The upgrade path only runs on http.Server connections, whose sockets are pair ends.
      const client = ex.socket as PairEnd;
      const req = ex.req;
      // A handshake has no body. Node hands a declared body over with the bytes after the head, which the
      // app would only get after a 101, so it would wait for it; such a request is refused instead.
      const length = req.headers['content-length'];
      if (req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')) {
        reject(new HttpModeError('HTTP_BAD_REQUEST', 400, 'an Upgrade request with a body is not supported'));
        return;
      }
      const head = ex.upgradeHead ?? Buffer.alloc(0);
      const app = net.connect({ host: opts.host, port: opts.port, allowHalfOpen: true });
      app.setNoDelay(true);
      let phase: 'connecting' | 'head' | 'tunnel' | 'done' = 'connecting';
      let buffered: Buffer[] = [];
      let bufferedLen = 0;
      const timer = setTimeout(() => fail(new HttpModeError('HTTP_APP_TIMEOUT', 504, 'the app did not answer the upgrade in time')), opts.timeoutMs);

      const fail = (err: HttpModeError): void => {
        if (phase === 'tunnel' || phase === 'done') return;
        phase = 'done';
        clearTimeout(timer);
        app.destroy();
        reject(err);
      };

      app.on('error', (err: Error & { code?: string }) => {
        if (phase === 'connecting' || phase === 'head') {
          fail(new HttpModeError('HTTP_APP_UNREACHABLE', 502, 'the app is unreachable', { cause: err }));
        } else {
          client.destroy();
        }
      });
      client.once('close', () => {
        if (phase !== 'tunnel') {
          clearTimeout(timer);
          app.destroy();
          if (phase !== 'done') {
            phase = 'done';
            ex.errorCode ??= 'CLIENT_GONE';
            ex.finish();
            resolve();
          }
        }
      });

      app.once('connect', () => {
        if (phase !== 'connecting') return;
        phase = 'head';
        const headers = endToEndHeaders(ex.upstreamHeaders, { keep: KEEP_FOR_UPGRADE });
        removeHeader(headers, 'connection');
        headers.push('Connection', 'Upgrade');
        // Only the head: what follows it is held until the app has agreed to switch protocols (startTunnel).
        app.write(`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n${serializeHeaders(headers)}\r\n`, 'latin1');
        app.on('data', onHeadData);
        app.once('end', onHeadEnd);
      });

      const onHeadEnd = (): void => fail(new HttpModeError('HTTP_APP_BAD_RESPONSE', 502, 'the app closed the connection before answering the upgrade'));

      const onHeadData = (chunk: Buffer): void => {
        buffered.push(chunk);
        bufferedLen += chunk.length;
        let all = buffered.length === 1 ? chunk : Buffer.concat(buffered, bufferedLen);
        for (;;) {
          const end = all.indexOf(HEAD_END);
          if (end < 0) break;
          const parsed = parseResponseHead(all.subarray(0, end).toString('latin1'));
          if (parsed === null || parsed.status < 100) {
            fail(new HttpModeError('HTTP_APP_BAD_RESPONSE', 502, 'the app sent a malformed response to the upgrade'));
            return;
          }
          all = all.subarray(end + HEAD_END.length);
          // Interim answers (100 Continue, 103 Early Hints) are not relayed; the final one follows.
          if (parsed.status < 200 && parsed.status !== 101) continue;
          app.removeListener('data', onHeadData);
          app.removeListener('end', onHeadEnd);
          clearTimeout(timer);
          buffered = [];
          startTunnel(parsed, all);
          return;
        }
        buffered = [all];
        bufferedLen = all.length;
        if (bufferedLen > maxHead) fail(new HttpModeError('HTTP_APP_BAD_RESPONSE', 502, `the app's response head exceeds ${maxHead} bytes`));
      };

      const startTunnel = (parsed: ParsedHead, rest: Buffer): void => {
        phase = 'tunnel';
        const upgraded = parsed.status === 101;
        let headers = parsed.headers;
        for (const name of opts.dropResponseHeaders ?? []) removeHeader(headers, name);
        if (!upgraded) {
          // The answer's bytes are relayed as they are (then the connection closes): its framing stays with them.
          headers = endToEndHeaders(headers, { keep: KEEP_FRAMING });
          headers.push('Connection', 'close');
        }
        headers.push(...ex.responseHeaders);
        ex.sentStatus = parsed.status;
        ex.sentHeaders = headers;
        client.write(`HTTP/1.1 ${parsed.status} ${parsed.reason}\r\n${serializeHeaders(headers)}\r\n`, 'latin1');
        if (rest.length > 0) {
          ex.bytesOut += rest.length;
          client.write(rest);
        }

        let open = 2;
        const closed = (): void => {
          if (--open === 0) {
            phase = 'done';
            ex.finish();
            resolve();
          }
        };
        app.once('close', closed);
        client.once('close', () => {
          app.destroy();
          closed();
        });
        client.on('error', () => app.destroy());

        app.on('data', (c: Buffer) => {
          ex.bytesOut += c.length;
        });
        app.pipe(client);
        if (upgraded) {
          if (head.length > 0) {
            ex.bytesIn += head.length;
            app.write(head);
          }
          client.on('data', (c: Buffer) => {
            ex.bytesIn += c.length;
          });
          client.pipe(app);
        } else {
          // Relay the app's answer to the end, then close; the bytes the client sent after its head (`head`,
          // and whatever comes later) are dropped. An app that keeps the connection open past its answer is
          // cut after the timeout.
          app.end();
          client.resume();
          app.once('end', () => client.destroySoon());
          const cut = setTimeout(() => {
            app.destroy();
            client.destroy();
          }, opts.timeoutMs);
          app.once('close', () => clearTimeout(cut));
        }
      };
    });
}
