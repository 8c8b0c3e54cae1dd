// The bound on bytes a response body or stream holds for a caller who does not read them. The protocol has no
// per-stream flow control (the agent cannot be told to wait, and a browser WebSocket cannot be paused), so
// the only bound the client can keep is to give up on the stream: its readable errors with CLIENT_BUFFER_FULL.
// Browser-safe.
import { ClientError } from './errors.ts';

/** Default of ConnectOptions.maxBufferedBytes. */
export const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

/** A queuing strategy counting bytes, so a controller's desiredSize goes negative past `max` unread bytes. */
export function byteQueue(max: number): QueuingStrategy<Uint8Array> {
  return { highWaterMark: max, size: (chunk) => chunk.byteLength };
}

/** True once more than the strategy's `max` bytes wait unread in `controller`. */
export function overCap(controller: ReadableStreamDefaultController<Uint8Array>): boolean {
  const room = controller.desiredSize;
  return room !== null && room < 0;
}

export function bufferFull(what: string, max: number): ClientError {
  return new ClientError('CLIENT_BUFFER_FULL', `${what}: more than ${max} bytes arrived unread (maxBufferedBytes); the stream was closed`);
}
