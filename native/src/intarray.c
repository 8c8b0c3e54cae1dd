/*
 * The int-array byte encoding of the wire CBOR (WIRE.md §4): every byte v < 24 is the one byte `v`, every v ≥ 24
 * the two bytes `0x18 v`. The fast path of src/wire/int-array.ts (countBig, writeIntArray, readIntArray),
 * installed there by src/wire/native-int-array.ts above a size threshold. Pure computation: no
 * syscalls, no allocation, no state. Every argument is validated here, whatever JS passes: a wrong type is a
 * TypeError (ERR_INVALID_ARG_TYPE), an offset/count outside the buffers a RangeError (ERR_OUT_OF_RANGE), and
 * nothing is read or written outside [data, data + length) of the typed arrays given (their byteOffset honoured).
 *
 *   intArrayCount(src)                                   → elements of src that are ≥ 24
 *   intArrayEncode(src, dst, dstOffset)                  → end offset in dst (elements only, no array head)
 *   intArrayDecode(src, srcOffset, n, dst, dstOffset)   → decoded + consumed × 2^26
 *       decodes up to n (≤ 2^26 − 1, ≤ dst.length − dstOffset) elements from src[srcOffset..] into dst[dstOffset..]
 *       while they are `v` (< 24) or `0x18 v` (any v, as the JS reader accepts); stops at the first other element
 *       or when the input runs out. `decoded` elements were written, `consumed` input bytes read.
 *
 * intArrayEncode writes only dst[dstOffset .. end): it refuses (ERR_INT_ARRAY_DST_TOO_SMALL) when the encoding
 * does not fit, and in that case may have written part of it (inside the bounds).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

/* intArrayDecode returns decoded + consumed × 2^26 (one number: an out-param typed array costs ~80 ns more per
 * call, a result object ~700 ns more), which bounds n per call. */
#define IA_DECODE_MAX (((size_t)1 << 26) - 1)
#define IA_DECODE_SCALE 67108864.0 /* 2^26 */

#define ONES8 0x0101010101010101ULL
#define HIGH8 0x8080808080808080ULL
#define LOW7 0x7f7f7f7f7f7f7f7fULL
/* x + 0x68 sets bit 7 of a 7-bit lane exactly when the lane is ≥ 24 (0x68 = 128 − 24): no carries between lanes. */
#define ADD24 0x6868686868686868ULL

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define IA_LITTLE_ENDIAN 1
#else
#define IA_LITTLE_ENDIAN 0
#endif

static inline uint64_t load64(const uint8_t* p) {
  uint64_t x;
  memcpy(&x, p, 8);
  return x;
}

static inline void store64(uint8_t* p, uint64_t x) { memcpy(p, &x, 8); }

/* 0x80 in each byte lane that is ≥ 24. */
static inline uint64_t big_mask(uint64_t x) { return (((x & LOW7) + ADD24) | x) & HIGH8; }

static size_t count_big(const uint8_t* s, size_t n) {
  size_t big = 0, i = 0;
  for (; i + 8 <= n; i += 8) big += (size_t)(((big_mask(load64(s + i)) >> 7) * ONES8) >> 56);
  for (; i < n; i++) big += s[i] >= 24;
  return big;
}

/*
 * Encodes s[0..k) at d; returns the bytes written. d must have room for 2k bytes. `after` = elements of the array
 * that follow this run (encoded right after it by the caller). The block loops may write past the end of an
 * element, inside the 2k: up to 8 bytes (SSSE3 blocks) or 1 byte (the others), so they only run while at least
 * that many elements follow, whose bytes overwrite it — nothing is ever left past the array's end.
 */
#if defined(__x86_64__) || defined(__i386__)
#define IA_X86 1
#include <immintrin.h>
#include <pthread.h>
/* Per 8-bit mask of the elements ≥ 24 in a block of 8: where each output byte comes from (0x80: nothing) and the
 * 0x18 heads to OR in. 8 KiB, built once. */
static uint8_t enc_shuf[256][16], enc_heads[256][16];
static int have_ssse3;
static pthread_once_t enc_once = PTHREAD_ONCE_INIT;
static void enc_init(void) {
  for (int m = 0; m < 256; m++) {
    int o = 0;
    memset(enc_shuf[m], 0x80, 16);
    memset(enc_heads[m], 0, 16);
    for (int j = 0; j < 8; j++) {
      if ((m >> j) & 1) enc_heads[m][o++] = 0x18;
      enc_shuf[m][o++] = (uint8_t)j;
    }
  }
  __builtin_cpu_init();
  have_ssse3 = __builtin_cpu_supports("ssse3");
}

__attribute__((target("ssse3"))) static size_t encode_blocks_ssse3(const uint8_t* s, size_t blocks, uint8_t* d) {
  size_t p = 0;
  for (size_t b = 0; b < blocks; b++) {
    const uint64_t x = load64(s + 8 * b);
    /* bit j of m = lane j ≥ 24 (the multiply gathers bit 7 of each lane into the top byte) */
    const uint64_t bits = big_mask(x) >> 7;
    const unsigned m = (unsigned)((bits * 0x0102040810204080ULL) >> 56);
    const __m128i v = _mm_cvtsi64_si128((long long)x);
    const __m128i o = _mm_or_si128(_mm_shuffle_epi8(v, _mm_loadu_si128((const __m128i*)enc_shuf[m])),
                                   _mm_loadu_si128((const __m128i*)enc_heads[m]));
    _mm_storeu_si128((__m128i*)(d + p), o); /* 16 bytes, 8 + popcount(m) of them this block's */
    p += 8 + (size_t)((bits * ONES8) >> 56); /* popcount without needing the popcnt instruction */
  }
  return p;
}
#else
#define IA_X86 0
#endif

static size_t encode_run(const uint8_t* s, size_t k, uint8_t* d, size_t after) {
  size_t i = 0, p = 0;
#if IA_X86
  if (have_ssse3) {
    /* block [i, i+8) may spill 8 bytes: at least 8 elements must follow it */
    const size_t blocks = k + after >= 16 ? (k + after - 16) / 8 + 1 : 0;
    const size_t nb = blocks < k / 8 ? blocks : k / 8;
    p = encode_blocks_ssse3(s, nb, d);
    i = 8 * nb;
  }
#endif
  /* below: may spill 1 byte, so at least one element must follow */
  const size_t stop = after > 0 ? k : k > 0 ? k - 1 : 0;
#if IA_LITTLE_ENDIAN
  for (; i + 8 <= stop; i += 8) {
    const uint64_t x = load64(s + i);
    const uint64_t m = big_mask(x);
    if (m == 0) {
      store64(d + p, x);
      p += 8;
    } else if (m == HIGH8) {
      /* all eight ≥ 24: spread each byte into the high half of a 16-bit lane, 0x18 in the low half */
      uint64_t lo = x & 0xffffffffULL, hi = x >> 32;
      lo = (lo | (lo << 16)) & 0x0000ffff0000ffffULL;
      lo = (lo | (lo << 8)) & 0x00ff00ff00ff00ffULL;
      hi = (hi | (hi << 16)) & 0x0000ffff0000ffffULL;
      hi = (hi | (hi << 8)) & 0x00ff00ff00ff00ffULL;
      store64(d + p, (lo << 8) | 0x0018001800180018ULL);
      store64(d + p + 8, (hi << 8) | 0x0018001800180018ULL);
      p += 16;
    } else {
      /* mixed: each element's output offset from a SWAR prefix sum of the big flags, then independent 16-bit
       * stores (`0x18 v`, or `v 00` whose 00 the next element overwrites) — no serial chain through p */
      const uint64_t bits = m >> 7;
      const uint64_t excl = bits * ONES8 - bits; /* lane j: big elements before j */
      for (unsigned j = 0; j < 8; j++) {
        const uint16_t v = (uint16_t)((x >> (8 * j)) & 0xff);
        const uint16_t w = (bits >> (8 * j)) & 1 ? (uint16_t)(0x18 | (v << 8)) : v;
        memcpy(d + p + j + ((excl >> (8 * j)) & 0xff), &w, 2);
      }
      p += 8 + (size_t)((bits * ONES8) >> 56);
    }
  }
#endif
  for (; i < stop; i++) {
    const uint8_t v = s[i];
    const size_t b = v >= 24;
    d[p] = b ? 0x18 : v;
    d[p + 1] = v;
    p += 1 + b;
  }
  if (i < k) { /* the array's very last element: exactly its bytes */
    const uint8_t v = s[i];
    if (v < 24) {
      d[p++] = v;
    } else {
      d[p] = 0x18;
      d[p + 1] = v;
      p += 2;
    }
  }
  return p;
}

/* Encodes s[0..n) into d[0..cap); returns the end, or (size_t)-1 when it does not fit. */
static size_t encode_bounded(const uint8_t* s, size_t n, uint8_t* d, size_t cap) {
  size_t i = 0, p = 0;
  while (i < n) {
    /* runs that cannot overflow: k elements take at most 2k bytes; each run leaves at least half the slack */
    size_t k = (cap - p) / 2;
    if (k > n - i) k = n - i;
    if (k == 0) {
      const uint8_t v = s[i];
      const size_t need = v < 24 ? 1 : 2;
      if (cap - p < need) return (size_t)-1;
      if (need == 1) {
        d[p++] = v;
      } else {
        d[p] = 0x18;
        d[p + 1] = v;
        p += 2;
      }
      i++;
      continue;
    }
    p += encode_run(s + i, k, d + p, n - i - k);
    i += k;
  }
  return p;
}

/*
 * Decodes up to n elements of s[0..len) into d while they are `v` (< 24) or `0x18 v`. Sets *consumed to the bytes
 * read; returns the elements written.
 */
static size_t decode_run(const uint8_t* s, size_t len, size_t n, uint8_t* d, size_t* consumed) {
  size_t i = 0, p = 0;
#if IA_LITTLE_ENDIAN
  while (i + 8 <= n && p + 8 <= len) {
    const uint64_t x = load64(s + p);
    if (big_mask(x) == 0) { /* eight elements < 24 */
      store64(d + i, x);
      i += 8;
      p += 8;
      continue;
    }
    if ((x & 0x00ff00ff00ff00ffULL) == 0x0018001800180018ULL) { /* four `0x18 v` */
      uint64_t y = (x >> 8) & 0x00ff00ff00ff00ffULL;
      y = (y | (y >> 8)) & 0x0000ffff0000ffffULL;
      y = (y | (y >> 16)) & 0xffffffffULL;
      const uint32_t w = (uint32_t)y;
      memcpy(d + i, &w, 4);
      i += 4;
      p += 8;
      continue;
    }
    /* mixed: four elements (at most the eight bytes loaded) parsed from the register, not from memory — the
     * next position then depends on a shift, not on a load */
    uint64_t w = x;
    for (int j = 0; j < 4; j++) {
      const unsigned b0 = (unsigned)(w & 0xff);
      const unsigned small = b0 < 24;
      if (!small && b0 != 0x18) goto done;
      d[i++] = (uint8_t)(small ? b0 : (w >> 8) & 0xff);
      const unsigned sh = small ? 8 : 16;
      w >>= sh;
      p += sh >> 3;
    }
  }
#endif
  while (i < n && p + 1 < len) {
    const uint8_t v = s[p];
    const size_t small = v < 24;
    if (!small && v != 0x18) goto done;
    d[i++] = small ? v : s[p + 1];
    p += 2 - small;
  }
  /* the last input byte can only be a whole element when it is < 24 */
  if (i < n && p < len && s[p] < 24) d[i++] = s[p++];
done:
  *consumed = p;
  return i;
}

/* --- N-API glue --- */

/* An integer 0..max (a JS number: no NaN, no fraction, no negative). */
static bool get_index(napi_env env, napi_value v, const char* what, size_t max, size_t* out) {
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) {
      char msg[128];
      snprintf(msg, sizeof msg, "%s must be a number", what);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    }
    return false;
  }
  uint64_t n = 0;
  if (!en_int_in_range(env, d, what, 0, max, &n)) return false;
  *out = (size_t)n;
  return true;
}

static napi_value js_int_array_count(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  uint8_t* s;
  size_t n;
  if (argc < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "src must be a Uint8Array");
    return NULL;
  }
  if (!en_get_u8(env, argv[0], "src", &s, &n)) return NULL;
  napi_value out;
  EN_CALL(env, napi_create_double(env, (double)count_big(s, n), &out), NULL);
  return out;
}

static napi_value js_int_array_encode(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "intArrayEncode(src, dst, dstOffset) needs 3 arguments");
    return NULL;
  }
  uint8_t *s, *d;
  size_t n, cap, off;
  if (!en_get_u8(env, argv[0], "src", &s, &n)) return NULL;
  if (!en_get_u8(env, argv[1], "dst", &d, &cap)) return NULL;
  if (!get_index(env, argv[2], "dstOffset", cap, &off)) return NULL;
  const size_t w = encode_bounded(s, n, d + off, cap - off);
  if (w == (size_t)-1) {
    char msg[200];
    snprintf(msg, sizeof msg, "the int array of %zu bytes (%zu ≥ 24) needs %zu bytes at dstOffset %zu, dst has %zu", n,
             count_big(s, n), n + count_big(s, n), off, cap - off);
    napi_throw_range_error(env, "ERR_INT_ARRAY_DST_TOO_SMALL", msg);
    return NULL;
  }
  napi_value out;
  EN_CALL(env, napi_create_double(env, (double)(off + w), &out), NULL);
  return out;
}

static napi_value js_int_array_decode(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "intArrayDecode(src, srcOffset, n, dst, dstOffset) needs 5 arguments");
    return NULL;
  }
  uint8_t *s, *d;
  size_t len, off, n, cap, doff;
  if (!en_get_u8(env, argv[0], "src", &s, &len)) return NULL;
  if (!get_index(env, argv[1], "srcOffset", len, &off)) return NULL;
  if (!en_get_u8(env, argv[3], "dst", &d, &cap)) return NULL;
  if (!get_index(env, argv[4], "dstOffset", cap, &doff)) return NULL;
  const size_t room = cap - doff;
  if (!get_index(env, argv[2], "n", room < IA_DECODE_MAX ? room : IA_DECODE_MAX, &n)) return NULL;
  size_t consumed = 0;
  const size_t done = decode_run(s + off, len - off, n, d + doff, &consumed);
  /* done ≤ n < 2^26 and consumed ≤ 2·done < 2^27: the sum is below 2^53, exact in a double */
  napi_value out;
  EN_CALL(env, napi_create_double(env, (double)done + (double)consumed * IA_DECODE_SCALE, &out), NULL);
  return out;
}

napi_status en_intarray_init(napi_env env, napi_value exports) {
#if IA_X86
  pthread_once(&enc_once, enc_init);
#endif
  napi_status s = en_set_fn(env, exports, "intArrayCount", js_int_array_count);
  if (s != napi_ok) return s;
  s = en_set_fn(env, exports, "intArrayEncode", js_int_array_encode);
  if (s != napi_ok) return s;
  return en_set_fn(env, exports, "intArrayDecode", js_int_array_decode);
}
