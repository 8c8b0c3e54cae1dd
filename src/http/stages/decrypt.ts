// Stage: automatic decryption of `ev:` values (ENCRYPTION.md §3). This file is the slot: the pipeline calls
// a DecryptStage when one is configured and passes the request through otherwise. The implementation (next
// issue) receives the head and the body stream, may rewrite headers, and returns the body to forward:
// - a streaming transform (return it with `contentLength: null`: the app then gets a chunked body), or
// - a fully read body (use `readBodyCapped`, which answers 413 past `maxBufferedBodyBytes`) with its
//   recomputed length.
// To refuse a request (a token that parses but does not decrypt), throw an HttpModeError (or any AgentError
// with a numeric `status`): the client gets that status as JSON and nothing reaches the app. Throw before
// returning: once the body is handed on, the request is already on its way to the app.
import type { Readable } from 'node:stream';
import type { Exchange, Stage } from '../exchange.ts';
import type { HeaderList } from '../headers.ts';
import { HttpModeError } from '../errors.ts';

/**
 * Bytes of request bodies a pipeline holds in memory at once. A stage that buffers a body (readBodyCapped)
 * takes its bytes here as they arrive and gives them back when the exchange is over: the per-request cap
 * (`maxBufferedBodyBytes`) times the number of connections is no bound (1,024 TLS connections × 8 MiB of
 * JSON each is 8 GiB, and a client holds it with one byte per body gap).
 */
/** What a pipeline counts its buffered bodies against: BufferedBodies, or the process-wide one of SharedAdmission. */
export interface BufferedBodiesLike {
  readonly maxBytes: number;
  readonly held: number;
  tryTake(bytes: number): boolean;
  give(bytes: number): void;
}

export class BufferedBodies implements BufferedBodiesLike {
  #held = 0;
  constructor(readonly maxBytes: number) {}

  /** Bytes held now. */
  get held(): number {
    return this.#held;
  }

  /** Takes `bytes`; false (nothing taken) when that would pass the cap. */
  tryTake(bytes: number): boolean {
    if (this.#held + bytes > this.maxBytes) return false;
    this.#held += bytes;
    return true;
  }

  give(bytes: number): void {
    this.#held -= bytes;
  }
}

/** Where a buffering stage counts what it holds (the Exchange: given back when it is over). */
export interface BodyBytesHolder {
  /** Counts `bytes` more held for this request; false when the pipeline's budget is spent. */
  holdBodyBytes(bytes: number): boolean;
}

export interface DecryptInput {
  readonly method: string;
  /** Request target as received (path and query). */
  readonly url: string;
  /** Headers going to the app; edit in place (values may be decrypted too). */
  readonly headers: HeaderList;
  /** The request body, or null when the request has none. */
  readonly body: Readable | null;
  /** Declared body length, null for chunked. */
  readonly contentLength: number | null;
  /** The cap for stages that buffer the body. */
  readonly maxBufferedBodyBytes: number;
  readonly requestId: string;
  /** Counts the bytes of a body the stage buffers (pass to readBodyCapped). */
  readonly holder?: BodyBytesHolder;
}

export interface DecryptOutput {
  /** The body to forward (null = none). */
  body: Readable | null;
  /** Its length, or null to send it chunked. */
  contentLength: number | null;
  /** Number of values decrypted; a function when the count is only known after streaming. */
  decryptedFields: number | (() => number);
}

/** Returns null to pass the request through unchanged. */
export type DecryptStage = ((input: DecryptInput) => DecryptOutput | null | Promise<DecryptOutput | null>) & {
  /** Writes what it has counted and not yet logged (its refusals); the forwarder calls it when it closes. */
  close?(): void;
};

export function decryptStage(opts: { decrypt?: DecryptStage; maxBufferedBodyBytes: number; bodies?: BufferedBodiesLike }): Stage {
  const decrypt = opts.decrypt;
  const bodies = opts.bodies ?? null;
  if (decrypt === undefined) return (_ex, next) => next();
  const apply = (ex: Exchange, out: DecryptOutput | null): void => {
    if (out === null) return;
    ex.body = out.body;
    ex.bodyLength = out.contentLength;
    ex.decryptedFields = out.decryptedFields;
  };
  return (ex, next) => {
    ex.bodies = bodies;
    // A refusal thrown here (422, 400, ...) becomes the pipeline's error answer (compose turns it into a rejection).
    const out = decrypt({
      method: ex.req.method ?? 'GET',
      url: ex.req.url ?? '/',
      headers: ex.upstreamHeaders,
      body: ex.body,
      contentLength: ex.bodyLength,
      maxBufferedBodyBytes: opts.maxBufferedBodyBytes,
      requestId: ex.requestId,
      holder: ex,
    });
    // Most requests are decided without reading the body: no promise to wait for then.
    if (out === null || !(out instanceof Promise)) {
      apply(ex, out);
      return next();
    }
    return out.then((o) => {
      apply(ex, o);
      return next();
    });
  };
}

/**
 * Reads a whole body into memory, refusing with 413 as soon as it exceeds `max` bytes (or when the
 * declared length already does). For stages that need the complete body.
 */
export async function readBodyCapped(body: Readable, max: number, declaredLength: number | null = null, holder?: BodyBytesHolder): Promise<Buffer> {
  const tooLarge = (): HttpModeError =>
    new HttpModeError('HTTP_BODY_TOO_LARGE', 413, `request body larger than the ${max}-byte limit for bodies the agent must buffer`);
  if (declaredLength !== null && declaredLength > max) throw tooLarge();
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) throw tooLarge();
    if (holder !== undefined && !holder.holdBodyBytes(chunk.length)) {
      throw new HttpModeError('HTTP_DECRYPT_BUSY', 503, 'the agent holds as many request bodies in memory as it may; nothing was forwarded, retry later');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
