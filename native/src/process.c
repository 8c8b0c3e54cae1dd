/*
 * notDumpable(): prctl(PR_SET_DUMPABLE, 0) on the agent's own process, for `enclave-agent run` when the app is
 * sandboxed ([egress] enabled). A process of the same user may then no longer open /proc/<agent>/mem, environ
 * (the unseal key can be there) or fd, nor ptrace it, without CAP_SYS_PTRACE — which the die-with-parent wrapper
 * takes from the app. It also keeps the agent's memory (keys) out of core dumps. Throws an errno error on failure.
 *
 * mallocTrim(): glibc's malloc_trim(0), which returns free pages inside the heap, not only its top, to the
 * system (src/runtime/memory-trim.ts calls it after a burst); true when it released memory, false elsewhere.
 */
#include "common.h"

#include <errno.h>
#include <sys/prctl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value js_not_dumpable(napi_env env, napi_callback_info info) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) en_throw_errno(env, errno, "prctl", "PR_SET_DUMPABLE");
  return NULL;
}

static napi_value js_malloc_trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
#ifdef __GLIBC__
  napi_get_boolean(env, malloc_trim(0) == 1, &out);
#else
  napi_get_boolean(env, false, &out);
#endif
  return out;
}

napi_status en_process_init(napi_env env, napi_value exports) {
  napi_status st = en_set_fn(env, exports, "notDumpable", js_not_dumpable);
  return st != napi_ok ? st : en_set_fn(env, exports, "mallocTrim", js_malloc_trim);
}
