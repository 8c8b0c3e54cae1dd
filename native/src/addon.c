/* Module entry: error helpers, the syscall counters, and registration of the three parts. */
#include "common.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

en_stats_t en_stats;

void en_throw_napi_failure(napi_env env, const char* what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info* info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "enclave_native: %s failed (%s)", what,
           info && info->error_message ? info->error_message : "unknown napi error");
  napi_throw_error(env, "ERR_NATIVE_NAPI", msg);
}

static void set_str(napi_env env, napi_value obj, const char* key, const char* val) {
  napi_value v;
  if (napi_create_string_utf8(env, val, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

napi_value en_errno_error(napi_env env, int err, const char* syscall, const char* detail) {
  /* libuv's error codes on Unix are -errno, and node exports uv_err_name: "ECONNRESET", "ENOTTY", ... */
  const char* name = uv_err_name(-err);
  if (name == NULL || strncmp(name, "Unknown", 7) == 0) name = "EUNKNOWN";
  char msg[512];
  if (detail && detail[0])
    snprintf(msg, sizeof msg, "%s %s (%s): %s", syscall, name, strerror(err), detail);
  else
    snprintf(msg, sizeof msg, "%s %s (%s)", syscall, name, strerror(err));
  napi_value m, e, errno_v;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok) return NULL;
  if (napi_create_error(env, NULL, m, &e) != napi_ok) return NULL;
  set_str(env, e, "code", name);
  set_str(env, e, "syscall", syscall);
  if (napi_create_int32(env, -err, &errno_v) == napi_ok) napi_set_named_property(env, e, "errno", errno_v);
  return e;
}

bool en_get_u8(napi_env env, napi_value v, const char* what, uint8_t** data, size_t* length) {
  napi_typedarray_type type;
  void* ptr = NULL;
  size_t len = 0;
  /* no napi_is_typedarray first: get_typedarray_info answers napi_invalid_arg for anything else (nothing thrown),
   * and one N-API call less is ~20 ns of the ~150 ns a call costs */
  if (napi_get_typedarray_info(env, v, &type, &len, &ptr, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a Uint8Array", what);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  /* a detached buffer reports length 0 (and possibly NULL data): nothing is ever read through it */
  *data = (uint8_t*)ptr;
  *length = ptr == NULL ? 0 : len;
  return true;
}

bool en_int_in_range(napi_env env, double d, const char* what, uint64_t min, uint64_t max, uint64_t* out) {
  /* NaN fails the first test; the range is checked before the cast, so the cast is defined */
  if (!(d >= (double)min) || d > (double)max || d >= 18446744073709551616.0 || (double)(uint64_t)d != d) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be an integer %llu..%llu, got %.17g", what, (unsigned long long)min, (unsigned long long)max, d);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
    return false;
  }
  *out = (uint64_t)d;
  return true;
}

void en_throw_errno(napi_env env, int err, const char* syscall, const char* detail) {
  napi_value e = en_errno_error(env, err, syscall, detail);
  if (e) napi_throw(env, e);
  else en_throw_napi_failure(env, "creating an errno error");
}

void en_throw_code(napi_env env, const char* code, const char* message) { napi_throw_error(env, code, message); }

napi_status en_set_fn(napi_env env, napi_value obj, const char* name, napi_callback cb) {
  napi_value fn;
  napi_status s = napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, obj, name, fn);
}

napi_status en_set_u64(napi_env env, napi_value obj, const char* name, uint64_t v) {
  napi_value n;
  napi_status s = napi_create_double(env, (double)v, &n); /* exact below 2^53 */
  if (s != napi_ok) return s;
  return napi_set_named_property(env, obj, name, n);
}

/* stats(): process-wide counters since load (or the last resetStats()). */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value o;
  EN_CALL(env, napi_create_object(env, &o), NULL);
  EN_CALL(env, en_set_u64(env, o, "writes", EN_STAT_GET(writes)), NULL);
  EN_CALL(env, en_set_u64(env, o, "bytesWritten", EN_STAT_GET(bytes_written)), NULL);
  EN_CALL(env, en_set_u64(env, o, "maxWrite", EN_STAT_GET(max_write)), NULL);
  EN_CALL(env, en_set_u64(env, o, "eagainWrites", EN_STAT_GET(eagain_writes)), NULL);
  EN_CALL(env, en_set_u64(env, o, "reads", EN_STAT_GET(reads)), NULL);
  EN_CALL(env, en_set_u64(env, o, "eagainReads", EN_STAT_GET(eagain_reads)), NULL);
  EN_CALL(env, en_set_u64(env, o, "bytesRead", EN_STAT_GET(bytes_read)), NULL);
  EN_CALL(env, en_set_u64(env, o, "maxRead", EN_STAT_GET(max_read)), NULL);
  EN_CALL(env, en_set_u64(env, o, "opened", EN_STAT_GET(opened)), NULL);
  EN_CALL(env, en_set_u64(env, o, "closed", EN_STAT_GET(closed)), NULL);
  return o;
}

static napi_value js_reset_stats(napi_env env, napi_callback_info info) {
  /* opened/closed are kept: they count live sockets, which a reset must not forget. */
  __atomic_store_n(&en_stats.writes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.bytes_written, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.max_write, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.eagain_writes, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.reads, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.eagain_reads, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.bytes_read, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&en_stats.max_read, 0, __ATOMIC_RELAXED);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value max_write;
  EN_CALL(env, napi_create_uint32(env, EN_MAX_WRITE, &max_write), NULL);
  EN_CALL(env, napi_set_named_property(env, exports, "MAX_WRITE", max_write), NULL);
  EN_CALL(env, en_set_fn(env, exports, "stats", js_stats), NULL);
  EN_CALL(env, en_set_fn(env, exports, "resetStats", js_reset_stats), NULL);
  EN_CALL(env, en_socket_init(env, exports), NULL);
  EN_CALL(env, en_nsm_init(env, exports), NULL);
  EN_CALL(env, en_loopback_init(env, exports), NULL);
  EN_CALL(env, en_intarray_init(env, exports), NULL);
  EN_CALL(env, en_aead_init(env, exports), NULL);
  EN_CALL(env, en_clock_init(env, exports), NULL);
  EN_CALL(env, en_process_init(env, exports), NULL);
  EN_CALL(env, en_origdst_init(env, exports), NULL);
  EN_CALL(env, en_tcpqueue_init(env, exports), NULL);
  EN_CALL(env, en_splice_init(env, exports), NULL);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
