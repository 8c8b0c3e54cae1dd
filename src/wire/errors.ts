// The one error class of the wire layer (frames and CBOR messages). Browser-safe.
import { AgentError } from '../errors.ts';

/**
 * Stable codes of the wire layer.
 * - WIRE_FRAME_TOO_LARGE / WIRE_FRAME_TOO_SMALL: a frame length outside 16..65535 (read or write side).
 * - WIRE_TRUNCATED: the byte stream ended inside a handshake message or a frame.
 * - WIRE_ENDED: bytes pushed into a FrameReader after end().
 * - WIRE_DECODE: the CBOR is malformed or uses a feature the profile forbids; `detail` says which
 *   (see WireDecodeDetail).
 * - WIRE_UNKNOWN_TYPE: the "type" names no variant of this direction.
 * - WIRE_MISSING_FIELD: "type" or a field required by the variant is absent.
 * - WIRE_BAD_FIELD: a field has the wrong CBOR type or an invalid value (e.g. half not Write/Both,
 *   nonce not 32 bytes).
 * - WIRE_INT_RANGE: an id above Number.MAX_SAFE_INTEGER, or a byte-array element above 255.
 * - WIRE_ENCODE: the message given to an encoder is invalid (bad id, wrong nonce length, ...).
 * - WIRE_SINK_CLOSED: a FrameWriter's sink errored, ended or was destroyed; `cause` holds the sink error if any.
 */
export type WireErrorCode =
  | 'WIRE_FRAME_TOO_LARGE'
  | 'WIRE_FRAME_TOO_SMALL'
  | 'WIRE_TRUNCATED'
  | 'WIRE_ENDED'
  | 'WIRE_DECODE'
  | 'WIRE_UNKNOWN_TYPE'
  | 'WIRE_MISSING_FIELD'
  | 'WIRE_BAD_FIELD'
  | 'WIRE_INT_RANGE'
  | 'WIRE_ENCODE'
  | 'WIRE_SINK_CLOSED';

/**
 * Sub-classification of WIRE_DECODE (also in the message):
 * truncated · trailing (bytes after the message) · not-map (top level) · key-type (non-text map key) ·
 * duplicate-key · map-size (a message map of more than MAX_MAP_ENTRIES entries) · tag · indefinite · float ·
 * simple (a simple value other than false/true/null/undefined, or a stray break) · reserved (additional info
 * 28..30) · utf8 · depth (nesting deeper than the bound) · internal (a bug in the decoder turned into a WireError;
 * never expected).
 */
export type WireDecodeDetail =
  | 'truncated'
  | 'trailing'
  | 'not-map'
  | 'key-type'
  | 'duplicate-key'
  | 'map-size'
  | 'tag'
  | 'indefinite'
  | 'float'
  | 'simple'
  | 'reserved'
  | 'utf8'
  | 'depth'
  | 'internal';

export class WireError extends AgentError {
  declare readonly code: WireErrorCode;
  /** Set on WIRE_DECODE only. */
  readonly detail: WireDecodeDetail | undefined;

  constructor(code: WireErrorCode, message: string, options?: { cause?: unknown; detail?: WireDecodeDetail }) {
    super(code, message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.detail = options?.detail;
  }
}

/** Shorthand for a WIRE_DECODE error with its detail (message prefixed with the detail). */
export function decodeError(detail: WireDecodeDetail, message: string): WireError {
  return new WireError('WIRE_DECODE', `${detail}: ${message}`, { detail });
}
