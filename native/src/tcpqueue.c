/*
 * How far the reader of a connection we write to has got (the responder's stall watch, src/responder/app-progress.ts).
 * Node knows what it handed the kernel; the kernel holds the rest in two queues:
 *   socketOutq(fd)    ioctl(SIOCOUTQ): bytes in this socket's send queue, sent or not, not yet acknowledged.
 *   tcpPeerUnread(fd) the connected peer socket's receive queue (received, not yet read by its owner), found on
 *                     this host by its 4-tuple through sock_diag (NETLINK_SOCK_DIAG, one exact lookup, no dump).
 * Handed − outq − peerUnread is what the peer application read, to the byte. The outq alone moves only when the
 * peer's window opens, by about an MSS (64 KiB on loopback): a slow reader's progress shows in large steps.
 * The fd is borrowed from a net.Socket (socket._handle.fd): read only, never closed here.
 * Errors: EBADF, ENOTTY (socketOutq on a non-socket), ENOTSOCK, EAFNOSUPPORT (tcpPeerUnread on a non-inet socket),
 * EPROTOTYPE (not a stream socket), ENOTCONN, ENOENT (the peer socket is not on this host / in this network
 * namespace, or the kernel answered with another socket: a listener on the peer's address, behind a DNAT),
 * EPROTONOSUPPORT or ENOENT (a kernel without inet_diag).
 */
#include "common.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SIOCOUTQ
#define SIOCOUTQ TIOCOUTQ
#endif

/* The fd argument: a non-negative int (the socket's fd; -1 or a fraction is a TypeError, not a syscall). */
static bool fd_arg(napi_env env, napi_callback_info info, const char* fn, int* fd) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t v = -1;
  double d = -1;
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), false);
  if (argc < 1 || napi_get_value_double(env, argv[0], &d) != napi_ok || napi_get_value_int32(env, argv[0], &v) != napi_ok ||
      v < 0 || (double)v != d) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s(fd): fd must be a non-negative integer", fn);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *fd = v;
  return true;
}

static napi_value js_socket_outq(napi_env env, napi_callback_info info) {
  int fd;
  if (!fd_arg(env, info, "socketOutq", &fd)) return NULL;
  int n = 0;
  if (ioctl(fd, SIOCOUTQ, &n) != 0) {
    en_throw_errno(env, errno, "ioctl", "SIOCOUTQ");
    return NULL;
  }
  napi_value out;
  EN_CALL(env, napi_create_uint32(env, n < 0 ? 0 : (uint32_t)n, &out), NULL);
  return out;
}

/* The peer's receive queue, looked up as the socket whose source is our peer address and destination ours.
 * Returns a positive errno on failure. */
static int peer_unread(int fd, uint32_t* out) {
  struct sockaddr_storage local, peer;
  socklen_t llen = sizeof local, plen = sizeof peer;
  if (getsockname(fd, (struct sockaddr*)&local, &llen) != 0) return errno;
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) return EAFNOSUPPORT;
  int type = 0;
  socklen_t tlen = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0) return errno;
  if (type != SOCK_STREAM) return EPROTOTYPE;
  if (getpeername(fd, (struct sockaddr*)&peer, &plen) != 0) return errno;

  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 req;
  } msg;
  memset(&msg, 0, sizeof msg);
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST; /* no NLM_F_DUMP: one exact lookup by the 4-tuple */
  msg.nlh.nlmsg_seq = 1;
  msg.req.sdiag_family = (uint8_t)local.ss_family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = ~0U;
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  /* the peer's socket: source = its address (our peer), destination = ours */
  if (local.ss_family == AF_INET) {
    const struct sockaddr_in* l = (const struct sockaddr_in*)&local;
    const struct sockaddr_in* p = (const struct sockaddr_in*)&peer;
    msg.req.id.idiag_sport = p->sin_port;
    msg.req.id.idiag_dport = l->sin_port;
    memcpy(msg.req.id.idiag_src, &p->sin_addr, 4);
    memcpy(msg.req.id.idiag_dst, &l->sin_addr, 4);
  } else {
    const struct sockaddr_in6* l = (const struct sockaddr_in6*)&local;
    const struct sockaddr_in6* p = (const struct sockaddr_in6*)&peer;
    msg.req.id.idiag_sport = p->sin6_port;
    msg.req.id.idiag_dport = l->sin6_port;
    memcpy(msg.req.id.idiag_src, &p->sin6_addr, 16);
    memcpy(msg.req.id.idiag_dst, &l->sin6_addr, 16);
  }

  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return errno;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  int err = 0;
  if (sendto(nl, &msg, sizeof msg, 0, (struct sockaddr*)&kernel, sizeof kernel) < 0) {
    err = errno;
  } else {
    union {
      struct nlmsghdr h;
      char bytes[8192];
    } buf;
    /* The kernel queues its answer to an exact lookup inside sendto() (inet_diag replies from the request's own
     * call): it is there already, so this never waits — on the event loop thread, nothing may. No answer is
     * an error like any other (the caller falls back to the acknowledged count). */
    ssize_t got = recv(nl, &buf, sizeof buf, MSG_DONTWAIT);
    if (got < 0) {
      err = errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
    } else {
      err = ENOENT;
      int len = (int)got; /* signed: NLMSG_NEXT counts it down, NLMSG_OK stops below one header */
      for (struct nlmsghdr* h = &buf.h; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
          const struct nlmsgerr* e = (const struct nlmsgerr*)NLMSG_DATA(h);
          err = h->nlmsg_len >= NLMSG_LENGTH(sizeof *e) && e->error < 0 ? -e->error : EPROTO;
          break;
        }
        if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
          const struct inet_diag_msg* r = (const struct inet_diag_msg*)NLMSG_DATA(h);
          /* The kernel's lookup falls back to a listener on the peer's address (ours behind a DNAT, say): its
           * "receive queue" is an accept backlog. Only a socket connected to ours is the peer (the kernel matched
           * its addresses; a listener has no remote port). */
          if (r->idiag_state == TCP_LISTEN || r->id.idiag_sport != msg.req.id.idiag_sport ||
              r->id.idiag_dport != msg.req.id.idiag_dport)
            break;
          *out = r->idiag_rqueue;
          err = 0;
          break;
        }
      }
    }
  }
  close(nl);
  return err;
}

static napi_value js_tcp_peer_unread(napi_env env, napi_callback_info info) {
  int fd;
  if (!fd_arg(env, info, "tcpPeerUnread", &fd)) return NULL;
  uint32_t n = 0;
  int err = peer_unread(fd, &n);
  if (err != 0) {
    en_throw_errno(env, err, "sock_diag", "tcpPeerUnread");
    return NULL;
  }
  napi_value out;
  EN_CALL(env, napi_create_uint32(env, n, &out), NULL);
  return out;
}

napi_status en_tcpqueue_init(napi_env env, napi_value exports) {
  napi_status s = en_set_fn(env, exports, "socketOutq", js_socket_outq);
  if (s != napi_ok) return s;
  return en_set_fn(env, exports, "tcpPeerUnread", js_tcp_peer_unread);
}
