/*
 * bringUpLoopback(): `lo` up with 127.0.0.1/8, without `ip` in the image. An enclave boots with `lo` down;
 * the agent forwards to the app on 127.0.0.1, so it raises it first. Idempotent: each step reads the current
 * state and only writes what differs, so on a configured interface it issues no SIOCS* call at all.
 * Returns { changed: string[] } naming the steps taken ("address", "netmask", "up").
 * Without CAP_NET_ADMIN the first needed write fails with EPERM, thrown as an errno error.
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void set_ipv4(struct ifreq* ifr, uint32_t addr_host_order) {
  struct sockaddr_in* sin = (struct sockaddr_in*)&ifr->ifr_addr;
  memset(sin, 0, sizeof *sin);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = htonl(addr_host_order);
}

static uint32_t get_ipv4(const struct ifreq* ifr) {
  const struct sockaddr_in* sin = (const struct sockaddr_in*)&ifr->ifr_addr;
  return ntohl(sin->sin_addr.s_addr);
}

static napi_value js_bring_up_loopback(napi_env env, napi_callback_info info) {
  const uint32_t want_addr = 0x7F000001; /* 127.0.0.1 */
  const uint32_t want_mask = 0xFF000000; /* /8 */
  const char* changed[3];
  int n_changed = 0;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    en_throw_errno(env, errno, "socket", "AF_INET control socket for lo");
    return NULL;
  }
  struct ifreq ifr;
  int err = 0;
  const char* step = NULL;

  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  /* No address yet reads as EADDRNOTAVAIL. */
  if (ioctl(fd, SIOCGIFADDR, &ifr) != 0 || get_ipv4(&ifr) != want_addr) {
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    set_ipv4(&ifr, want_addr);
    if (ioctl(fd, SIOCSIFADDR, &ifr) != 0) {
      err = errno;
      step = "SIOCSIFADDR lo 127.0.0.1";
      goto out;
    }
    changed[n_changed++] = "address";
  }

  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFNETMASK, &ifr) != 0 || get_ipv4(&ifr) != want_mask) {
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    set_ipv4(&ifr, want_mask);
    if (ioctl(fd, SIOCSIFNETMASK, &ifr) != 0) {
      err = errno;
      step = "SIOCSIFNETMASK lo 255.0.0.0";
      goto out;
    }
    changed[n_changed++] = "netmask";
  }

  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
    err = errno;
    step = "SIOCGIFFLAGS lo";
    goto out;
  }
  if (!(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) {
      err = errno;
      step = "SIOCSIFFLAGS lo IFF_UP";
      goto out;
    }
    changed[n_changed++] = "up";
  }

out:
  close(fd);
  if (err != 0) {
    en_throw_errno(env, err, "ioctl",
                   err == EPERM ? (step && strstr(step, "SIOCSIFFLAGS") ? "SIOCSIFFLAGS lo IFF_UP needs CAP_NET_ADMIN (run as root inside the enclave)"
                                                                        : "configuring lo needs CAP_NET_ADMIN (run as root inside the enclave)")
                                : step);
    return NULL;
  }
  napi_value result, arr, v;
  EN_CALL(env, napi_create_object(env, &result), NULL);
  EN_CALL(env, napi_create_array_with_length(env, (size_t)n_changed, &arr), NULL);
  for (int i = 0; i < n_changed; i++) {
    EN_CALL(env, napi_create_string_utf8(env, changed[i], NAPI_AUTO_LENGTH, &v), NULL);
    EN_CALL(env, napi_set_element(env, arr, (uint32_t)i, v), NULL);
  }
  EN_CALL(env, napi_set_named_property(env, result, "changed", arr), NULL);
  return result;
}

napi_status en_loopback_init(napi_env env, napi_value exports) {
  return en_set_fn(env, exports, "bringUpLoopback", js_bring_up_loopback);
}
