/*
 * A native byte relay between two stream sockets (egress flows: app socket <-> dialer stream, dialer stream <->
 * upstream TCP), with splice(2) through one pipe per direction, so the bytes never enter user space and no JS
 * runs per chunk. src/egress/native-splice.ts decides when to use it and falls back to the JS relay otherwise.
 *
 *   r = spliceRelay(fdA, fdB, maxWrite[, ended])
 *                                        checks both fds (non-blocking stream sockets of AF_INET/INET6/UNIX/
 *                                        VSOCK; anything else throws EINVAL), takes a relay slot (at most EN_SPLICE_MAX_RELAYS
 *                                        at once, else throws ERR_SPLICE_RELAY_LIMIT), dup()s both fds, makes
 *                                        the pipes and the cancel eventfd. Nothing has been read or written yet:
 *                                        any throw here leaves the sockets untouched (JS relays them instead).
 *                                        ended: 1 = a -> b, 2 = b -> a was finished by the JS relay (EOF read,
 *                                        the half-close passed on) before it handed the flow over.
 *   r.start(cb)                          starts the relay thread; cb({ aToB, bToA, clean, error? }) runs once.
 *   r.counts() -> { aToB, bToA }         bytes moved so far (atomic counters, read while running).
 *   r.cancel()                           before start: releases everything (cb never runs); after: wakes the
 *                                        thread through the eventfd, which ends the relay (error ECANCELED).
 *   spliceStats() / resetSpliceStats()   process-wide: relays started, active, refused at the limit, and the
 *                                        largest length ever passed to one splice() into a capped (non-TCP)
 *                                        destination.
 *
 * Per direction: splice(src -> pipe) only when the pipe is empty, then splice(pipe -> dst) until the pipe is
 * empty or dst is full, in pieces of at most maxWrite bytes into any socket but TCP (the vsock single-write
 * limit, EGRESS.md §3.2: the dialer link is vsock in production, a UNIX socket in tests and the local stack).
 * TCP has no such limit (nor does the JS relay cut net.Socket writes): a pipe's worth at once saves splice()
 * calls into it (a 64 KiB pipe at once gave ~1.5x the throughput of a TCP -> TCP relay on this VM). At
 * source EOF with the pipe empty: shutdown(dst, SHUT_WR) (half-close; the other direction goes on). Any error,
 * reset or a cancel stops both directions. The thread sleeps in poll() on the sockets it waits for, on the others
 * for POLLERR until they hang up, and on the eventfd.
 *
 * Ownership: the relay works on its OWN dups of the two fds and closes only those (and its pipes and eventfd).
 * So JS may close its sockets at any time without the thread ever touching a reused descriptor number; JS owns
 * and closes the originals after the callback. The relay struct is freed when both the thread and the JS handle
 * (finalizer) have let go of it.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

/* Relays running (or prepared) at once in this process; one thread and six fds each. JS relays the rest. */
#define EN_SPLICE_MAX_RELAYS 512
/* Each direction's pipe. Bigger than the 64 KiB default: fewer splice() and poll() calls per MB, and syscalls are
 * what a relay spends its time on (relay CPU per MB in scripts/bench/egress.ts: ~380 µs at 64 KiB, ~330 at
 * 256 KiB, ~250 at 1 MiB). 512 KiB is what the JS relay let wait per direction (MAX_BUFFERED): no more memory
 * per flow than before. Pipe pages are only allocated as data waits in them. When the kernel refuses (a user
 * over fs/pipe-user-pages-soft), the pipe keeps its default size. */
#define EN_SPLICE_PIPE_SIZE (512 * 1024)
/* The relay thread only polls and splices: a small stack is plenty (512 of them stay cheap). */
#define EN_SPLICE_STACK (256 * 1024)

static const napi_type_tag RELAY_TAG = {0x73706c6963657631ULL, 0x656e636c61766961ULL};

static struct {
  uint64_t started;     /* start() calls that launched a thread */
  uint64_t active;      /* slots taken (prepared or running) */
  uint64_t refused;     /* spliceRelay() calls refused at EN_SPLICE_MAX_RELAYS */
  uint64_t max_capped;  /* largest length passed to one splice() into a non-TCP destination (capped by maxWrite) */
} stats;

typedef struct {
  int src, dst;          /* the relay's dups */
  int pipe_r, pipe_w;
  size_t pipe_size;      /* what one splice(src -> pipe) may take */
  size_t in_pipe;        /* bytes read from src, not yet written to dst */
  size_t max_write;      /* the most one splice() into dst may move */
  bool capped;           /* dst is not TCP: max_write is the relay's maxWrite */
  bool src_eof;
  /* Not known to be empty / full: a splice() is worth trying. Cleared by EAGAIN, set by poll(), so a direction
   * with nothing to move costs no syscall (retrying the idle direction of a bulk transfer after every write was
   * half of all splice() calls, each an EAGAIN). */
  bool src_ready, dst_ready;
  bool done;             /* src EOF passed on as shutdown(dst, SHUT_WR) */
  uint64_t bytes;        /* atomic: bytes written to dst */
} en_dir;

typedef struct {
  en_dir dir[2];         /* 0: a -> b, 1: b -> a */
  int fd[2];             /* dups of a and b */
  int cancel_fd;         /* closed by the thread when it ends, under `lock` (cancel() writes under it too) */
  pthread_mutex_t lock;
  int refs;              /* atomic: the JS handle; once started, also the thread and the tsfn */
  bool started;
  bool released;         /* the slot, dups and pipes are given back: by the thread at its end, or before start
                          * by cancel() or the finalizer (never both: JS does not release once started) */
  napi_threadsafe_function tsfn;
  /* JS thread only: the env the relay was started in, the thread (joined exactly once, by tsfn_finalize or by the
   * env's cleanup hook: nothing of this library may run once the env is gone and the addon unloaded), and
   * whether the cleanup hook is still registered. */
  napi_env env;
  pthread_t thread;
  bool joinable;
  bool hook;
  /* the outcome, written by the thread before it calls back (the tsfn call orders it before call_js) */
  int err;
  const char* syscall;
} en_relay;

static void close_fd(int* fd) {
  if (*fd >= 0) {
    close(*fd); /* Linux frees the descriptor even on EINTR: never retry */
    *fd = -1;
  }
}

/* Gives back what spliceRelay() took: the slot and every fd this relay owns (never JS's originals). */
static void release(en_relay* r) {
  if (r->released) return;
  r->released = true;
  for (int d = 0; d < 2; d++) {
    close_fd(&r->dir[d].pipe_r);
    close_fd(&r->dir[d].pipe_w);
  }
  close_fd(&r->fd[0]);
  close_fd(&r->fd[1]);
  __atomic_fetch_sub(&stats.active, 1, __ATOMIC_RELAXED);
}

/* Everything of a relay, its struct included. */
static void discard(en_relay* r) {
  release(r);
  close_fd(&r->cancel_fd);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

static void unref(en_relay* r) {
  if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) discard(r);
}

/* ---------- the relay thread ---------- */

static void stat_max_capped(size_t n) {
  uint64_t cur = __atomic_load_n(&stats.max_capped, __ATOMIC_RELAXED);
  while (n > cur && !__atomic_compare_exchange_n(&stats.max_capped, &cur, (uint64_t)n, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    ;
}

/* Moves what it can without blocking. Returns 0, or an errno with *syscall set. */
static int step(en_relay* r, en_dir* d, bool* progress, const char** syscall) {
  if (d->done) return 0;
  while (d->in_pipe > 0 && d->dst_ready) {
    size_t len = d->in_pipe < d->max_write ? d->in_pipe : d->max_write;
    if (d->capped) stat_max_capped(len);
    ssize_t n = splice(d->pipe_r, NULL, d->dst, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->in_pipe -= (size_t)n;
      __atomic_fetch_add(&d->bytes, (uint64_t)n, __ATOMIC_RELAXED);
      *progress = true;
      /* emptied: more has likely arrived meanwhile, worth a read before a poll() */
      if (d->in_pipe == 0) d->src_ready = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) { /* dst is full: wait for POLLOUT */
      d->dst_ready = false;
      return 0;
    }
    *syscall = "splice";
    return n == 0 ? EPIPE : errno;
  }
  if (d->in_pipe > 0) return 0; /* dst not ready */
  if (!d->src_eof) {
    if (!d->src_ready) return 0;
    ssize_t n = splice(d->src, NULL, d->pipe_w, NULL, d->pipe_size, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->in_pipe = (size_t)n;
      *progress = true;
      return 0;
    }
    if (n == 0) {
      d->src_eof = true;
    } else if (errno == EINTR) {
      *progress = true;
      return 0;
    } else if (errno == EAGAIN) {
      d->src_ready = false; /* the pipe is empty, so it is src that has nothing: wait for POLLIN */
      return 0;
    } else {
      *syscall = "splice";
      return errno;
    }
  }
  /* src EOF and every byte passed on: half-close dst */
  if (shutdown(d->dst, SHUT_WR) != 0) {
    *syscall = "shutdown";
    return errno;
  }
  d->done = true;
  *progress = true;
  return 0;
}

static int relay_loop(en_relay* r, const char** syscall) {
  bool hup[2] = {false, false}; /* a hung-up socket we wait on for nothing: no longer polled for errors */
  for (;;) {
    bool progress;
    do {
      progress = false;
      for (int i = 0; i < 2; i++) {
        int err = step(r, &r->dir[i], &progress, syscall);
        if (err != 0) return err;
      }
    } while (progress);
    if (r->dir[0].done && r->dir[1].done) return 0;

    short want[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
      en_dir* d = &r->dir[i];
      if (d->done) continue;
      /* dir i reads fd i and writes fd 1-i */
      if (d->in_pipe > 0) want[1 - i] |= POLLOUT;
      else if (!d->src_eof) want[i] |= POLLIN;
    }
    struct pollfd p[3];
    int idx[2] = {-1, -1};
    nfds_t n = 0;
    p[n++] = (struct pollfd){.fd = r->cancel_fd, .events = POLLIN};
    for (int i = 0; i < 2; i++) {
      if (want[i] == 0 && hup[i]) continue;
      idx[i] = (int)n;
      p[n++] = (struct pollfd){.fd = r->fd[i], .events = want[i]};
    }
    if (poll(p, n, -1) < 0) {
      if (errno == EINTR) continue;
      *syscall = "poll";
      return errno;
    }
    if (p[0].revents != 0) {
      *syscall = "cancel";
      return ECANCELED;
    }
    for (int i = 0; i < 2; i++) {
      if (idx[i] < 0) continue;
      short rev = p[idx[i]].revents;
      /* fd i is dir i's source and dir 1-i's destination; an error or hang-up is for the splice() to report */
      if (rev & (POLLIN | POLLHUP | POLLERR)) r->dir[i].src_ready = true;
      if (rev & (POLLOUT | POLLHUP | POLLERR)) r->dir[1 - i].dst_ready = true;
      if (rev & POLLERR) {
        /* No pending error but POLLERR (an error queue nobody here reads) would wake poll() at once forever:
         * ended as an I/O error rather than a spinning thread. */
        int err = 0;
        socklen_t len = sizeof err;
        *syscall = "poll";
        if (getsockopt(r->fd[i], SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
        return err != 0 ? err : EIO;
      }
      if ((rev & POLLHUP) && want[i] == 0) hup[i] = true;
    }
  }
}

static void* relay_main(void* arg) {
  en_relay* r = (en_relay*)arg;
  pthread_setname_np(pthread_self(), "splice-relay"); /* how it shows in top -H, perf, /proc/PID/task */
  const char* syscall = NULL;
  int err = relay_loop(r, &syscall);
  napi_threadsafe_function tsfn = r->tsfn;
  r->err = err;
  r->syscall = syscall;
  /* the sockets' dups are closed before JS hears of the end, so JS's close is the last one (a reset there is
   * a real RST). JS never calls release() once started, so this is the only caller now. */
  release(r);
  pthread_mutex_lock(&r->lock);
  close_fd(&r->cancel_fd); /* now, not at the handle's GC: a finished relay holds no descriptor */
  pthread_mutex_unlock(&r->lock);
  /* r outlives the call: the tsfn holds a reference until its finalizer, which runs after call_js */
  napi_status st = napi_call_threadsafe_function(tsfn, r, napi_tsfn_blocking);
  /* napi_closing: the tsfn is being torn down and must not be touched again */
  if (st != napi_closing) napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  unref(r);
  return NULL;
}

/* ---------- JS ---------- */

/* Wakes the thread through the eventfd; 0 or an errno. A no-op once the thread has ended (it closed the eventfd
 * under the same lock). */
static int wake(en_relay* r) {
  uint64_t one = 1;
  int err = 0;
  pthread_mutex_lock(&r->lock);
  if (r->cancel_fd >= 0 && write(r->cancel_fd, &one, sizeof one) < 0 && errno != EAGAIN) err = errno;
  pthread_mutex_unlock(&r->lock);
  return err;
}

static void join_thread(en_relay* r) {
  if (!r->joinable) return;
  r->joinable = false;
  pthread_join(r->thread, NULL);
}

/* The env is being torn down (a worker exiting) while the relay runs. Registered after the tsfn was made, so it
 * runs before the tsfn's own teardown (hooks run newest first): the thread is woken, makes its last tsfn call
 * while the tsfn still exists, and is joined before the env (and with it this library) goes away. */
static void relay_env_cleanup(void* arg) {
  en_relay* r = (en_relay*)arg;
  r->hook = false;
  wake(r);
  join_thread(r);
}

/* The tsfn is finalized after the thread released it (the thread is ending: joined here), or at env teardown
 * after relay_env_cleanup joined it. */
static void tsfn_finalize(napi_env env, void* data, void* hint) {
  en_relay* r = (en_relay*)data;
  if (r->hook) {
    r->hook = false;
    napi_remove_env_cleanup_hook(r->env, relay_env_cleanup, r);
  }
  wake(r);
  join_thread(r);
  unref(r);
}

static void call_js(napi_env env, napi_value cb, void* context, void* data) {
  en_relay* r = (en_relay*)data;
  if (env == NULL || cb == NULL) return; /* the env is going away */
  napi_value o, v, undef;
  bool ok = napi_create_object(env, &o) == napi_ok &&
            en_set_u64(env, o, "aToB", __atomic_load_n(&r->dir[0].bytes, __ATOMIC_RELAXED)) == napi_ok &&
            en_set_u64(env, o, "bToA", __atomic_load_n(&r->dir[1].bytes, __ATOMIC_RELAXED)) == napi_ok &&
            napi_get_boolean(env, r->err == 0, &v) == napi_ok && napi_set_named_property(env, o, "clean", v) == napi_ok;
  if (ok && r->err != 0) {
    napi_value e = en_errno_error(env, r->err, r->syscall ? r->syscall : "splice", NULL);
    ok = e != NULL && napi_set_named_property(env, o, "error", e) == napi_ok;
  }
  if (!ok || napi_get_undefined(env, &undef) != napi_ok) return;
  napi_call_function(env, undef, cb, 1, &o, NULL); /* an exception thrown by cb goes to uncaughtException */
}

static en_relay* unwrap_relay(napi_env env, napi_callback_info info, size_t* argc, napi_value* argv) {
  napi_value self;
  size_t none = 0;
  en_relay* r = NULL;
  bool ours = false;
  EN_CALL(env, napi_get_cb_info(env, info, argc ? argc : &none, argv, &self, NULL), NULL);
  if (napi_check_object_type_tag(env, self, &RELAY_TAG, &ours) != napi_ok || !ours || napi_unwrap(env, self, (void**)&r) != napi_ok ||
      r == NULL) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "this must be a relay from spliceRelay()");
    return NULL;
  }
  return r;
}

static void relay_finalize(napi_env env, void* data, void* hint) {
  en_relay* r = (en_relay*)data;
  if (!r->started) release(r); /* prepared and dropped: the dups must not keep the sockets open */
  unref(r);
}

static napi_value js_counts(napi_env env, napi_callback_info info) {
  en_relay* r = unwrap_relay(env, info, NULL, NULL);
  if (r == NULL) return NULL;
  napi_value o;
  EN_CALL(env, napi_create_object(env, &o), NULL);
  EN_CALL(env, en_set_u64(env, o, "aToB", __atomic_load_n(&r->dir[0].bytes, __ATOMIC_RELAXED)), NULL);
  EN_CALL(env, en_set_u64(env, o, "bToA", __atomic_load_n(&r->dir[1].bytes, __ATOMIC_RELAXED)), NULL);
  return o;
}

static napi_value js_cancel(napi_env env, napi_callback_info info) {
  en_relay* r = unwrap_relay(env, info, NULL, NULL);
  if (r == NULL) return NULL;
  if (!r->started) {
    release(r); /* no thread: nothing polls the eventfd either */
    close_fd(&r->cancel_fd);
    return NULL;
  }
  int err = wake(r);
  if (err != 0) en_throw_errno(env, err, "write", "waking the relay thread");
  return NULL;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  en_relay* r = unwrap_relay(env, info, &argc, argv);
  if (r == NULL) return NULL;
  napi_valuetype t = napi_undefined;
  if (argc >= 1) napi_typeof(env, argv[0], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "start(callback): callback must be a function");
    return NULL;
  }
  if (r->started || r->released) {
    en_throw_code(env, "ERR_SPLICE_RELAY_STATE", "start(): the relay was already started or cancelled");
    return NULL;
  }
  napi_value name;
  EN_CALL(env, napi_create_string_utf8(env, "enclave_native:spliceRelay", NAPI_AUTO_LENGTH, &name), NULL);
  EN_CALL(env, napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, r, tsfn_finalize, NULL, call_js, &r->tsfn), NULL);
  __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED); /* the tsfn's, dropped by tsfn_finalize */
  pthread_attr_t attr;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, EN_SPLICE_STACK);
  __atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
  r->started = true;
  int err = pthread_create(&th, &attr, relay_main, r);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    r->started = false;
    __atomic_sub_fetch(&r->refs, 1, __ATOMIC_RELAXED);
    napi_release_threadsafe_function(r->tsfn, napi_tsfn_abort);
    release(r);
    close_fd(&r->cancel_fd);
    en_throw_errno(env, err, "pthread_create", "starting the relay thread");
    return NULL;
  }
  r->env = env;
  r->thread = th;
  r->joinable = true;
  r->hook = napi_add_env_cleanup_hook(env, relay_env_cleanup, r) == napi_ok;
  __atomic_add_fetch(&stats.started, 1, __ATOMIC_RELAXED);
  return NULL;
}

/* The fd is a stream socket of a family whose splice() works on Linux (TCP, UNIX, VSOCK); 0 or an errno.
 * *tcp tells whether it is TCP (no write cap). */
static int check_fd(int fd, bool* tcp) {
  int type = 0, domain = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return errno == ENOTSOCK ? EINVAL : errno;
  len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return errno;
  if (type != SOCK_STREAM) return EINVAL;
  if (domain != AF_INET && domain != AF_INET6 && domain != AF_UNIX && domain != AF_VSOCK) return EINVAL;
  /* the dup shares the flag: a blocking splice() would not see cancel() until the peer moved */
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return errno;
  if (!(fl & O_NONBLOCK)) return EINVAL;
  *tcp = domain == AF_INET || domain == AF_INET6;
  return 0;
}

/* A number argument in min..max; anything but a number is out of range as well (read as NaN). */
static bool get_int(napi_env env, napi_value v, const char* what, uint64_t min, uint64_t max, uint64_t* out) {
  double d = NAN;
  napi_valuetype t = napi_undefined;
  if (napi_typeof(env, v, &t) == napi_ok && t == napi_number && napi_get_value_double(env, v, &d) != napi_ok) d = NAN;
  return en_int_in_range(env, d, what, min, max, out);
}

static napi_value js_splice_relay(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 3) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "spliceRelay(fdA, fdB, maxWrite[, ended])");
    return NULL;
  }
  uint64_t fa, fb, mw, ended = 0;
  napi_valuetype ended_type = napi_undefined;
  if (argc >= 4) napi_typeof(env, argv[3], &ended_type);
  if (!get_int(env, argv[0], "fdA", 0, INT32_MAX, &fa) || !get_int(env, argv[1], "fdB", 0, INT32_MAX, &fb) ||
      !get_int(env, argv[2], "maxWrite", 1, 1 << 20, &mw) || (ended_type != napi_undefined && !get_int(env, argv[3], "ended", 0, 3, &ended)))
    return NULL;
  if (fa == fb) {
    en_throw_errno(env, EINVAL, "spliceRelay", "both ends are the same descriptor");
    return NULL;
  }
  bool tcp[2] = {false, false};
  int err = check_fd((int)fa, &tcp[0]);
  if (err == 0) err = check_fd((int)fb, &tcp[1]);
  if (err != 0) {
    en_throw_errno(env, err, "spliceRelay", "both ends must be TCP, UNIX or VSOCK stream sockets");
    return NULL;
  }
  if (__atomic_add_fetch(&stats.active, 1, __ATOMIC_RELAXED) > EN_SPLICE_MAX_RELAYS) {
    __atomic_fetch_sub(&stats.active, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&stats.refused, 1, __ATOMIC_RELAXED);
    en_throw_code(env, "ERR_SPLICE_RELAY_LIMIT", "spliceRelay: the limit of concurrent native relays is reached");
    return NULL;
  }
  en_relay* r = calloc(1, sizeof *r);
  if (r == NULL) {
    __atomic_fetch_sub(&stats.active, 1, __ATOMIC_RELAXED);
    en_throw_errno(env, ENOMEM, "malloc", NULL);
    return NULL;
  }
  r->refs = 1;
  pthread_mutex_init(&r->lock, NULL);
  r->fd[0] = r->fd[1] = r->cancel_fd = -1;
  for (int d = 0; d < 2; d++) r->dir[d].pipe_r = r->dir[d].pipe_w = -1;
  const char* what = "dup";
  r->fd[0] = fcntl((int)fa, F_DUPFD_CLOEXEC, 0);
  if (r->fd[0] >= 0) r->fd[1] = fcntl((int)fb, F_DUPFD_CLOEXEC, 0);
  bool ok = r->fd[0] >= 0 && r->fd[1] >= 0;
  for (int d = 0; ok && d < 2; d++) {
    int p[2];
    what = "pipe2";
    ok = pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0;
    if (!ok) break;
    r->dir[d].pipe_r = p[0];
    r->dir[d].pipe_w = p[1];
    (void)fcntl(p[1], F_SETPIPE_SZ, EN_SPLICE_PIPE_SIZE); /* best effort: see EN_SPLICE_PIPE_SIZE */
    int size = fcntl(p[1], F_GETPIPE_SZ);
    r->dir[d].pipe_size = size > 0 ? (size_t)size : 65536;
    r->dir[d].src = r->fd[d];
    r->dir[d].src_ready = r->dir[d].dst_ready = true;
    /* a direction the JS relay already finished (EOF read, shutdown passed on) before handing the flow over */
    r->dir[d].done = r->dir[d].src_eof = (ended & (1 << d)) != 0;
    r->dir[d].dst = r->fd[1 - d];
    r->dir[d].capped = !tcp[1 - d];
    r->dir[d].max_write = r->dir[d].capped ? (size_t)mw : r->dir[d].pipe_size;
  }
  if (ok) {
    what = "eventfd";
    r->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ok = r->cancel_fd >= 0;
  }
  if (!ok) {
    err = errno;
    discard(r);
    en_throw_errno(env, err, what, "preparing a splice relay");
    return NULL;
  }
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok || napi_type_tag_object(env, o, &RELAY_TAG) != napi_ok ||
      napi_wrap(env, o, r, relay_finalize, NULL, NULL) != napi_ok) {
    discard(r);
    en_throw_napi_failure(env, "wrapping a splice relay");
    return NULL;
  }
  /* from here the finalizer owns r */
  EN_CALL(env, en_set_fn(env, o, "start", js_start), NULL);
  EN_CALL(env, en_set_fn(env, o, "counts", js_counts), NULL);
  EN_CALL(env, en_set_fn(env, o, "cancel", js_cancel), NULL);
  return o;
}

static napi_value js_splice_stats(napi_env env, napi_callback_info info) {
  napi_value o;
  EN_CALL(env, napi_create_object(env, &o), NULL);
  EN_CALL(env, en_set_u64(env, o, "started", __atomic_load_n(&stats.started, __ATOMIC_RELAXED)), NULL);
  EN_CALL(env, en_set_u64(env, o, "active", __atomic_load_n(&stats.active, __ATOMIC_RELAXED)), NULL);
  EN_CALL(env, en_set_u64(env, o, "refused", __atomic_load_n(&stats.refused, __ATOMIC_RELAXED)), NULL);
  EN_CALL(env, en_set_u64(env, o, "maxCappedWrite", __atomic_load_n(&stats.max_capped, __ATOMIC_RELAXED)), NULL);
  EN_CALL(env, en_set_u64(env, o, "limit", EN_SPLICE_MAX_RELAYS), NULL);
  return o;
}

static napi_value js_reset_splice_stats(napi_env env, napi_callback_info info) {
  /* active is kept: it counts live relays */
  __atomic_store_n(&stats.started, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&stats.refused, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&stats.max_capped, 0, __ATOMIC_RELAXED);
  return NULL;
}

napi_status en_splice_init(napi_env env, napi_value exports) {
  napi_status s = en_set_fn(env, exports, "spliceRelay", js_splice_relay);
  if (s == napi_ok) s = en_set_fn(env, exports, "spliceStats", js_splice_stats);
  if (s == napi_ok) s = en_set_fn(env, exports, "resetSpliceStats", js_reset_splice_stats);
  return s;
}
