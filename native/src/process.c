/*
 * notDumpable(): prctl(PR_SET_DUMPABLE, 0) on the agent's own process, in `enclave-agent run` whether or not the
 * app is sandboxed ([egress] enabled). A process of the same user may then no longer open /proc/<agent>/mem, environ
 * (the unseal key can be there) or fd, nor ptrace it, without CAP_SYS_PTRACE — which the die-with-parent wrapper
 * takes from the app. It also keeps the agent's memory (keys) out of core dumps. Throws an errno error on failure.
 *
 * mallocTrim(callback): glibc's malloc_trim(0) on the thread pool, which returns free pages inside the heap, not
 * only its top, to the system (src/runtime/memory-trim.ts calls it after a burst); callback(true) when it released
 * memory, false elsewhere (no glibc).
 *
 * sealedCopy(path): the file's bytes in a memfd sealed against writing, growing, shrinking and further seals —
 * seals bind root too. The supervisor launches the sandboxing wrapper from it (/proc/self/fd/N): an app running as
 * root could otherwise rewrite the wrapper's file between two of its launches and start its next life outside the
 * sandbox. Returns the fd (close-on-exec: execve resolves /proc/self/fd/N before closing it). Throws an errno error.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value js_not_dumpable(napi_env env, napi_callback_info info) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) en_throw_errno(env, errno, "prctl", "PR_SET_DUMPABLE");
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_ref cb;
  bool released;
} trim_job;

static void trim_execute(napi_env env, void* data) {
  (void)env;
  trim_job* j = data;
#ifdef __GLIBC__
  j->released = malloc_trim(0) == 1;
#endif
}

static void trim_complete(napi_env env, napi_status status, void* data) {
  trim_job* j = data;
  napi_value cb, arg, global;
  if (status == napi_ok && napi_get_reference_value(env, j->cb, &cb) == napi_ok && napi_get_boolean(env, j->released, &arg) == napi_ok &&
      napi_get_global(env, &global) == napi_ok)
    napi_call_function(env, global, cb, 1, &arg, NULL);
  napi_delete_reference(env, j->cb);
  napi_delete_async_work(env, j->work);
  free(j);
}

/* mallocTrim(cb): malloc_trim on the libuv thread pool (it walks every arena, milliseconds for a large heap),
 * then cb(released) on this thread. */
static napi_value js_malloc_trim(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  napi_valuetype t = napi_undefined;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "mallocTrim(callback): callback must be a function");
    return NULL;
  }
  trim_job* j = calloc(1, sizeof *j);
  napi_value name;
  if (j == NULL) {
    en_throw_errno(env, 12 /* ENOMEM */, "malloc", NULL);
    return NULL;
  }
  if (napi_create_reference(env, argv[0], 1, &j->cb) != napi_ok || napi_create_string_utf8(env, "enclave-agent:mallocTrim", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, trim_execute, trim_complete, j, &j->work) != napi_ok) {
    if (j->cb != NULL) napi_delete_reference(env, j->cb);
    free(j);
    en_throw_napi_failure(env, "starting mallocTrim");
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    napi_delete_reference(env, j->cb);
    napi_delete_async_work(env, j->work);
    free(j);
    en_throw_napi_failure(env, "queueing mallocTrim");
    return NULL;
  }
  return NULL;
}

/* Copies src into dst to EOF; 0 or an errno. */
static int copy_fd(int src, int dst) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(src, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return 0;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(dst, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno;
      off += w;
    }
  }
}

static napi_value js_sealed_copy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  char path[4096];
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len == 0 || len >= sizeof path - 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "sealedCopy(path): path must be a non-empty string");
    return NULL;
  }
  int src = open(path, O_RDONLY | O_CLOEXEC);
  if (src < 0) {
    en_throw_errno(env, errno, "open", path);
    return NULL;
  }
  int fd = memfd_create("enclave_die_with_parent", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    int err = errno;
    close(src);
    en_throw_errno(env, err, "memfd_create", NULL);
    return NULL;
  }
  int err = copy_fd(src, fd);
  close(src);
  const char* step = "copy";
  if (err == 0 && fchmod(fd, 0500) != 0) err = errno, step = "fchmod";
  if (err == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) err = errno, step = "F_ADD_SEALS";
  if (err != 0) {
    close(fd);
    en_throw_errno(env, err, "sealedCopy", step);
    return NULL;
  }
  napi_value out;
  EN_CALL(env, napi_create_int32(env, fd, &out), NULL);
  return out;
}

napi_status en_process_init(napi_env env, napi_value exports) {
  napi_status st = en_set_fn(env, exports, "notDumpable", js_not_dumpable);
  if (st == napi_ok) st = en_set_fn(env, exports, "mallocTrim", js_malloc_trim);
  return st != napi_ok ? st : en_set_fn(env, exports, "sealedCopy", js_sealed_copy);
}
