/*
 * The Nitro Security Module call (WIRE.md §6): open the device, one ioctl NSM_IOCTL_RAW with a request and
 * a response iovec, the driver rewrites response.len. Runs on the libuv thread pool (napi_async_work): the
 * ioctl takes milliseconds and must not stall the event loop.
 *
 *   nsmRequest(request: Uint8Array, devicePath = "/dev/nsm"): Promise<Buffer>
 *
 * A request above 4 KiB is refused before any syscall (the driver would refuse it too, with EINVAL).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define NSM_IOCTL_RAW 0xC0200A00UL /* _IOWR(0x0A, 0, struct nsm_raw), sizeof == 0x20 */
#define NSM_REQUEST_MAX 4096
#define NSM_RESPONSE_MAX 12288
#define NSM_PATH_MAX 4096

/* The driver's own layout (drivers/misc/nsm.c): two { u64 addr; u64 len; } iovecs. */
struct nsm_iovec {
  uint64_t addr;
  uint64_t len;
};
struct nsm_raw {
  struct nsm_iovec request;
  struct nsm_iovec response;
};
_Static_assert(sizeof(struct nsm_raw) == 0x20, "nsm_raw must be 32 bytes to match the ioctl number");

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  char path[NSM_PATH_MAX];
  uint8_t request[NSM_REQUEST_MAX];
  size_t request_len;
  uint8_t response[NSM_RESPONSE_MAX];
  size_t response_len;
  int err;
  const char* syscall;
} nsm_job;

static void nsm_execute(napi_env env, void* data) {
  nsm_job* job = (nsm_job*)data;
  int fd;
  do fd = open(job->path, O_RDWR | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    job->err = errno;
    job->syscall = "open";
    return;
  }
  struct nsm_raw raw;
  raw.request.addr = (uint64_t)(uintptr_t)job->request;
  raw.request.len = job->request_len;
  raw.response.addr = (uint64_t)(uintptr_t)job->response;
  raw.response.len = sizeof job->response;
  int r;
  do r = ioctl(fd, NSM_IOCTL_RAW, &raw);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    job->err = errno;
    job->syscall = "ioctl";
  } else if (raw.response.len > sizeof job->response) {
    job->err = EMSGSIZE; /* a driver that claims more than the buffer we gave it: refuse to read past it */
    job->syscall = "ioctl";
  } else {
    job->response_len = (size_t)raw.response.len;
  }
  close(fd);
}

/* Settles the promise with Error{code, message} whatever fails on the way: a promise from nsmRequest always
 * settles (with undefined as the reason when not even an Error can be built). */
static void reject_code(napi_env env, napi_deferred deferred, const char* code, const char* message) {
  napi_value c = NULL, m = NULL, e = NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c) != napi_ok ||
      napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &m) != napi_ok || napi_create_error(env, c, m, &e) != napi_ok) {
    e = NULL;
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) napi_get_and_clear_last_exception(env, &e);
    if (e == NULL) napi_get_undefined(env, &e);
  }
  napi_reject_deferred(env, deferred, e);
}

static void nsm_complete(napi_env env, napi_status status, void* data) {
  nsm_job* job = (nsm_job*)data;
  napi_value v = NULL;
  if (status != napi_ok) {
    reject_code(env, job->deferred, "ERR_NSM_CANCELLED", "NSM request was cancelled");
  } else if (job->err != 0) {
    v = en_errno_error(env, job->err, job->syscall, job->path);
    if (v == NULL || napi_reject_deferred(env, job->deferred, v) != napi_ok)
      reject_code(env, job->deferred, "ERR_NATIVE_NAPI", "NSM request failed and its error could not be built");
  } else if (napi_create_buffer_copy(env, job->response_len, job->response, NULL, &v) != napi_ok ||
             napi_resolve_deferred(env, job->deferred, v) != napi_ok) {
    reject_code(env, job->deferred, "ERR_NATIVE_NAPI", "cannot allocate the NSM response buffer");
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value js_nsm_request(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  bool is_ta = false;
  napi_typedarray_type type;
  size_t length = 0;
  void* data = NULL;
  if (argc > 0) napi_is_typedarray(env, argv[0], &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "nsmRequest needs a Uint8Array request");
    return NULL;
  }
  if (length == 0 || length > NSM_REQUEST_MAX) {
    char msg[160];
    snprintf(msg, sizeof msg, "NSM request must be 1..%d bytes, got %zu", NSM_REQUEST_MAX, length);
    en_throw_code(env, "ERR_NSM_REQUEST_SIZE", msg);
    return NULL;
  }
  nsm_job* job = calloc(1, sizeof *job);
  if (job == NULL) {
    en_throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  strcpy(job->path, "/dev/nsm");
  napi_valuetype t = napi_undefined;
  if (argc > 1) napi_typeof(env, argv[1], &t);
  if (t == napi_string) {
    size_t n = 0;
    if (napi_get_value_string_utf8(env, argv[1], job->path, sizeof job->path, &n) != napi_ok || n == 0 ||
        n >= sizeof job->path - 1) {
      free(job);
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "NSM device path must be a non-empty string below 4 KiB");
      return NULL;
    }
    /* open() stops at the first NUL: "/dev/nsm\0…" must not name another file than it says */
    if (memchr(job->path, '\0', n) != NULL) {
      free(job);
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "NSM device path must not contain NUL bytes");
      return NULL;
    }
  } else if (t != napi_undefined && t != napi_null) {
    free(job);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "NSM device path must be a string");
    return NULL;
  }
  memcpy(job->request, data, length); /* copied: the caller may reuse its buffer while the ioctl runs */
  job->request_len = length;
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    free(job);
    en_throw_napi_failure(env, "napi_create_promise");
    return NULL;
  }
  /* From here the promise is what the caller gets: every failure rejects it (a promise that never settles
   * would hang whoever awaits the attestation). */
  if (napi_create_string_utf8(env, "enclave_native:nsm", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, nsm_execute, nsm_complete, job, &job->work) != napi_ok) {
    reject_code(env, job->deferred, "ERR_NATIVE_NAPI", "enclave_native: creating the NSM async work failed");
    free(job);
    return promise;
  }
  if (napi_queue_async_work(env, job->work) != napi_ok) {
    reject_code(env, job->deferred, "ERR_NATIVE_NAPI", "enclave_native: queueing the NSM async work failed");
    napi_delete_async_work(env, job->work);
    free(job);
    return promise;
  }
  return promise;
}

napi_status en_nsm_init(napi_env env, napi_value exports) {
  napi_value v;
  napi_status st;
  if ((st = napi_create_uint32(env, NSM_REQUEST_MAX, &v)) != napi_ok) return st;
  if ((st = napi_set_named_property(env, exports, "NSM_REQUEST_MAX", v)) != napi_ok) return st;
  if ((st = napi_create_uint32(env, NSM_RESPONSE_MAX, &v)) != napi_ok) return st;
  if ((st = napi_set_named_property(env, exports, "NSM_RESPONSE_MAX", v)) != napi_ok) return st;
  return en_set_fn(env, exports, "nsmRequest", js_nsm_request);
}
