/*
 * clockStep(deltaMs): moves CLOCK_REALTIME by deltaMs milliseconds (clock_gettime, add, clock_settime), for the
 * agent's [clock] correct = true (src/ops/clock.ts decides whether and by how much; the host supplies the time,
 * so it is bounded there). The argument is checked before any syscall: an integer number of milliseconds,
 * non-zero, at most one hour either way — anything else throws TypeError/RangeError ERR_INVALID_ARG_VALUE and
 * the clock is untouched. Without CAP_SYS_TIME clock_settime fails with EPERM, thrown as an errno error.
 */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#define EN_CLOCK_MAX_STEP_MS 3600000.0

static napi_value js_clock_step(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  napi_valuetype type = napi_undefined;
  if (argc >= 1) EN_CALL(env, napi_typeof(env, argv[0], &type), NULL);
  if (type != napi_number) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "clockStep: deltaMs must be a number");
    return NULL;
  }
  double ms = 0;
  EN_CALL(env, napi_get_value_double(env, argv[0], &ms), NULL);
  if (!isfinite(ms) || ms != trunc(ms) || ms == 0 || fabs(ms) > EN_CLOCK_MAX_STEP_MS) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "clockStep: deltaMs must be a non-zero integer within +-3600000");
    return NULL;
  }
  struct timespec now;
  if (clock_gettime(CLOCK_REALTIME, &now) != 0) {
    en_throw_errno(env, errno, "clock_gettime", "CLOCK_REALTIME");
    return NULL;
  }
  int64_t ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec + (int64_t)ms * 1000000LL;
  if (ns <= 0) {
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", "clockStep: the step would take the clock before 1970");
    return NULL;
  }
  struct timespec next = { .tv_sec = (time_t)(ns / 1000000000LL), .tv_nsec = (long)(ns % 1000000000LL) };
  if (clock_settime(CLOCK_REALTIME, &next) != 0) {
    en_throw_errno(env, errno, "clock_settime", "CLOCK_REALTIME");
    return NULL;
  }
  return NULL;
}

napi_status en_clock_init(napi_env env, napi_value exports) { return en_set_fn(env, exports, "clockStep", js_clock_step); }
