// KMS's answers, read with a size cap before the AWS SDK parses them. The SDK reads a response body whole, of
// any size; only KMS behind verified TLS can send one, but it comes through the egress tunnel, and the largest
// real answer is a few KiB (an attested Decrypt's CiphertextForRecipient: ≤ 16 KiB even where the envelope
// parser would refuse it, MAX_ENVELOPE_BYTES, so ≤ ~22 KiB of base64). A middleware innermost in the SDK's
// deserialize step — after the HTTP handler answers, before any deserializer reads the body — counts the bytes
// and refuses past the cap: a declared Content-Length at once, unread; a body that grows past it, destroyed.
import type { Readable } from 'node:stream';
import type { AbsoluteLocation, DeserializeHandlerOptions, DeserializeMiddleware, MiddlewareStack } from '@smithy/types';
import { KmsKeyringError } from './kms-errors.ts';

/** The most bytes of one KMS answer read: ~3× the largest a real one needs. */
export const MAX_KMS_RESPONSE_BYTES = 64 * 1024;

interface RawResponse {
  headers?: Record<string, string | undefined>;
  body?: unknown;
}

function tooLarge(max: number, found: string): KmsKeyringError {
  return new KmsKeyringError('KMS_RESPONSE_TOO_LARGE', `KMS's answer is ${found}, more than the ${max} bytes any KMS answer needs; it was not read on`);
}

/** All of `body`, or KMS_RESPONSE_TOO_LARGE (the stream destroyed) once more than `max` bytes arrived. */
async function readCapped(body: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) {
      body.destroy();
      throw tooLarge(max, `over ${max} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function capBody(max: number): DeserializeMiddleware<object, object> {
  return (next) => async (args) => {
    const out = await next(args);
    const response = out.response as RawResponse;
    const body = response.body;
    if (body === undefined || body === null) return out;
    const declared = Number(response.headers?.['content-length'] ?? NaN);
    if (declared > max) {
      (body as Partial<Readable>).destroy?.();
      throw tooLarge(max, `${declared} bytes by its Content-Length`);
    }
    if (typeof body === 'string' || body instanceof Uint8Array) {
      if (Buffer.byteLength(body) > max) throw tooLarge(max, `${Buffer.byteLength(body)} bytes`);
      return out;
    }
    // The SDK's deserializers take a Uint8Array body as the whole body.
    if (typeof (body as Partial<Readable>)[Symbol.asyncIterator] === 'function') response.body = await readCapped(body as Readable, max);
    return out;
  };
}

const OPTIONS: DeserializeHandlerOptions & AbsoluteLocation = { step: 'deserialize', priority: 'low', name: 'kmsResponseBodyCap' };

/** Caps every answer `stack`'s client reads (a KMSClient's middlewareStack) at `max` bytes. */
export function capKmsResponses(stack: MiddlewareStack<object, object>, max = MAX_KMS_RESPONSE_BYTES): void {
  stack.add(capBody(max), OPTIONS);
}
