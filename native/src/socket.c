/*
 * Non-blocking stream sockets (AF_VSOCK and AF_UNIX through the same code) driven by libuv poll handles.
 *
 * One NativeSocket JS object wraps one en_sock. The JS side (src/transport/native-stream.ts) owns the
 * stream logic; this file only does syscalls and delivers readiness events:
 *   listen(spec, backlog) / connect(spec)  -> NativeSocket
 *   s.setCallback((status, events) => ...) ; s.poll(events)   (1 = readable, 2 = writable, 0 = stop)
 *   s.read()  -> Buffer | null (EOF) | undefined (EAGAIN)
 *   s.write(u8, offset) -> bytes written (one send() of at most EN_MAX_WRITE bytes) | -1 (EAGAIN)
 *   s.accept() -> NativeSocket | null (EAGAIN) ; s.connectResult() ; s.shutdown() ; s.close()
 *   s.detach() -> fd (the object lets go of it) ; adopt(fd, family) -> NativeSocket ; dupFd(fd) -> fd
 *
 * Lifetime rules (the reason this file is careful):
 *  - close() is idempotent. It stops the poll handle BEFORE closing the fd (libuv must never watch a closed
 *    fd: the number could be reused), hands the handle to uv_close (freed in its close callback, never
 *    touched again), closes the fd exactly once and drops the callback reference.
 *  - The en_sock struct is freed only by the wrapper's finalizer, so a poll callback that calls close()
 *    through JS never sees freed memory; after uv_poll_stop no further poll callback is delivered.
 *  - The finalizer closes an fd that JS forgot (an unreachable, never-closed socket), so nothing leaks.
 *  - detach() is close() without the close(2): the poll handle is stopped and released the same way, the
 *    object then behaves as closed (fd -1), and the descriptor is the caller's. This is how a connection
 *    accepted on one thread moves to another (src/transport/handoff.ts): adopt() on the other thread's copy
 *    of the addon (its own instance data, its own event loop) wraps the same descriptor again.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#ifdef __linux__
#include <linux/vm_sockets.h>
#endif

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

#define EN_READ_SIZE 65536

typedef struct {
  int fd;
  int family;
  uv_poll_t* poll; /* NULL until the first poll(); given to uv_close on close */
  int events;      /* events currently being watched (0 = stopped) */
  napi_env env;
  napi_ref cb;       /* strong: the event callback, until close() */
  napi_ref wrapper;  /* weak: the JS object, used as `this` for callbacks */
  napi_async_context actx;
} en_sock;

typedef struct {
  napi_ref ctor;
} en_instance;

/* Marks NativeSocket wrappers: a method called with another wrapped object as `this` (an AEAD context, another
 * addon's object) must be refused, not read as an en_sock (it would read an EVP_CIPHER_CTX* as an fd). */
static const napi_type_tag SOCK_TAG = {0x736f636b65747631ULL, 0x656e636c61766961ULL};

/* Token that lets only this file construct NativeSocket objects. */
typedef struct {
  int fd;
  int family;
  int taken; /* set once the new object's finalizer owns the fd */
} en_ctor_arg;

/* ---------- helpers ---------- */

/* This file's per-env state (set by en_socket_init); NULL with an exception pending if it is missing. */
static en_instance* instance(napi_env env) {
  void* data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok || data == NULL || ((en_instance*)data)->ctor == NULL) {
    en_throw_code(env, "ERR_NATIVE_NAPI", "enclave_native: the socket module's instance data is missing");
    return NULL;
  }
  return (en_instance*)data;
}

static void free_poll(uv_handle_t* h) { free(h); }

/* Stops watching the fd (before anything else: libuv must never watch an fd this object no longer owns),
 * hands the poll handle to uv_close and drops the callback. The fd itself is left to the caller. */
static void sock_release(en_sock* s) {
  if (s->poll != NULL) {
    uv_poll_stop(s->poll);
    s->poll->data = NULL;
    uv_close((uv_handle_t*)s->poll, free_poll);
    s->poll = NULL;
  }
  s->events = 0;
  if (s->cb != NULL) {
    napi_delete_reference(s->env, s->cb);
    s->cb = NULL;
  }
}

static void sock_close(en_sock* s) {
  sock_release(s);
  if (s->fd >= 0) {
    /* Linux closes the descriptor even when close() reports EINTR: never retry. */
    close(s->fd);
    s->fd = -1;
    EN_STAT_ADD(closed, 1);
  }
}

static void sock_finalize(napi_env env, void* data, void* hint) {
  en_sock* s = (en_sock*)data;
  sock_close(s);
  if (s->actx != NULL) napi_async_destroy(env, s->actx);
  if (s->wrapper != NULL) napi_delete_reference(env, s->wrapper);
  free(s);
}

/* Fetches `this` and the en_sock; throws EBADF if it is closed and `need_open`. */
static en_sock* unwrap(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv, bool need_open) {
  napi_value self;
  en_sock* s = NULL;
  size_t dummy = 0;
  EN_CALL(env, napi_get_cb_info(env, info, argc ? argc : &dummy, argv, &self, NULL), NULL);
  napi_valuetype t = napi_undefined;
  bool ours = false;
  if (napi_typeof(env, self, &t) != napi_ok || t != napi_object || napi_check_object_type_tag(env, self, &SOCK_TAG, &ours) != napi_ok ||
      !ours || napi_unwrap(env, self, (void**)&s) != napi_ok || s == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "this must be a NativeSocket from listen(), connect(), accept() or adopt()");
    return NULL;
  }
  if (need_open && s->fd < 0) {
    en_throw_errno(env, EBADF, "use", "the socket is closed");
    return NULL;
  }
  return s;
}

/* A NativeSocket owning fd. On failure it throws, and closes fd only when `close_on_fail` (adopt() leaves the fd
 * to its caller: a descriptor closed twice could be another thread's new one by then). */
static napi_value make_socket(napi_env env, int fd, int family, bool close_on_fail) {
  en_instance* inst = instance(env);
  napi_value ctor = NULL, ext, obj;
  en_ctor_arg arg = {fd, family, 0};
  if (inst == NULL) {
    if (close_on_fail) close(fd);
    return NULL;
  }
  if (napi_get_reference_value(env, inst->ctor, &ctor) != napi_ok || ctor == NULL ||
      napi_create_external(env, &arg, NULL, NULL, &ext) != napi_ok ||
      napi_new_instance(env, ctor, 1, &ext, &obj) != napi_ok) {
    /* Close here unless the constructor already gave the fd to a wrapper: never twice, never leaked. */
    if (!arg.taken && close_on_fail) close(fd);
    en_throw_napi_failure(env, "creating a NativeSocket");
    return NULL;
  }
  return obj;
}

static napi_value ctor_fn(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], self;
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL), NULL);
  napi_valuetype t = napi_undefined;
  if (argc == 1) napi_typeof(env, argv[0], &t);
  if (t != napi_external) {
    napi_throw_type_error(env, "ERR_ILLEGAL_CONSTRUCTOR", "NativeSocket objects come from listen(), connect(), accept() and adopt()");
    return NULL;
  }
  en_ctor_arg* arg = NULL;
  EN_CALL(env, napi_get_value_external(env, argv[0], (void**)&arg), NULL);
  en_sock* s = calloc(1, sizeof *s);
  if (s == NULL) {
    en_throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  s->fd = arg->fd;
  s->family = arg->family;
  s->env = env;
  /* tag first: a wrapper is never without its tag (and tagging a fresh object cannot be refused twice) */
  if (napi_type_tag_object(env, self, &SOCK_TAG) != napi_ok || napi_wrap(env, self, s, sock_finalize, NULL, NULL) != napi_ok) {
    free(s);
    en_throw_napi_failure(env, "tagging and wrapping a NativeSocket");
    return NULL;
  }
  napi_value name;
  if (napi_create_reference(env, self, 0, &s->wrapper) != napi_ok ||
      napi_create_string_utf8(env, "enclave_native:socket", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, self, name, &s->actx) != napi_ok) {
    s->fd = -1; /* not taken: the fd stays with make_socket's caller; the finalizer frees the rest */
    en_throw_napi_failure(env, "initialising a NativeSocket");
    return NULL;
  }
  /* From here the finalizer owns s and the fd (and closes the fd if JS never does). */
  arg->taken = 1;
  EN_STAT_ADD(opened, 1);
  return self;
}

static void on_poll(uv_poll_t* h, int status, int events) {
  en_sock* s = (en_sock*)h->data;
  if (s == NULL || s->fd < 0 || s->cb == NULL) return;
  napi_env env = s->env;
  if (status < 0) {
    /* libuv reports EPOLLERR as UV_EBADF and stops the handle. The socket's real error (ECONNRESET, EPIPE,
     * ECONNREFUSED for a pending connect, ...) is in SO_ERROR; report that. */
    s->events = 0;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) status = -err;
  }
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn = NULL, recv = NULL, argv[2], result;
  /* A failure here cannot be thrown (no JS frame): skip the event rather than call with half-built arguments. */
  if (napi_get_reference_value(env, s->cb, &fn) != napi_ok) fn = NULL;
  if (s->wrapper == NULL || napi_get_reference_value(env, s->wrapper, &recv) != napi_ok) recv = NULL;
  if (recv == NULL && napi_get_global(env, &recv) != napi_ok) fn = NULL;
  if (napi_create_int32(env, status, &argv[0]) != napi_ok || napi_create_int32(env, events, &argv[1]) != napi_ok) fn = NULL;
  /* napi_make_callback (not napi_call_function): process.nextTick and promise jobs queued by the stream
   * machinery run when it returns, exactly as for Node's own handles. `s` may be closed by JS meanwhile
   * (never freed: only the finalizer frees it), so it is not touched after this call. */
  if (fn != NULL && napi_make_callback(env, s->actx, recv, fn, 2, argv, &result) == napi_pending_exception) {
    napi_value exc;
    if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

/* ---------- addresses ---------- */

typedef struct {
  struct sockaddr_storage ss;
  socklen_t len;
  int family;
  char desc[160];
} en_addr;

static bool get_prop(napi_env env, napi_value obj, const char* key, napi_value* out, napi_valuetype* type) {
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return false;
  if (napi_get_named_property(env, obj, key, out) != napi_ok) return false;
  if (napi_typeof(env, *out, type) != napi_ok) return false;
  return *type != napi_undefined;
}

/* An integer 0..max from a JS number: no NaN, no fraction, no negative (napi_get_value_uint32 wraps −1 to
 * 0xFFFFFFFF and truncates 1.5; here both are a RangeError). */
static bool get_u32(napi_env env, napi_value v, const char* what, uint32_t max, uint32_t* out) {
  double d = 0;
  uint64_t n = 0;
  EN_CALL(env, napi_get_value_double(env, v, &d), false);
  if (!en_int_in_range(env, d, what, 0, max, &n)) return false;
  *out = (uint32_t)n;
  return true;
}

/* spec: { family: 'unix', path } | { family: 'vsock', cid?, port } */
static bool parse_addr(napi_env env, napi_value spec, en_addr* a) {
  memset(a, 0, sizeof *a);
  napi_valuetype t;
  napi_value v;
  char family[16] = {0};
  size_t n = 0;
  if (napi_typeof(env, spec, &t) != napi_ok || t != napi_object || !get_prop(env, spec, "family", &v, &t) ||
      t != napi_string || napi_get_value_string_utf8(env, v, family, sizeof family, &n) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "address must be { family: 'unix', path } or { family: 'vsock', cid?, port }");
    return false;
  }
  if (strcmp(family, "unix") == 0) {
    struct sockaddr_un* un = (struct sockaddr_un*)&a->ss;
    char path[sizeof un->sun_path + 1];
    if (!get_prop(env, spec, "path", &v, &t) || t != napi_string) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "unix address needs a string path");
      return false;
    }
    size_t full = 0;
    EN_CALL(env, napi_get_value_string_utf8(env, v, NULL, 0, &full), false); /* the whole UTF-8 length */
    if (full == 0 || full >= sizeof un->sun_path) {
      en_throw_errno(env, full == 0 ? EINVAL : ENAMETOOLONG, "bind", "unix socket path must be 1..107 bytes");
      return false;
    }
    EN_CALL(env, napi_get_value_string_utf8(env, v, path, sizeof path, &n), false);
    /* the kernel reads sun_path up to the first NUL: "/tmp/a\0/etc/x" would bind or reach "/tmp/a" */
    if (n != full || memchr(path, '\0', n) != NULL) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "unix socket path must not contain NUL bytes");
      return false;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    a->family = AF_UNIX;
    snprintf(a->desc, sizeof a->desc, "unix:%s", path);
    return true;
  }
  if (strcmp(family, "vsock") == 0) {
#ifdef __linux__
    struct sockaddr_vm* vm = (struct sockaddr_vm*)&a->ss;
    uint32_t cid = VMADDR_CID_ANY, port = 0;
    if (get_prop(env, spec, "cid", &v, &t)) {
      if (t != napi_number) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "vsock cid must be a number");
        return false;
      }
      /* 0xFFFFFFFF is VMADDR_CID_ANY, asked for by name; -1 must not silently become it */
      if (!get_u32(env, v, "vsock cid", 0xFFFFFFFFu, &cid)) return false;
    }
    if (!get_prop(env, spec, "port", &v, &t) || t != napi_number) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "vsock address needs a numeric port");
      return false;
    }
    /* 0 means "pick one"; 0xFFFFFFFF (VMADDR_PORT_ANY) is only reachable that way */
    if (!get_u32(env, v, "vsock port", 0xFFFFFFFEu, &port)) return false;
    vm->svm_family = AF_VSOCK;
    vm->svm_cid = cid;
    vm->svm_port = port == 0 ? VMADDR_PORT_ANY : port; /* port 0 = "pick one", as for TCP */
    a->len = sizeof *vm;
    a->family = AF_VSOCK;
    if (cid == VMADDR_CID_ANY) snprintf(a->desc, sizeof a->desc, "vsock:*:%u", port);
    else snprintf(a->desc, sizeof a->desc, "vsock:%u:%u", cid, port);
    return true;
#else
    en_throw_errno(env, EAFNOSUPPORT, "socket", "AF_VSOCK needs Linux");
    return false;
#endif
  }
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "address family must be 'unix' or 'vsock'");
  return false;
}

static napi_value addr_to_js(napi_env env, const struct sockaddr_storage* ss, socklen_t len, int family) {
  napi_value o, v;
  EN_CALL(env, napi_create_object(env, &o), NULL);
  if (family == AF_UNIX) {
    const struct sockaddr_un* un = (const struct sockaddr_un*)ss;
    size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
    if (n > 0 && un->sun_path[0] == '\0') n = 0; /* abstract names are not reported */
    size_t l = strnlen(un->sun_path, n);
    EN_CALL(env, napi_create_string_utf8(env, "unix", NAPI_AUTO_LENGTH, &v), NULL);
    EN_CALL(env, napi_set_named_property(env, o, "family", v), NULL);
    EN_CALL(env, napi_create_string_utf8(env, un->sun_path, l, &v), NULL);
    EN_CALL(env, napi_set_named_property(env, o, "path", v), NULL);
  }
#ifdef __linux__
  else if (family == AF_VSOCK) {
    const struct sockaddr_vm* vm = (const struct sockaddr_vm*)ss;
    EN_CALL(env, napi_create_string_utf8(env, "vsock", NAPI_AUTO_LENGTH, &v), NULL);
    EN_CALL(env, napi_set_named_property(env, o, "family", v), NULL);
    EN_CALL(env, napi_create_uint32(env, vm->svm_cid, &v), NULL);
    EN_CALL(env, napi_set_named_property(env, o, "cid", v), NULL);
    EN_CALL(env, napi_create_uint32(env, vm->svm_port, &v), NULL);
    EN_CALL(env, napi_set_named_property(env, o, "port", v), NULL);
  }
#endif
  return o;
}

/* ---------- module functions ---------- */

static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  en_addr a;
  if (!parse_addr(env, argc > 0 ? argv[0] : NULL, &a)) return NULL;
  uint32_t backlog = 511;
  napi_valuetype t = napi_undefined;
  if (argc > 1) EN_CALL(env, napi_typeof(env, argv[1], &t), NULL);
  if (t == napi_number) {
    if (!get_u32(env, argv[1], "backlog", 65535, &backlog)) return NULL;
  } else if (t != napi_undefined) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "backlog must be a number");
    return NULL;
  }
  int fd = socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    en_throw_errno(env, errno, "socket", a.desc);
    return NULL;
  }
  if (bind(fd, (struct sockaddr*)&a.ss, a.len) != 0) {
    int e = errno;
    close(fd);
    en_throw_errno(env, e, "bind", a.desc);
    return NULL;
  }
  if (listen(fd, (int)backlog) != 0) {
    int e = errno;
    close(fd);
    en_throw_errno(env, e, "listen", a.desc);
    return NULL;
  }
  return make_socket(env, fd, a.family, true);
}

/* Starts a non-blocking connect. The caller polls for writable, then calls connectResult(). */
static napi_value js_connect(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  en_addr a;
  if (!parse_addr(env, argc > 0 ? argv[0] : NULL, &a)) return NULL;
  int fd = socket(a.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    en_throw_errno(env, errno, "socket", a.desc);
    return NULL;
  }
  int r;
  do r = connect(fd, (struct sockaddr*)&a.ss, a.len);
  while (r != 0 && errno == EINTR);
  /* EAGAIN on AF_UNIX means the listener's backlog is full: an error, as in libuv. */
  if (r != 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    en_throw_errno(env, e, "connect", a.desc);
    return NULL;
  }
  return make_socket(env, fd, a.family, true);
}

/* A descriptor number argument: an integer 0..INT_MAX (RangeError ERR_OUT_OF_RANGE otherwise). */
static bool get_fd_arg(napi_env env, size_t argc, napi_value* argv, int* fd) {
  double d = -1;
  uint64_t n = 0;
  napi_valuetype t = napi_undefined;
  if (argc > 0) EN_CALL(env, napi_typeof(env, argv[0], &t), false);
  if (t != napi_number) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fd must be a number");
    return false;
  }
  EN_CALL(env, napi_get_value_double(env, argv[0], &d), false);
  if (!en_int_in_range(env, d, "fd", 0, INT_MAX, &n)) return false;
  *fd = (int)n;
  return true;
}

/* adopt(fd, family): a NativeSocket owning an fd another thread detached (or any connected stream socket of the
 * named family). Checks it IS one (SO_DOMAIN, SO_TYPE), sets O_NONBLOCK and FD_CLOEXEC. Every failure throws and
 * leaves the fd open: the caller closes it. */
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  int fd = -1;
  if (!get_fd_arg(env, argc, argv, &fd)) return NULL;
  char name[16] = {0};
  size_t n = 0;
  napi_valuetype t = napi_undefined;
  if (argc > 1) EN_CALL(env, napi_typeof(env, argv[1], &t), NULL);
  if (t != napi_string || napi_get_value_string_utf8(env, argv[1], name, sizeof name, &n) != napi_ok ||
      (strcmp(name, "unix") != 0 && strcmp(name, "vsock") != 0)) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "adopt family must be 'unix' or 'vsock'");
    return NULL;
  }
  int want = strcmp(name, "unix") == 0 ? AF_UNIX : AF_VSOCK;
  int domain = -1, type = -1;
  socklen_t len = sizeof domain;
  /* ENOTSOCK for a pipe or a file, EBADF for a closed descriptor */
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    en_throw_errno(env, errno, "getsockopt", "adopt: SO_DOMAIN");
    return NULL;
  }
  len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
    en_throw_errno(env, errno, "getsockopt", "adopt: SO_TYPE");
    return NULL;
  }
  if (domain != want || type != SOCK_STREAM) {
    char detail[128];
    snprintf(detail, sizeof detail, "adopt: fd %d is a socket of domain %d type %d, not a %s stream socket", fd, domain, type, name);
    en_throw_errno(env, EINVAL, "adopt", detail);
    return NULL;
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || ((fl & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)) {
    en_throw_errno(env, errno, "fcntl", "adopt: O_NONBLOCK");
    return NULL;
  }
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0 || ((fdfl & FD_CLOEXEC) == 0 && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0)) {
    en_throw_errno(env, errno, "fcntl", "adopt: FD_CLOEXEC");
    return NULL;
  }
  return make_socket(env, fd, domain, false);
}

/* dupFd(fd): fcntl(fd, F_DUPFD_CLOEXEC, 0), the lowest free number. How a Node net.Socket's descriptor outlives
 * the socket (whose destroy() closes its own). */
static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  int fd = -1;
  if (!get_fd_arg(env, argc, argv, &fd)) return NULL;
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0) {
    en_throw_errno(env, errno, "fcntl", "F_DUPFD_CLOEXEC");
    return NULL;
  }
  napi_value out;
  if (napi_create_int32(env, d, &out) != napi_ok) {
    close(d);
    en_throw_napi_failure(env, "dupFd result");
    return NULL;
  }
  return out;
}

/* ---------- methods ---------- */

static napi_value m_set_callback(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  en_sock* s = unwrap(env, info, &argc, argv, true);
  if (s == NULL) return NULL;
  napi_valuetype t = napi_undefined;
  if (argc > 0) napi_typeof(env, argv[0], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "setCallback needs a function");
    return NULL;
  }
  if (s->cb != NULL) napi_delete_reference(env, s->cb);
  s->cb = NULL;
  EN_CALL(env, napi_create_reference(env, argv[0], 1, &s->cb), NULL);
  return NULL;
}

static napi_value m_poll(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  en_sock* s = unwrap(env, info, &argc, argv, true);
  if (s == NULL) return NULL;
  int32_t events = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &events) != napi_ok || events < 0 || events > 3) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "poll events must be 0..3 (1 readable, 2 writable)");
    return NULL;
  }
  if (events == s->events) return NULL;
  if (events == 0) {
    if (s->poll != NULL) uv_poll_stop(s->poll);
    s->events = 0;
    return NULL;
  }
  if (s->cb == NULL) {
    napi_throw_error(env, "ERR_NATIVE_NO_CALLBACK", "setCallback before poll");
    return NULL;
  }
  if (s->poll == NULL) {
    uv_loop_t* loop = NULL;
    EN_CALL(env, napi_get_uv_event_loop(env, &loop), NULL);
    uv_poll_t* p = malloc(sizeof *p);
    if (p == NULL) {
      en_throw_errno(env, ENOMEM, "malloc", NULL);
      return NULL;
    }
    int r = uv_poll_init(loop, p, s->fd);
    if (r != 0) {
      free(p);
      en_throw_errno(env, -r, "uv_poll_init", NULL);
      return NULL;
    }
    p->data = s;
    s->poll = p;
  }
  int r = uv_poll_start(s->poll, events, on_poll);
  if (r != 0) {
    en_throw_errno(env, -r, "uv_poll_start", NULL);
    return NULL;
  }
  s->events = events;
  return NULL;
}

static napi_value m_read(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, true);
  if (s == NULL) return NULL;
  uint8_t buf[EN_READ_SIZE]; /* on the stack: no state shared between worker threads */
  ssize_t n;
  do n = read(s->fd, buf, sizeof buf);
  while (n < 0 && errno == EINTR);
  napi_value out;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      EN_STAT_ADD(eagain_reads, 1);
      EN_CALL(env, napi_get_undefined(env, &out), NULL);
      return out;
    }
    en_throw_errno(env, errno, "read", NULL);
    return NULL;
  }
  EN_STAT_ADD(reads, 1);
  if (n == 0) {
    EN_CALL(env, napi_get_null(env, &out), NULL);
    return out;
  }
  EN_STAT_ADD(bytes_read, n);
  EN_STAT_MAX(max_read, n);
  EN_CALL(env, napi_create_buffer_copy(env, (size_t)n, buf, NULL, &out), NULL);
  return out;
}

/* write(u8, offset): ONE send() of min(length - offset, EN_MAX_WRITE) bytes. Returns the bytes the kernel
 * took (possibly fewer), or -1 when the socket buffer is full (poll for writable, then call again). */
static napi_value m_write(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  en_sock* s = unwrap(env, info, &argc, argv, true);
  if (s == NULL) return NULL;
  napi_typedarray_type type;
  size_t length = 0;
  void* data = NULL;
  bool is_ta = false;
  if (argc > 0) napi_is_typedarray(env, argv[0], &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "write needs a Uint8Array");
    return NULL;
  }
  int64_t offset = 0;
  double offset_d = 0;
  if (argc > 1 && napi_get_value_double(env, argv[1], &offset_d) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "write offset must be a number");
    return NULL;
  }
  if (!(offset_d >= 0) || offset_d > (double)length || (double)(int64_t)offset_d != offset_d) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "write offset outside the buffer");
    return NULL;
  }
  offset = (int64_t)offset_d;
  if ((uint64_t)offset > length) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "write offset outside the buffer");
    return NULL;
  }
  size_t n = length - (size_t)offset;
  if (n > EN_MAX_WRITE) n = EN_MAX_WRITE;
  napi_value out;
  if (n == 0) {
    EN_CALL(env, napi_create_int32(env, 0, &out), NULL);
    return out;
  }
  ssize_t w;
  do {
    EN_STAT_ADD(writes, 1);
    EN_STAT_MAX(max_write, n);
    w = send(s->fd, (const uint8_t*)data + offset, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (w < 0 && errno == EINTR);
  if (w < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      EN_STAT_ADD(eagain_writes, 1);
      EN_CALL(env, napi_create_int32(env, -1, &out), NULL);
      return out;
    }
    en_throw_errno(env, errno, "write", NULL);
    return NULL;
  }
  EN_STAT_ADD(bytes_written, w);
  EN_CALL(env, napi_create_int64(env, (int64_t)w, &out), NULL);
  return out;
}

static napi_value m_accept(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, true);
  if (s == NULL) return NULL;
  for (;;) {
    int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return make_socket(env, fd, s->family, true);
    int e = errno;
    /* A connection that died in the backlog, or a signal: try the next one. */
    if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
    if (e == EAGAIN || e == EWOULDBLOCK) {
      napi_value out;
      EN_CALL(env, napi_get_null(env, &out), NULL);
      return out;
    }
    en_throw_errno(env, e, "accept", NULL);
    return NULL;
  }
}

static napi_value m_connect_result(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, true);
  if (s == NULL) return NULL;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    en_throw_errno(env, err, "connect", NULL);
    return NULL;
  }
  return NULL;
}

static napi_value m_shutdown(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, true);
  if (s == NULL) return NULL;
  if (shutdown(s->fd, SHUT_WR) != 0) {
    en_throw_errno(env, errno, "shutdown", NULL);
    return NULL;
  }
  return NULL;
}

static napi_value m_close(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, false);
  if (s == NULL) return NULL;
  sock_close(s);
  return NULL;
}

/* detach(): close() without closing the fd, which it returns (-1 when already closed or detached). Counted as
 * closed in stats(): this object's ownership ended; adopt() counts the fd opened again. */
static napi_value m_detach(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, false);
  if (s == NULL) return NULL;
  int fd = s->fd;
  sock_release(s);
  if (fd >= 0) {
    s->fd = -1; /* from here close() is a no-op and the finalizer has nothing to close */
    EN_STAT_ADD(closed, 1);
  }
  napi_value out;
  EN_CALL(env, napi_create_int32(env, fd, &out), NULL);
  return out;
}

static napi_value name_of(napi_env env, napi_callback_info info, bool peer) {
  en_sock* s = unwrap(env, info, NULL, NULL, true);
  if (s == NULL) return NULL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len = sizeof ss;
  int r = peer ? getpeername(s->fd, (struct sockaddr*)&ss, &len) : getsockname(s->fd, (struct sockaddr*)&ss, &len);
  if (r != 0) {
    en_throw_errno(env, errno, peer ? "getpeername" : "getsockname", NULL);
    return NULL;
  }
  return addr_to_js(env, &ss, len, s->family);
}

static napi_value m_address(napi_env env, napi_callback_info info) { return name_of(env, info, false); }
static napi_value m_peer(napi_env env, napi_callback_info info) { return name_of(env, info, true); }

static napi_value m_fd(napi_env env, napi_callback_info info) {
  en_sock* s = unwrap(env, info, NULL, NULL, false);
  if (s == NULL) return NULL;
  napi_value out;
  EN_CALL(env, napi_create_int32(env, s->fd, &out), NULL);
  return out;
}

static void instance_finalize(napi_env env, void* data, void* hint) {
  en_instance* inst = (en_instance*)data;
  if (inst->ctor) napi_delete_reference(env, inst->ctor);
  free(inst);
}

napi_status en_socket_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"setCallback", NULL, m_set_callback, NULL, NULL, NULL, napi_default_method, NULL},
      {"poll", NULL, m_poll, NULL, NULL, NULL, napi_default_method, NULL},
      {"read", NULL, m_read, NULL, NULL, NULL, napi_default_method, NULL},
      {"write", NULL, m_write, NULL, NULL, NULL, napi_default_method, NULL},
      {"accept", NULL, m_accept, NULL, NULL, NULL, napi_default_method, NULL},
      {"connectResult", NULL, m_connect_result, NULL, NULL, NULL, napi_default_method, NULL},
      {"shutdown", NULL, m_shutdown, NULL, NULL, NULL, napi_default_method, NULL},
      {"close", NULL, m_close, NULL, NULL, NULL, napi_default_method, NULL},
      {"detach", NULL, m_detach, NULL, NULL, NULL, napi_default_method, NULL},
      {"address", NULL, m_address, NULL, NULL, NULL, napi_default_method, NULL},
      {"peer", NULL, m_peer, NULL, NULL, NULL, napi_default_method, NULL},
      {"fd", NULL, NULL, m_fd, NULL, NULL, napi_default, NULL},
  };
  napi_value ctor;
  napi_status st = napi_define_class(env, "NativeSocket", NAPI_AUTO_LENGTH, ctor_fn, NULL,
                                     sizeof props / sizeof props[0], props, &ctor);
  if (st != napi_ok) return st;
  en_instance* inst = calloc(1, sizeof *inst);
  if (inst == NULL) return napi_generic_failure;
  if ((st = napi_create_reference(env, ctor, 1, &inst->ctor)) != napi_ok) {
    free(inst);
    return st;
  }
  if ((st = napi_set_instance_data(env, inst, instance_finalize, NULL)) != napi_ok) return st;
  if ((st = napi_set_named_property(env, exports, "NativeSocket", ctor)) != napi_ok) return st;
  if ((st = en_set_fn(env, exports, "listen", js_listen)) != napi_ok) return st;
  if ((st = en_set_fn(env, exports, "adopt", js_adopt)) != napi_ok) return st;
  if ((st = en_set_fn(env, exports, "dupFd", js_dup_fd)) != napi_ok) return st;
  return en_set_fn(env, exports, "connect", js_connect);
}
