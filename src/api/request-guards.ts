// What every local-API request must look like before any route runs. The API binds 127.0.0.1 only, but a browser
// on the same machine (a developer's, or anything an app embeds) can still be made to send it requests:
//   - DNS rebinding: evil.example resolves to 127.0.0.1, so the page's requests are same-origin to the browser and
//     readable by the page; only the Host header (evil.example:9999) gives them away → Host must name loopback.
//   - Cross-site requests (forms, fetch no-cors): browsers add Origin to every cross-origin POST and to CORS
//     requests; the app's own clients (curl, SDKs, server code) never send it → any Origin is refused.
//   - A "simple" cross-site POST can only carry text/plain, form or multipart bodies → JSON routes require
//     Content-Type application/json (parameters such as charset allowed).
import type http from 'node:http';
import { ApiError } from './errors.ts';

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost'];

function quoted(v: string): string {
  return JSON.stringify(v.slice(0, 64));
}

/** Host must be exactly 127.0.0.1:<port> or localhost:<port> (the port the request arrived on), given once. */
export function checkHost(req: http.IncomingMessage): void {
  const hosts = req.headersDistinct.host ?? [];
  const port = req.socket.localPort;
  const allowed = LOOPBACK_NAMES.map((h) => `${h}:${port}`);
  if (hosts.length !== 1) {
    throw new ApiError('API_FORBIDDEN_HOST', 403, `expected one Host header (${allowed.join(' or ')}), found ${hosts.length}`);
  }
  if (!allowed.includes(hosts[0]!.toLowerCase())) {
    throw new ApiError('API_FORBIDDEN_HOST', 403, `Host must be ${allowed.join(' or ')}, found ${quoted(hosts[0]!)}`);
  }
}

/** Browsers send Origin on cross-origin requests; the local API's callers never do. */
export function checkNoOrigin(req: http.IncomingMessage): void {
  const origin = req.headersDistinct.origin;
  if (origin !== undefined) {
    throw new ApiError('API_FORBIDDEN_ORIGIN', 403, `requests carrying an Origin header are refused (browser requests are not allowed), found ${quoted(origin[0] ?? '')}`);
  }
}

/** The media type of Content-Type, without parameters, must be application/json (given once). */
export function checkJsonContentType(req: http.IncomingMessage): void {
  const types = req.headersDistinct['content-type'] ?? [];
  const media = types.length === 1 ? types[0]!.split(';')[0]!.trim().toLowerCase() : undefined;
  if (media !== 'application/json') {
    const found = types.length === 0 ? 'none' : types.length > 1 ? `${types.length} headers` : quoted(types[0]!);
    throw new ApiError('API_UNSUPPORTED_MEDIA_TYPE', 415, `Content-Type must be application/json, found ${found}`);
  }
}
