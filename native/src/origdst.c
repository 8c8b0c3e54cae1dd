/*
 * originalDst(fd): the destination a connection had before an iptables REDIRECT/DNAT sent it to us
 * (transparent egress). getsockopt(SOL_IP, SO_ORIGINAL_DST) for IPv4, (SOL_IPV6, IP6T_SO_ORIGINAL_DST) for
 * IPv6; both fill a sockaddr. Returns { address: "1.2.3.4", port: 443, family: 4 | 6 }. Node's socket API has
 * no way to ask for it (npm sockopt handles integer options only), hence this file. The fd is borrowed from a
 * net.Socket (socket._handle.fd): read only, never closed here.
 * Errors: ENOENT when the connection was not redirected (no conntrack NAT entry), EBADF, ENOTSOCK, ...
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value js_original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  EN_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL), NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "originalDst(fd): fd must be a non-negative integer");
    return NULL;
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t len = sizeof ss;
  /* The socket's own family decides which table answers. */
  struct sockaddr_storage local;
  socklen_t local_len = sizeof local;
  if (getsockname(fd, (struct sockaddr*)&local, &local_len) != 0) {
    en_throw_errno(env, errno, "getsockname", "originalDst");
    return NULL;
  }
  int rc = local.ss_family == AF_INET6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len)
                                       : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  if (rc != 0) {
    en_throw_errno(env, errno, "getsockopt", "SO_ORIGINAL_DST");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  int family;
  uint16_t port;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in* sin = (const struct sockaddr_in*)&ss;
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    port = ntohs(sin->sin_port);
    family = 4;
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6* sin6 = (const struct sockaddr_in6*)&ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    port = ntohs(sin6->sin6_port);
    family = 6;
  } else {
    en_throw_errno(env, EAFNOSUPPORT, "getsockopt", "SO_ORIGINAL_DST returned an unknown address family");
    return NULL;
  }
  napi_value out, v;
  EN_CALL(env, napi_create_object(env, &out), NULL);
  EN_CALL(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v), NULL);
  EN_CALL(env, napi_set_named_property(env, out, "address", v), NULL);
  EN_CALL(env, napi_create_uint32(env, port, &v), NULL);
  EN_CALL(env, napi_set_named_property(env, out, "port", v), NULL);
  EN_CALL(env, napi_create_uint32(env, (uint32_t)family, &v), NULL);
  EN_CALL(env, napi_set_named_property(env, out, "family", v), NULL);
  return out;
}

napi_status en_origdst_init(napi_env env, napi_value exports) { return en_set_fn(env, exports, "originalDst", js_original_dst); }
