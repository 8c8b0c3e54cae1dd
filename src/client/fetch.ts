// The Fetch-compatible `fetch`: one HTTP exchange over the session, resolved as a standard `Response`.
// Browser-safe.
//
// Transport (decided per request, see ClientRequestInit.transport):
// - Data (compat, what the Enclavia client does): the whole request in one `Data`, the whole response in one
//   `Data` reply. Both must fit one frame (~32 KB with int arrays), and an agent cannot deliver more.
// - Stream: `OpenStream` with the request head (+ the first body bytes), the rest of the body as `StreamData`,
//   the response read from the agent's `StreamData` until its framing (Content-Length / chunked) is complete or
//   the agent's `StreamClose` (EOF-delimited); then `StreamClose{Both}` releases the stream on both ends. Any size
//   works both ways and the response body streams to the caller.
// 'auto' uses a stream for every request when the agent advertises `bstr` (our agent): a Data reply that turns
// out too large comes back as an Error and could only be recovered by sending the request again, which would
// execute a non-idempotent request twice. Streams cost two extra small frames per request and no extra round trip;
// measured through bridge + agent on loopback (2 shared vCPUs, so ratios only): a small GET has a ~20–30% higher
// median latency and ~30% lower throughput at 32 concurrent requests as a stream than as Data. Callers with hot
// small requests can pick transport 'data' (per request or per client) and accept the one-frame response limit.
// Against an agent without `bstr` (Enclavia), 'auto' mirrors the reference client (Data) and only falls back to a
// stream when the request itself does not fit one frame or its body is a stream of unknown size.
//
// Request bodies of unknown size go out with `Transfer-Encoding: chunked` (unless the caller framed them). We
// never half-close the app connection (`StreamClose{Write}`) after a request: the request is self-delimiting and
// some servers abort a request whose connection was shut down for writing; `Connection: close` makes the app end
// the connection after its response instead. Redirects are not followed (the 3xx Response is returned).
import { concatBytes } from '../util/bytes.ts';
import { bufferFull, byteQueue, overCap, ReadPause } from './buffer-cap.ts';
import { abortError, ClientError } from './errors.ts';
import {
  BodyDecoder,
  bodyFraming,
  callerFramesChunked,
  encodeChunk,
  encodeRequestHead,
  HeadParser,
  headerValues,
  LAST_CHUNK,
  type ResponseHead,
} from './http-codec.ts';
import type { SessionManager } from './reconnect.ts';
import { normalizeRequest, type ClientRequestInit, type NormalizedRequest, type Transport } from './request.ts';
import { chunkBudget, fitsData, type Session, type SessionStream } from './session.ts';

export interface FetchContext {
  manager: SessionManager;
  /** Host header value (the URL's host, no port). */
  host: string;
  transport: Transport;
  /** Default per-request timeout (0 = none). */
  timeoutMs: number;
  /** Unread bytes of one response body before it is given up (buffer-cap.ts). */
  maxBufferedBytes: number;
  /** onBufferFull 'pause': a body with half of them unread stops the connection being read (ReadPause). */
  pauseWhenFull?: boolean;
}

function protocol(message: string, cause?: unknown): ClientError {
  return new ClientError('CLIENT_PROTOCOL', message, cause === undefined ? {} : { cause });
}

function asClientError(err: unknown): ClientError {
  if (err instanceof ClientError) return err;
  return new ClientError('CLIENT_PROTOCOL', `request failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** The caller's signal and the timeout as one signal; `done()` releases the timer and the listener. */
export class Deadline {
  readonly signal: AbortSignal;
  readonly #ctl = new AbortController();
  readonly #user: AbortSignal | null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #onUserAbort = (): void => {
    this.#ctl.abort(new ClientError('CLIENT_ABORTED', 'the request was aborted', { cause: this.#user?.reason }));
  };

  constructor(user: AbortSignal | null | undefined, timeoutMs: number) {
    this.signal = this.#ctl.signal;
    this.#user = user ?? null;
    if (this.#user !== null) {
      if (this.#user.aborted) this.#onUserAbort();
      else this.#user.addEventListener('abort', this.#onUserAbort, { once: true });
    }
    if (timeoutMs > 0 && !this.signal.aborted) {
      this.#timer = setTimeout(() => this.#ctl.abort(new ClientError('CLIENT_TIMEOUT', `the request did not complete within ${timeoutMs} ms`)), timeoutMs);
    }
  }

  done(): void {
    clearTimeout(this.#timer);
    this.#user?.removeEventListener('abort', this.#onUserAbort);
  }
}

/** Statuses whose Response has no body. */
const NULL_BODY = new Set([204, 205, 304]);

export function makeResponse(head: ResponseHead, body: ReadableStream<Uint8Array> | Uint8Array | null): Response {
  if (head.status < 200 || head.status > 599) throw protocol(`response status ${head.status} cannot be represented as a fetch Response`);
  try {
    const headers = new Headers();
    for (const [k, v] of head.headers) headers.append(k, v);
    return new Response(NULL_BODY.has(head.status) ? null : (body as BodyInit | null), { status: head.status, statusText: head.statusText, headers });
  } catch {
    // Neither the platform's message nor the error as cause: they quote the offending header value, the app's bytes.
    throw protocol('the response cannot be represented as a fetch Response (a header the platform refuses)');
  }
}

/** A complete raw response (a Data reply) → Response. */
export function responseFromBytes(raw: Uint8Array, method: string): Response {
  const parsed = new HeadParser({ skipInterim: true }).push(raw);
  if (parsed === null) throw protocol('incomplete HTTP response: no end of head in the reply');
  if (parsed.head.status === 101) throw protocol('the app answered 101 Switching Protocols; use upgrade() for protocol upgrades');
  const framing = bodyFraming(parsed.head, method);
  const decoder = new BodyDecoder(framing);
  const parts = decoder.push(parsed.rest);
  decoder.end();
  return makeResponse(parsed.head, framing.kind === 'none' ? null : parts.length === 1 ? parts[0]! : concatBytes(...parts));
}

function chooseTransport(session: Session, req: NormalizedRequest, pref: Transport): 'data' | 'stream' {
  if (pref === 'stream') return 'stream';
  if (req.body.kind === 'stream') {
    if (pref === 'data') throw new ClientError('CLIENT_BAD_OPTIONS', 'transport "data" needs a body of known size (bytes or text), not a stream');
    return 'stream';
  }
  if (pref === 'auto' && session.features.includes('bstr')) return 'stream';
  return 'data';
}

export async function clientFetch(ctx: FetchContext, input: string | URL | Request, init: ClientRequestInit = {}): Promise<Response> {
  const req = await normalizeRequest(input, init);
  const deadline = new Deadline(init.signal, init.timeoutMs ?? ctx.timeoutMs);
  const pref = init.transport ?? ctx.transport;
  try {
    return await ctx.manager.run(async (session) => {
      let transport = chooseTransport(session, req, pref);
      if (transport === 'data') {
        const bytes = req.body.kind === 'bytes' ? req.body.bytes : undefined;
        const head = encodeRequestHead({ method: req.method, path: req.path, host: ctx.host, headers: req.headers, body: bytes?.length });
        const raw = bytes === undefined ? head : concatBytes(head, bytes);
        if (fitsData(raw, session.encoding)) {
          const reply = await session.request(raw, deadline.signal);
          deadline.done();
          return responseFromBytes(reply, req.method);
        }
        if (pref === 'data') throw new ClientError('CLIENT_BAD_OPTIONS', `the request (${raw.length} bytes) does not fit one Data message; use transport "stream" or "auto"`);
        transport = 'stream';
      }
      return fetchOverStream(session, req, ctx.host, deadline, ctx.maxBufferedBytes, ctx.pauseWhenFull === true);
    }, deadline.signal);
  } catch (err) {
    deadline.done();
    throw asClientError(err);
  }
}

/** The exchange over one stream; resolves at the response head, the body streams on. */
async function fetchOverStream(session: Session, req: NormalizedRequest, host: string, deadline: Deadline, maxBufferedBytes: number, pauseWhenFull: boolean): Promise<Response> {
  const body = req.body;
  let framing: number | 'chunked' | undefined;
  let chunked = false;
  let expectLength: number | undefined;
  if (body.kind === 'bytes') framing = body.bytes.length;
  else if (body.kind === 'stream') {
    const given = headerValues(req.headers, 'content-length');
    if (callerFramesChunked(req.headers)) framing = undefined; // the caller writes its own framing
    else if (given.length > 0) {
      expectLength = Number(given[0]!.trim());
      if (!Number.isSafeInteger(expectLength) || expectLength < 0) throw new ClientError('CLIENT_BAD_OPTIONS', `invalid Content-Length ${JSON.stringify(given[0])}`);
    } else {
      framing = 'chunked';
      chunked = true;
    }
  }
  const head = encodeRequestHead({ method: req.method, path: req.path, host, headers: req.headers, body: framing });
  const all = body.kind === 'bytes' ? concatBytes(head, body.bytes) : head;
  const budget = chunkBudget(session.encoding);
  const first = all.subarray(0, budget);
  const rest = all.subarray(first.length);
  const signal = deadline.signal;

  let resolveHead!: (r: Response) => void;
  let rejectHead!: (e: ClientError) => void;
  const headPromise = new Promise<Response>((resolve, reject) => {
    resolveHead = resolve;
    rejectHead = reject;
  });
  // finish() may reject it while openStream() is still waiting (abort in the window queue); then the caller gets
  // openStream's error instead and nobody awaits this one.
  headPromise.catch(() => {});
  const heads = new HeadParser({ skipInterim: true });
  let decoder: BodyDecoder | null = null;
  let controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  let headDone = false;
  let finished = false;
  let stream: SessionStream | null = null;
  /** Messages can arrive only after OpenStream went out, but `stream` is assigned a tick later. */
  let closeWhenOpen = false;
  const pause = new ReadPause(pauseWhenFull && session.channel.canPause ? () => session.channel.holdReading() : null, maxBufferedBytes);

  const finish = (err?: ClientError): void => {
    if (finished) return;
    finished = true;
    pause.release();
    signal.removeEventListener('abort', onAbort);
    if (stream !== null) {
      stream.close();
      deadline.done();
    } else {
      // Before the stream exists (the session died inside openStream's send, or an abort while it waits for a
      // slot) openStream throws next: the request runs again on a new session (NotSentError), which needs the
      // deadline still armed, or clientFetch's catch disarms it.
      closeWhenOpen = true;
    }
    if (!headDone) {
      headDone = true;
      rejectHead(err ?? protocol('the stream ended before a response head'));
    } else if (controller !== null) {
      if (err !== undefined) controller.error(err);
      else controller.close();
    }
  };
  const onAbort = (): void => finish(abortError(signal));

  const feed = (bytes: Uint8Array): void => {
    for (const part of decoder!.push(bytes)) controller?.enqueue(part);
    if (decoder!.done) finish();
    else if (controller !== null && overCap(controller)) finish(bufferFull('response body', maxBufferedBytes));
    else if (controller !== null) pause.update(controller);
  };

  const handlers = {
    data: (bytes: Uint8Array): void => {
      if (finished) return;
      try {
        if (decoder !== null) {
          feed(bytes);
          return;
        }
        const parsed = heads.push(bytes);
        if (parsed === null) return;
        if (parsed.head.status === 101) throw protocol('the app answered 101 Switching Protocols; use upgrade() for protocol upgrades');
        decoder = new BodyDecoder(bodyFraming(parsed.head, req.method));
        const bodyStream =
          decoder.done || NULL_BODY.has(parsed.head.status)
            ? null
            : new ReadableStream<Uint8Array>(
                {
                  start: (c) => {
                    controller = c;
                  },
                  // read down: the connection may be read on
                  pull: (c) => pause.update(c),
                  cancel: () => {
                    controller = null;
                    finish();
                  },
                },
                byteQueue(maxBufferedBytes),
              );
        const response = makeResponse(parsed.head, bodyStream);
        headDone = true;
        resolveHead(response);
        if (bodyStream === null) finish();
        else feed(parsed.rest);
      } catch (err) {
        finish(asClientError(err));
      }
    },
    end: (): void => {
      if (finished) return;
      if (decoder === null) {
        finish(protocol(heads.buffered > 0 ? 'the app closed the connection inside the response head' : 'the app closed the connection without a response'));
        return;
      }
      try {
        decoder.end();
        finish();
      } catch (err) {
        finish(asClientError(err));
      }
    },
    error: (err: ClientError): void => finish(err),
  };

  if (signal.aborted) throw abortError(signal);
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    stream = await session.openStream(first, handlers, signal);
  } catch (err) {
    signal.removeEventListener('abort', onAbort);
    throw err; // nothing of this request was sent (or the session died): the reconnect layer decides
  }
  if (closeWhenOpen) {
    // finish() ran before the stream existed and left the deadline armed for a re-run; there is none: disarm it.
    stream.close();
    deadline.done();
  }
  const opened = stream;

  // Upload the rest concurrently with reading the response (an app may answer before the body is complete).
  void (async () => {
    try {
      if (rest.length > 0) await opened.write(rest, signal);
      if (body.kind !== 'stream') return;
      let sent = 0;
      for await (const chunk of body.source) {
        if (finished) return;
        if (chunk.length === 0) continue;
        sent += chunk.length;
        if (expectLength !== undefined && sent > expectLength) throw new ClientError('CLIENT_BAD_OPTIONS', `the body is longer than its Content-Length ${expectLength}`);
        await opened.write(chunked ? encodeChunk(chunk) : chunk, signal);
      }
      if (expectLength !== undefined && sent !== expectLength) throw new ClientError('CLIENT_BAD_OPTIONS', `the body has ${sent} bytes, its Content-Length says ${expectLength}`);
      if (chunked && !finished) await opened.write(LAST_CHUNK, signal);
    } catch (err) {
      if (!finished) finish(asClientError(err));
    }
  })();

  return headPromise;
}
