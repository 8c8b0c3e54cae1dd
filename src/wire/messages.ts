// The CBOR messages of the Enclavia-compatible wire (WIRE.md §4), hand-written for the fixed schema.
// Browser-safe (no node:*, no Buffer). A generic CBOR library is ~100× slower on the int-array byte fields that
// serde produces for Vec<u8>; this codec sizes the output exactly, encodes into one allocation and decodes with
// an index cursor and tight loops for the arrays.
//
// Encoding (what the Rust reference emits): a definite-length map with text keys, "type" first, then the fields
// in schema order; minimal-length unsigned ints; byte fields as arrays of uints ('array', the compat default) or
// as byte strings ('bstr', our extension, WIRE.md §5).
//
// Decoding is liberal where serde is (any key order, unknown keys ignored, ints in non-minimal form, byte fields
// as int arrays or byte strings) and strict everywhere else: every malformed or forbidden input (tags,
// indefinite lengths, floats, trailing bytes, duplicate keys, non-UTF-8 text, non-text keys, nesting deeper than
// MAX_SKIP_DEPTH in an ignored value) is a WireError — decode never throws anything else.
//
// Ids are u64 on the wire and JS numbers here: ids above Number.MAX_SAFE_INTEGER (2^53 − 1) are rejected with
// WIRE_INT_RANGE on decode and WIRE_ENCODE on encode. Our own client counts from 1 and never gets near that.
//
// This module is the codec's public API; the code is in: schema.ts (message types, limits, keys, kinds,
// variants), cbor-head.ts (CBOR heads), int-array.ts (the int-array loops and setIntArrayCodec), encode.ts,
// cursor.ts (reading CBOR items and fields) and decode.ts.
export type { ByteEncoding, ClientMessage, DecodeOptions, ServerMessage } from './schema.ts';
export { MAX_MAP_ENTRIES, MAX_MESSAGE_LEN, MAX_SKIP_DEPTH, NONCE_LEN } from './schema.ts';
export type { IntArrayCodec } from './int-array.ts';
export { getIntArrayCodec, INT_ARRAY_CODEC_THRESHOLD, setIntArrayCodec } from './int-array.ts';
export {
  clientMessageSize,
  encodeClientMessage,
  encodeClientMessageInto,
  encodeServerMessageInto,
  encodeClientMessageParts,
  encodeServerMessage,
  encodeServerMessageParts,
  serverMessageSize,
} from './encode.ts';
export { decodeClientMessage, decodeServerMessage } from './decode.ts';
