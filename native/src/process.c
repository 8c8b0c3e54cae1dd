/*
 * notDumpable(): prctl(PR_SET_DUMPABLE, 0) on the agent's own process, for `enclave-agent run` when the app is
 * sandboxed ([egress] enabled). A process of the same user may then no longer open /proc/<agent>/mem, environ
 * (the unseal key can be there) or fd, nor ptrace it, without CAP_SYS_PTRACE — which the die-with-parent wrapper
 * takes from the app. It also keeps the agent's memory (keys) out of core dumps. Throws an errno error on failure.
 *
 * mallocTrim(callback): glibc's malloc_trim(0) on the thread pool, which returns free pages inside the heap, not
 * only its top, to the system (src/runtime/memory-trim.ts calls it after a burst); callback(true) when it released
 * memory, false elsewhere (no glibc).
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/prctl.h>
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

napi_status en_process_init(napi_env env, napi_value exports) {
  napi_status st = en_set_fn(env, exports, "notDumpable", js_not_dumpable);
  return st != napi_ok ? st : en_set_fn(env, exports, "mallocTrim", js_malloc_trim);
}
