// CBOR heads for the wire codec (WIRE.md §4): the minimal-length head of an item, sized and written by hand.
// Browser-safe (no node:*, no Buffer). Used by the schema tables (key and type prefixes) and the encoder.

/** Bytes of a CBOR head carrying `n` (minimal length). */
export function uintSize(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9;
}

/** Writes a head of major type `mt` (already shifted: 0x00, 0x40, 0x60, 0x80, 0xa0) with argument n. */
export function writeHead(out: Uint8Array, p: number, mt: number, n: number): number {
  if (n < 24) {
    out[p] = mt | n;
    return p + 1;
  }
  if (n < 0x100) {
    out[p] = mt | 24;
    out[p + 1] = n;
    return p + 2;
  }
  if (n < 0x10000) {
    out[p] = mt | 25;
    out[p + 1] = n >>> 8;
    out[p + 2] = n & 0xff;
    return p + 3;
  }
  if (n < 0x100000000) {
    out[p] = mt | 26;
    out[p + 1] = n >>> 24;
    out[p + 2] = (n >>> 16) & 0xff;
    out[p + 3] = (n >>> 8) & 0xff;
    out[p + 4] = n & 0xff;
    return p + 5;
  }
  const hi = Math.floor(n / 0x100000000);
  const lo = n >>> 0;
  out[p] = mt | 27;
  out[p + 1] = hi >>> 24;
  out[p + 2] = (hi >>> 16) & 0xff;
  out[p + 3] = (hi >>> 8) & 0xff;
  out[p + 4] = hi & 0xff;
  out[p + 5] = lo >>> 24;
  out[p + 6] = (lo >>> 16) & 0xff;
  out[p + 7] = (lo >>> 8) & 0xff;
  out[p + 8] = lo & 0xff;
  return p + 9;
}
