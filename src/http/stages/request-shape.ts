// Stage: what the http.Server path takes that the app must not see as it came (the fast paths never take
// either). Runs after the transaction log's stage, so a refusal has its record; originFormStage puts a target it
// can take in origin-form earlier, before the agent's own endpoints, so that they answer it as they answer its
// origin-form (else `GET http://a/.well-known/attestation` reached the app).
//   - A target in absolute-form (`http://host/path`, which Node's parser takes) becomes origin-form, and its
//     authority the request's only Host: the agent is the origin server its clients talk to (RFC 9112
//     §3.2.2), and an app handed `http://other/x` beside `Host: a` sees two hosts for one request. A target
//     with userinfo or without a host is refused, 400 (RFC 9110 §4.2.4). Origin-form targets are not touched.
//   - A Transfer-Encoding other than `chunked` alone (`gzip, chunked`: Node undoes only the chunked framing,
//     and the app would get still-coded bytes with nothing saying so) is refused, 501 (RFC 9112 §6.1).
import type { IncomingMessage } from 'node:http';
import type { Exchange, Stage } from '../exchange.ts';
import { HttpModeError } from '../errors.ts';
import { setHeader } from '../headers.ts';

const ABSOLUTE_FORM = /^https?:\/\/([^/?#@]+)(?=[/?#]|$)([^#]*)/i;

/** True for a target the app would not take as it came (absolute-form, or anything else not origin-form). */
function notOriginForm(url: string, method: string | undefined): boolean {
  return url.charCodeAt(0) !== 0x2f && url !== '*' && method !== 'CONNECT';
}

/** Puts an absolute-form target in origin-form, its authority the only Host; false if it cannot be (kept as it is). */
function toOriginForm(ex: Exchange, req: IncomingMessage, url: string): boolean {
  const m = ABSOLUTE_FORM.exec(url);
  if (m === null) return false;
  const rest = m[2]!;
  req.url = rest.startsWith('/') ? rest : `/${rest}`;
  setHeader(ex.upstreamHeaders, 'host', m[1]!);
  return true;
}

/** Before the agent's endpoints: an absolute-form target they would answer in origin-form reaches them so. */
export function originFormStage(): Stage {
  return (ex, next) => {
    const req = ex.req as IncomingMessage;
    const url = req.url ?? '/';
    if (notOriginForm(url, req.method)) toOriginForm(ex, req, url);
    return next();
  };
}

/**
 * Why the stage refuses a request's shape, else null: a target it cannot put in origin-form (400), and, when the body
 * comes with a Transfer-Encoding (`coded`), a coding other than `chunked` alone (501). Reads the request, changes
 * nothing: also run before a request with `Expect: 100-continue` is answered 100 (forwarder.ts), so a client whose
 * request is refused is not invited to send its body.
 */
export function requestShapeRefusal(req: IncomingMessage, coded: boolean): HttpModeError | null {
  const url = req.url ?? '/';
  if (notOriginForm(url, req.method) && ABSOLUTE_FORM.exec(url) === null) {
    return new HttpModeError('HTTP_BAD_REQUEST', 400, 'expected a request target in origin-form, or absolute-form http(s)://host/path without userinfo');
  }
  const te = coded ? req.headers['transfer-encoding'] : undefined;
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked') {
    return new HttpModeError('HTTP_UNSUPPORTED_TRANSFER_CODING', 501, 'expected Transfer-Encoding: chunked alone; other transfer codings are not relayed');
  }
  return null;
}

export function requestShapeStage(): Stage {
  return (ex, next) => {
    const req = ex.req as IncomingMessage;
    // A body without a declared length came with a Transfer-Encoding (forwarder.ts newExchange).
    const refused = requestShapeRefusal(req, ex.body !== null && ex.bodyLength === null);
    if (refused !== null) throw refused;
    const url = req.url ?? '/';
    if (notOriginForm(url, req.method)) toOriginForm(ex, req, url);
    return next();
  };
}
