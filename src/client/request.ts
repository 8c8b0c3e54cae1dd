// Turns fetch-style arguments (input, init) into what goes on the wire: method, request target, the caller's
// header list (order and spelling kept where the caller's form allows) and the body, either as bytes or as an
// async source of unknown size. Browser-safe.
import { utf8 } from '../util/bytes.ts';
import { textShape } from '../util/text-shape.ts';
import { ClientError } from './errors.ts';
import { checkHeader, checkMethod, checkPath, type HeaderList } from './http-codec.ts';

/** Headers as fetch takes them; arrays and records keep the caller's spelling (a Headers object lowercases). */
export type HeadersLike = Headers | [string, string][] | Record<string, string>;

/** Anything `fetch` takes as a body, plus async iterables, and plain objects/arrays (sent as JSON). */
export type BodyLike =
  | string
  | Uint8Array
  | ArrayBuffer
  | ArrayBufferView
  | Blob
  | URLSearchParams
  | FormData
  | ReadableStream<Uint8Array | string>
  | AsyncIterable<Uint8Array | string>
  | Record<string, unknown>
  | unknown[]
  | null;

export type Transport = 'auto' | 'data' | 'stream';

export interface ClientRequestInit {
  /** Default GET. Standard methods are upper-cased like fetch does; others go as given. */
  method?: string;
  headers?: HeadersLike;
  body?: BodyLike;
  /** Sent as JSON with `Content-Type: application/json` (unless given), like the reference client's `json()`. */
  json?: unknown;
  signal?: AbortSignal | null;
  /** Abort the whole exchange (response body included) after this many ms: CLIENT_TIMEOUT. */
  timeoutMs?: number;
  /**
   * 'data': one Data message (compat; the request and the response must each fit one frame).
   * 'stream': OpenStream (any size). 'auto' (default): stream when the agent advertises `bstr`, else Data when the
   * request fits one frame, else stream.
   */
  transport?: Transport;
  /** Accepted for fetch compatibility; bodies always stream half-duplex. */
  duplex?: 'half';
}

export type RequestBody = { kind: 'none' } | { kind: 'bytes'; bytes: Uint8Array } | { kind: 'stream'; source: AsyncIterable<Uint8Array> };

export interface NormalizedRequest {
  method: string;
  path: string;
  headers: HeaderList;
  body: RequestBody;
}

const NORMALIZED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH']);

function bad(message: string): ClientError {
  return new ClientError('CLIENT_BAD_OPTIONS', message);
}

/** The request target of `input`: a path ("/a?b") as given, or the path and query of an absolute URL. */
export function requestTarget(input: string | URL | { url: string }): string {
  if (typeof input === 'string') {
    if (input.startsWith('/') || input === '*') return input;
    // Never quoted: a path or URL may carry a token.
    if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(input)) {
      let u: URL;
      try {
        u = new URL(input);
      } catch {
        throw bad(`path: an absolute URL that does not parse (${textShape(input)})`);
      }
      return u.pathname + u.search;
    }
    throw bad(`path: expected "/..." or an absolute URL, found ${textShape(input)}`);
  }
  if (input instanceof URL) return input.pathname + input.search;
  if (input !== null && typeof input === 'object' && typeof input.url === 'string') return requestTarget(input.url);
  throw bad('path: expected a string, a URL or a Request');
}

export function headerList(h: HeadersLike | undefined): HeaderList {
  if (h === undefined || h === null) return [];
  const out: HeaderList = [];
  if (typeof Headers !== 'undefined' && h instanceof Headers) {
    h.forEach((v, k) => out.push([k, v]));
  } else if (Array.isArray(h)) {
    for (const pair of h) {
      if (!Array.isArray(pair) || pair.length !== 2) throw bad('headers: expected [name, value] pairs');
      out.push([String(pair[0]), String(pair[1])]);
    }
  } else if (typeof h === 'object') {
    for (const [k, v] of Object.entries(h)) out.push([k, String(v)]);
  } else throw bad('headers: expected a Headers object, [name, value] pairs or a record');
  for (const [k, v] of out) checkHeader(k, v);
  return out;
}

function has(headers: HeaderList, lower: string): boolean {
  return headers.some(([k]) => k.toLowerCase() === lower);
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return x !== null && typeof x === 'object' && typeof (x as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === 'function';
}

function isReadableStream(x: unknown): x is ReadableStream<unknown> {
  return typeof ReadableStream !== 'undefined' && x instanceof ReadableStream;
}

function chunkBytes(chunk: unknown): Uint8Array {
  if (typeof chunk === 'string') return utf8.encode(chunk);
  if (chunk instanceof Uint8Array) return chunk;
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw bad(`body: a streamed chunk must be bytes or a string, found ${chunk === null ? 'null' : typeof chunk}`);
}

async function* fromReadable(stream: ReadableStream<unknown>): AsyncIterable<Uint8Array> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield chunkBytes(value);
    }
  } finally {
    reader.releaseLock();
  }
}

async function* fromAsyncIterable(it: AsyncIterable<unknown>): AsyncIterable<Uint8Array> {
  for await (const chunk of it) yield chunkBytes(chunk);
}

function isPlainJson(x: unknown): boolean {
  if (Array.isArray(x)) return true;
  if (x === null || typeof x !== 'object') return false;
  const proto = Object.getPrototypeOf(x) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Body → wire form; adds the Content-Type that the body kind implies (JSON, form, Blob type) unless given. */
async function normalizeBody(init: ClientRequestInit, headers: HeaderList): Promise<RequestBody> {
  const setType = (type: string): void => {
    if (type !== '' && !has(headers, 'content-type')) headers.push(['Content-Type', type]);
  };
  if (init.json !== undefined) {
    if (init.body !== undefined && init.body !== null) throw bad('give either body or json, not both');
    const text = JSON.stringify(init.json);
    if (text === undefined) throw bad('json: the value does not serialise to JSON');
    setType('application/json');
    return { kind: 'bytes', bytes: utf8.encode(text) };
  }
  const b: unknown = init.body;
  if (b === undefined || b === null) return { kind: 'none' };
  if (typeof b === 'string') return { kind: 'bytes', bytes: utf8.encode(b) };
  if (b instanceof Uint8Array) return { kind: 'bytes', bytes: b };
  if (b instanceof ArrayBuffer) return { kind: 'bytes', bytes: new Uint8Array(b) };
  if (ArrayBuffer.isView(b)) return { kind: 'bytes', bytes: new Uint8Array(b.buffer, b.byteOffset, b.byteLength) };
  if (typeof URLSearchParams !== 'undefined' && b instanceof URLSearchParams) {
    setType('application/x-www-form-urlencoded;charset=UTF-8');
    return { kind: 'bytes', bytes: utf8.encode(b.toString()) };
  }
  if (typeof Blob !== 'undefined' && b instanceof Blob) {
    setType(b.type);
    return { kind: 'bytes', bytes: new Uint8Array(await b.arrayBuffer()) };
  }
  if (typeof FormData !== 'undefined' && b instanceof FormData) {
    // Let the platform build the multipart body and its boundary.
    const r = new Response(b);
    setType(r.headers.get('content-type') ?? '');
    return { kind: 'bytes', bytes: new Uint8Array(await r.arrayBuffer()) };
  }
  if (isReadableStream(b)) return { kind: 'stream', source: fromReadable(b) };
  if (isAsyncIterable(b)) return { kind: 'stream', source: fromAsyncIterable(b) };
  if (isPlainJson(b)) {
    setType('application/json');
    return { kind: 'bytes', bytes: utf8.encode(JSON.stringify(b)) };
  }
  throw bad(`body: unsupported type ${Object.prototype.toString.call(b)}`);
}

export async function normalizeRequest(input: string | URL | Request, init: ClientRequestInit = {}): Promise<NormalizedRequest> {
  let method = init.method;
  let headersInit = init.headers;
  let bodyInit = init;
  if (typeof Request !== 'undefined' && input instanceof Request) {
    method ??= input.method;
    headersInit ??= input.headers;
    if (init.body === undefined && init.json === undefined && input.body !== null) bodyInit = { ...init, body: input.body };
  }
  method = method ?? 'GET';
  checkMethod(method);
  if (NORMALIZED_METHODS.has(method.toUpperCase())) method = method.toUpperCase();
  const path = requestTarget(input);
  checkPath(path);
  const headers = headerList(headersInit);
  const body = await normalizeBody(bodyInit, headers);
  return { method, path, headers, body };
}
