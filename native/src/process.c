/*
 * notDumpable(): prctl(PR_SET_DUMPABLE, 0) on the agent's own process, for `enclave-agent run` when the app is
 * sandboxed ([egress] enabled). A process of the same user may then no longer open /proc/<agent>/mem, environ
 * (the unseal key can be there) or fd, nor ptrace it, without CAP_SYS_PTRACE — which the die-with-parent wrapper
 * takes from the app. It also keeps the agent's memory (keys) out of core dumps. Throws an errno error on failure.
 */
#include "common.h"

#include <errno.h>
#include <sys/prctl.h>

static napi_value js_not_dumpable(napi_env env, napi_callback_info info) {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) en_throw_errno(env, errno, "prctl", "PR_SET_DUMPABLE");
  return NULL;
}

napi_status en_process_init(napi_env env, napi_value exports) { return en_set_fn(env, exports, "notDumpable", js_not_dumpable); }
