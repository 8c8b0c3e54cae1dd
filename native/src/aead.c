/*
 * In-place AEAD (ChaCha20-Poly1305, AES-256-GCM) on buffers JS already owns, through OpenSSL 3's EVP API — the
 * OpenSSL inside the node binary: the addon does not link libcrypto, the EVP_* symbols resolve from the process
 * at load (like every addon that uses node's OpenSSL). A context from aeadNew holds only its cipher and key (~64
 * bytes); the EVP_CIPHER_CTX is one per cipher per thread, shared, and each message sets its key and nonce on it
 * (EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc)): no allocation, no ArrayBuffer. An OpenSSL context per key
 * cost ~1.6 KB of native memory, two per Noise session (scripts/bench/responder.ts, memory); setting the key per
 * message costs a ChaCha20 key copy or an AES key schedule, well under a microsecond.
 *
 *   aeadNew(cipher, key)                   → ctx   cipher 'chacha20-poly1305' | 'aes-256-gcm', key 32 bytes
 *   aeadSeal(ctx, nonce, ad, parts, tag)   → undefined
 *       encrypts parts[0] ‖ parts[1] ‖ … in place as ONE message, writes the 16-byte tag into tag
 *   aeadOpen(ctx, nonce, ad, data)         → boolean
 *       data = ciphertext ‖ tag (≥ 16 bytes); decrypts data[0 .. len−16) in place; false (and data[0 .. len−16)
 *       zeroed) when the tag does not verify
 *   aeadFree(ctx)                          → undefined   cleanses the context's key now (in the shared OpenSSL
 *                                                        context too, when it holds it); idempotent
 *   aeadStats()                            → { created, freed }   contexts since load, process-wide
 *
 * nonce is exactly 12 bytes, every buffer a Uint8Array (byteOffset/byteLength honoured). Every argument is
 * checked before any byte is touched, and after the last point where JS can run (the parts array's elements
 * are fetched first: an index getter could detach a buffer), so nothing outside [data, data + length) of the
 * typed arrays given is ever read or written. Wrong type → TypeError ERR_INVALID_ARG_TYPE, wrong length →
 * RangeError ERR_OUT_OF_RANGE, unknown cipher → TypeError ERR_INVALID_ARG_VALUE, a context from aeadFree →
 * Error ERR_NATIVE_AEAD_FREED, an OpenSSL failure → Error ERR_NATIVE_AEAD (OpenSSL's error queue is cleared).
 * A seal that fails half-way leaves the parts partly encrypted (the caller must drop the message); an open that
 * fails for any reason zeroes the body before it returns or throws.
 */
#include "common.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Weak: a node without OpenSSL 3 (built --without-ssl, or against an old shared libcrypto) still loads the addon
 * (vsock, NSM); en_aead_init then registers no aead* function and src/noise/native-aead.ts reports null. */
#pragma weak ERR_clear_error
#pragma weak ERR_error_string_n
#pragma weak ERR_get_error
#pragma weak EVP_CIPHER_CTX_ctrl
#pragma weak EVP_CIPHER_CTX_free
#pragma weak EVP_CIPHER_CTX_new
#pragma weak EVP_CIPHER_fetch
#pragma weak EVP_CIPHER_free
#pragma weak EVP_CipherFinal_ex
#pragma weak EVP_CipherInit_ex
#pragma weak EVP_CipherUpdate

#define AEAD_KEY_LEN 32
#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN 16
/* EVP_CipherUpdate takes an int length: longer parts go in chunks (no cap on the message size here; the cipher's
 * own limits — 2^36 − 32 bytes for GCM — are OpenSSL's to enforce). */
#define AEAD_CHUNK ((size_t)1 << 30)
enum { CIPHER_CHACHA, CIPHER_AES_GCM, CIPHER_COUNT };
static const char* const FETCH_NAME[CIPHER_COUNT] = {"ChaCha20-Poly1305", "AES-256-GCM"};

typedef struct {
  int cipher;
  bool live; /* false after aeadFree (the key is cleansed) */
  uint8_t key[AEAD_KEY_LEN];
} en_aead;

/* The shared EVP contexts of this thread (the addon's env: the main thread, or a worker's), made on first use and
 * freed (which cleanses the last key set on them) when the env is torn down. */
static __thread EVP_CIPHER_CTX* shared_ctx[CIPHER_COUNT];
/* One cleanup hook per env: Node aborts on a second registration of the same hook (the addon loaded twice). */
static __thread bool shared_hook;
/* Whose key each shared context holds now: freeing that context re-keys it with zeros, so the key goes at once. */
static __thread const void* keyed_by[CIPHER_COUNT];
static const uint8_t ZERO_KEY[AEAD_KEY_LEN];

/* Marks our wrapper objects: napi_unwrap of another addon's (or our socket's) wrapper would be type confusion. */
static const napi_type_tag AEAD_TAG = {0x6165616463747831ULL, 0x656e636c61766961ULL};

static uint64_t aead_created, aead_freed;

/* Throws Error{code: ERR_NATIVE_AEAD} naming the step and OpenSSL's first queued error; clears the queue. */
static void throw_openssl(napi_env env, const char* what) {
  char detail[256] = "no OpenSSL error queued";
  unsigned long e = ERR_get_error();
  if (e != 0) ERR_error_string_n(e, detail, sizeof detail);
  ERR_clear_error();
  char msg[400];
  snprintf(msg, sizeof msg, "%s failed: %s", what, detail);
  en_throw_code(env, "ERR_NATIVE_AEAD", msg);
}

static void free_ctx(en_aead* a) {
  if (a->live) {
    EVP_CIPHER_CTX* shared = shared_ctx[a->cipher];
    if (shared != NULL && keyed_by[a->cipher] == a) {
      EVP_CipherInit_ex(shared, NULL, NULL, ZERO_KEY, NULL, 1);
      keyed_by[a->cipher] = NULL;
    }
    explicit_bzero(a->key, sizeof a->key);
    a->live = false;
    __atomic_fetch_add(&aead_freed, 1, __ATOMIC_RELAXED);
  }
}

static void aead_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  en_aead* a = (en_aead*)data;
  free_ctx(a);
  free(a);
}

static void free_shared(void* arg) {
  (void)arg;
  for (int i = 0; i < CIPHER_COUNT; i++) {
    EVP_CIPHER_CTX_free(shared_ctx[i]); /* NULL-safe; cleanses the key schedule */
    shared_ctx[i] = NULL;
  }
  shared_hook = false;
  for (int i = 0; i < CIPHER_COUNT; i++) keyed_by[i] = NULL;
}

/* This thread's context for `cipher`, keyed with `a`'s key and `nonce` for one message; NULL when OpenSSL failed
 * (its error queued). */
static EVP_CIPHER_CTX* keyed_ctx(const en_aead* a, const uint8_t* nonce, int enc) {
  EVP_CIPHER_CTX* ctx = shared_ctx[a->cipher];
  if (ctx == NULL) {
    EVP_CIPHER* cipher = EVP_CIPHER_fetch(NULL, FETCH_NAME[a->cipher], NULL);
    if (cipher == NULL) return NULL;
    ctx = EVP_CIPHER_CTX_new();
    const bool ok = ctx != NULL && EVP_CipherInit_ex(ctx, cipher, NULL, NULL, NULL, enc) == 1;
    EVP_CIPHER_free(cipher); /* the context holds its own reference */
    if (!ok) {
      EVP_CIPHER_CTX_free(ctx);
      return NULL;
    }
    shared_ctx[a->cipher] = ctx;
  }
  keyed_by[a->cipher] = a;
  return EVP_CipherInit_ex(ctx, NULL, NULL, a->key, nonce, enc) == 1 ? ctx : NULL;
}

static bool get_u8_len(napi_env env, napi_value v, const char* what, size_t want, uint8_t** data) {
  size_t len;
  if (!en_get_u8(env, v, what, data, &len)) return false;
  if (len != want) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be %zu bytes, got %zu", what, want, len);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  return true;
}

/* The live context behind a wrapper from aeadNew; NULL (with an exception pending) otherwise. */
static en_aead* get_ctx(napi_env env, napi_value v) {
  napi_valuetype t = napi_undefined;
  bool ours = false;
  en_aead* a = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object || napi_check_object_type_tag(env, v, &AEAD_TAG, &ours) != napi_ok ||
      !ours || napi_unwrap(env, v, (void**)&a) != napi_ok || a == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "ctx must be a context from aeadNew()");
    return NULL;
  }
  if (!a->live) {
    en_throw_code(env, "ERR_NATIVE_AEAD_FREED", "the AEAD context was freed (aeadFree)");
    return NULL;
  }
  return a;
}

/* In-place (out == in) or AD-only (out == NULL) update of len bytes; false on any OpenSSL failure. */
static bool update(EVP_CIPHER_CTX* ctx, uint8_t* out, const uint8_t* in, size_t len) {
  while (len > 0) {
    const size_t n = len < AEAD_CHUNK ? len : AEAD_CHUNK;
    int outl = 0;
    if (EVP_CipherUpdate(ctx, out, &outl, in, (int)n) != 1) return false;
    /* both ciphers are streams: every byte in is a byte out, at once (in place depends on it) */
    if (out != NULL && (size_t)outl != n) return false;
    in += n;
    if (out != NULL) out += n;
    len -= n;
  }
  return true;
}

static napi_value js_aead_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "aeadNew(cipher, key) needs 2 arguments");
    return NULL;
  }
  char name[32];
  size_t name_len = 0;
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "cipher must be a string");
    return NULL;
  }
  /* exact length: an embedded NUL ('chacha20-poly1305\0…') or a truncated long string is no match */
#define NAME_IS(lit) (name_len == sizeof(lit) - 1 && memcmp(name, lit, sizeof(lit) - 1) == 0)
  int cipher_id;
  if (NAME_IS("chacha20-poly1305")) {
    cipher_id = CIPHER_CHACHA;
  } else if (NAME_IS("aes-256-gcm")) {
    cipher_id = CIPHER_AES_GCM;
  } else {
    /* never echo the string (it is JS's, and a long one was truncated anyway) */
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "cipher must be 'chacha20-poly1305' or 'aes-256-gcm'");
    return NULL;
  }
#undef NAME_IS
  uint8_t* key;
  if (!get_u8_len(env, argv[1], "key", AEAD_KEY_LEN, &key)) return NULL;

  en_aead* a = calloc(1, sizeof *a);
  if (a == NULL) {
    en_throw_errno(env, 12 /* ENOMEM */, "malloc", NULL);
    return NULL;
  }
  a->cipher = cipher_id;
  memcpy(a->key, key, AEAD_KEY_LEN);
  a->live = true;
  /* set up this thread's context now, so a cipher OpenSSL cannot provide fails here, as a per-key context did */
  static const uint8_t zero_nonce[AEAD_NONCE_LEN];
  if (keyed_ctx(a, zero_nonce, 1) == NULL) {
    explicit_bzero(a->key, sizeof a->key);
    free(a);
    throw_openssl(env, "EVP_CipherInit_ex (key)");
    return NULL;
  }
  __atomic_fetch_add(&aead_created, 1, __ATOMIC_RELAXED);

  napi_value obj;
  if (napi_create_object(env, &obj) != napi_ok || napi_type_tag_object(env, obj, &AEAD_TAG) != napi_ok ||
      napi_wrap(env, obj, a, aead_finalize, NULL, NULL) != napi_ok) {
    free_ctx(a);
    free(a);
    en_throw_napi_failure(env, "wrapping the AEAD context");
    return NULL;
  }
  return obj; /* from here the finalizer owns a */
}

typedef struct {
  uint8_t* p;
  size_t len;
} span;

#define SEAL_STACK_PARTS 16

static napi_value js_aead_seal(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 5) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "aeadSeal(ctx, nonce, ad, parts, tag) needs 5 arguments");
    return NULL;
  }
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, argv[3], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[3], &n) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "parts must be an Array of Uint8Array");
    return NULL;
  }
  napi_value vals_stack[SEAL_STACK_PARTS];
  span spans_stack[SEAL_STACK_PARTS];
  napi_value* vals = vals_stack;
  span* spans = spans_stack;
  if (n > SEAL_STACK_PARTS) {
    vals = malloc((size_t)n * sizeof *vals);
    spans = malloc((size_t)n * sizeof *spans);
    if (vals == NULL || spans == NULL) {
      free(vals);
      free(spans);
      en_throw_errno(env, 12 /* ENOMEM */, "malloc", NULL);
      return NULL;
    }
  }
  napi_value result = NULL;
  /* 1. the elements: an accessor may run JS here (and detach anything), so no pointer is taken before this */
  for (uint32_t i = 0; i < n; i++) {
    if (napi_get_element(env, argv[3], i, &vals[i]) != napi_ok) {
      en_throw_napi_failure(env, "reading parts");
      goto out;
    }
  }
  /* 2. every pointer and length; no JS runs from here on */
  en_aead* a = get_ctx(env, argv[0]);
  if (a == NULL) goto out;
  uint8_t *nonce, *ad, *tag;
  size_t ad_len;
  if (!get_u8_len(env, argv[1], "nonce", AEAD_NONCE_LEN, &nonce)) goto out;
  if (!en_get_u8(env, argv[2], "ad", &ad, &ad_len)) goto out;
  if (!get_u8_len(env, argv[4], "tag", AEAD_TAG_LEN, &tag)) goto out;
  for (uint32_t i = 0; i < n; i++) {
    if (!en_get_u8(env, vals[i], "every element of parts", &spans[i].p, &spans[i].len)) goto out;
  }
  /* 3. the message */
  EVP_CIPHER_CTX* ctx = keyed_ctx(a, nonce, 1);
  if (ctx == NULL) {
    throw_openssl(env, "EVP_CipherInit_ex (seal key and nonce)");
    goto out;
  }
  if (!update(ctx, NULL, ad, ad_len)) {
    throw_openssl(env, "EVP_CipherUpdate (seal ad)");
    goto out;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (!update(ctx, spans[i].p, spans[i].p, spans[i].len)) {
      throw_openssl(env, "EVP_CipherUpdate (seal)");
      goto out;
    }
  }
  uint8_t fin[32];
  int fin_len = 0;
  uint8_t t[AEAD_TAG_LEN];
  if (EVP_CipherFinal_ex(ctx, fin, &fin_len) != 1 || fin_len != 0) {
    throw_openssl(env, "EVP_CipherFinal_ex (seal)");
    goto out;
  }
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, AEAD_TAG_LEN, t) != 1) {
    throw_openssl(env, "EVP_CTRL_AEAD_GET_TAG");
    goto out;
  }
  memcpy(tag, t, AEAD_TAG_LEN);
  napi_get_undefined(env, &result);
out:
  if (vals != vals_stack) {
    free(vals);
    free(spans);
  }
  return result;
}

static napi_value js_aead_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 4) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "aeadOpen(ctx, nonce, ad, data) needs 4 arguments");
    return NULL;
  }
  en_aead* a = get_ctx(env, argv[0]);
  if (a == NULL) return NULL;
  uint8_t *nonce, *ad, *data;
  size_t ad_len, len;
  if (!get_u8_len(env, argv[1], "nonce", AEAD_NONCE_LEN, &nonce)) return NULL;
  if (!en_get_u8(env, argv[2], "ad", &ad, &ad_len)) return NULL;
  if (!en_get_u8(env, argv[3], "data", &data, &len)) return NULL;
  if (len < AEAD_TAG_LEN) {
    char msg[128];
    snprintf(msg, sizeof msg, "data must be at least %d bytes (ciphertext and tag), got %zu", AEAD_TAG_LEN, len);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return NULL;
  }
  const size_t body = len - AEAD_TAG_LEN;
  uint8_t t[AEAD_TAG_LEN];
  memcpy(t, data + body, AEAD_TAG_LEN); /* copied first: ad or nonce may alias it, the body must not matter */
  const char* failed = NULL;
  bool authentic = false;
  EVP_CIPHER_CTX* ctx = keyed_ctx(a, nonce, 0);
  if (ctx == NULL) {
    failed = "EVP_CipherInit_ex (open key and nonce)";
  } else if (!update(ctx, NULL, ad, ad_len)) {
    failed = "EVP_CipherUpdate (open ad)";
  } else if (!update(ctx, data, data, body)) {
    failed = "EVP_CipherUpdate (open)";
  } else if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, AEAD_TAG_LEN, t) != 1) {
    failed = "EVP_CTRL_AEAD_SET_TAG";
  } else {
    uint8_t fin[32];
    int fin_len = 0;
    /* ≤ 0: the tag does not verify (the only way a decrypting final fails once the updates went through) */
    authentic = EVP_CipherFinal_ex(ctx, fin, &fin_len) > 0 && fin_len == 0;
  }
  if (!authentic) memset(data, 0, body); /* never leave unauthenticated plaintext behind */
  if (failed != NULL) {
    throw_openssl(env, failed);
    return NULL;
  }
  if (!authentic) ERR_clear_error();
  napi_value out;
  EN_CALL(env, napi_get_boolean(env, authentic, &out), NULL);
  return out;
}

static napi_value js_aead_free(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  napi_valuetype t = napi_undefined;
  bool ours = false;
  en_aead* a = NULL;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, argv[0], &AEAD_TAG, &ours) != napi_ok || !ours ||
      napi_unwrap(env, argv[0], (void**)&a) != napi_ok || a == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "ctx must be a context from aeadNew()");
    return NULL;
  }
  free_ctx(a); /* the wrapper (and a) stay until the finalizer */
  return NULL;
}

static napi_value js_aead_stats(napi_env env, napi_callback_info info) {
  napi_value o;
  EN_CALL(env, napi_create_object(env, &o), NULL);
  EN_CALL(env, en_set_u64(env, o, "created", __atomic_load_n(&aead_created, __ATOMIC_RELAXED)), NULL);
  EN_CALL(env, en_set_u64(env, o, "freed", __atomic_load_n(&aead_freed, __ATOMIC_RELAXED)), NULL);
  return o;
}

napi_status en_aead_init(napi_env env, napi_value exports) {
  if (ERR_clear_error == NULL || ERR_error_string_n == NULL || ERR_get_error == NULL || EVP_CIPHER_CTX_ctrl == NULL ||
      EVP_CIPHER_CTX_free == NULL || EVP_CIPHER_CTX_new == NULL || EVP_CIPHER_fetch == NULL || EVP_CIPHER_free == NULL ||
      EVP_CipherFinal_ex == NULL || EVP_CipherInit_ex == NULL || EVP_CipherUpdate == NULL)
    return napi_ok; /* no OpenSSL 3 in this process: no aead* */
  napi_status s;
  if (!shared_hook) {
    if ((s = napi_add_env_cleanup_hook(env, free_shared, NULL)) != napi_ok) return s;
    shared_hook = true;
  }
  if ((s = en_set_fn(env, exports, "aeadNew", js_aead_new)) != napi_ok) return s;
  if ((s = en_set_fn(env, exports, "aeadSeal", js_aead_seal)) != napi_ok) return s;
  if ((s = en_set_fn(env, exports, "aeadOpen", js_aead_open)) != napi_ok) return s;
  if ((s = en_set_fn(env, exports, "aeadFree", js_aead_free)) != napi_ok) return s;
  return en_set_fn(env, exports, "aeadStats", js_aead_stats);
}
