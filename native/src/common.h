/*
 * enclave_native: the agent's production I/O (AF_VSOCK sockets, the /dev/nsm ioctl, loopback bring-up).
 * Shared declarations. Plain C, plain node_api.h; libuv (shipped inside node) for the poll handles.
 */
#ifndef ENCLAVE_NATIVE_COMMON_H
#define ENCLAVE_NATIVE_COMMON_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The vsock write limit (WIRE.md §2): no single write() syscall may exceed this many bytes. */
#define EN_MAX_WRITE 32768

/* Every napi call in this addon goes through this: on failure, throw (if nothing is pending) and bail. */
#define EN_CALL(env, call, ret)                                          \
  do {                                                                   \
    if ((call) != napi_ok) {                                             \
      en_throw_napi_failure((env), #call);                               \
      return ret;                                                        \
    }                                                                    \
  } while (0)

void en_throw_napi_failure(napi_env env, const char* what);
/* Builds an Error like Node's own: message "<syscall> <CODE> (<strerror>)[: detail]", err.code = "ECONNRESET",
 * err.errno = -104, err.syscall = "read". `err` is a positive errno. */
napi_value en_errno_error(napi_env env, int err, const char* syscall, const char* detail);
void en_throw_errno(napi_env env, int err, const char* syscall, const char* detail);
/* An Error with a non-errno code (e.g. "ERR_NSM_REQUEST_TOO_LARGE"). */
void en_throw_code(napi_env env, const char* code, const char* message);

/* Write/read counters, recorded at the syscall (so tests can assert on what the kernel was really asked). */
typedef struct {
  uint64_t writes;        /* send() calls issued */
  uint64_t bytes_written; /* bytes the kernel accepted */
  uint64_t max_write;     /* largest length ever passed to one send() */
  uint64_t eagain_writes; /* send() calls that returned EAGAIN */
  uint64_t reads;         /* read() calls that returned data or EOF */
  uint64_t eagain_reads;  /* read() calls that returned EAGAIN */
  uint64_t bytes_read;
  uint64_t max_read;
  uint64_t opened;        /* sockets created (listen/connect/accept) */
  uint64_t closed;        /* sockets closed */
} en_stats_t;
/* Process-wide (shared by every worker thread that loads the addon), hence atomic. */
extern en_stats_t en_stats;
#define EN_STAT_ADD(field, n) __atomic_fetch_add(&en_stats.field, (uint64_t)(n), __ATOMIC_RELAXED)
#define EN_STAT_MAX(field, n)                                                                   \
  do {                                                                                          \
    uint64_t v_ = (uint64_t)(n), cur_ = __atomic_load_n(&en_stats.field, __ATOMIC_RELAXED);     \
    while (v_ > cur_ &&                                                                         \
           !__atomic_compare_exchange_n(&en_stats.field, &cur_, v_, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
      ;                                                                                         \
  } while (0)
#define EN_STAT_GET(field) __atomic_load_n(&en_stats.field, __ATOMIC_RELAXED)

/* socket.c owns the env's instance data (N-API keeps ONE pointer per addon per env): other parts must not call
 * napi_set_instance_data, or NativeSocket construction would read their struct as its own. */
napi_status en_socket_init(napi_env env, napi_value exports);
napi_status en_nsm_init(napi_env env, napi_value exports);
napi_status en_loopback_init(napi_env env, napi_value exports);
napi_status en_intarray_init(napi_env env, napi_value exports);
napi_status en_aead_init(napi_env env, napi_value exports);
napi_status en_clock_init(napi_env env, napi_value exports);
napi_status en_process_init(napi_env env, napi_value exports);
napi_status en_origdst_init(napi_env env, napi_value exports);
napi_status en_tcpqueue_init(napi_env env, napi_value exports);
napi_status en_splice_init(napi_env env, napi_value exports);

napi_status en_set_fn(napi_env env, napi_value obj, const char* name, napi_callback cb);
/* A Uint8Array argument's bytes (byteOffset honoured); false with a TypeError ERR_INVALID_ARG_TYPE thrown for
 * anything else. A detached buffer reports length 0. */
bool en_get_u8(napi_env env, napi_value v, const char* what, uint8_t** data, size_t* length);
napi_status en_set_u64(napi_env env, napi_value obj, const char* name, uint64_t v);
/* A JS number as an integer min..max (no NaN, fraction, negative or overflow); false with a RangeError
 * ERR_OUT_OF_RANGE "<what> must be an integer <min>..<max>, got <d>" thrown otherwise. */
bool en_int_in_range(napi_env env, double d, const char* what, uint64_t min, uint64_t max, uint64_t* out);

#endif
