/*
 * Test-only stand-in for the NSM *driver* (not for our code): runs a command under a seccomp filter that hands
 * every ioctl(fd, 0xC0200A00, ...) to this supervisor (SECCOMP_RET_USER_NOTIF, a stock kernel feature: no
 * module, no LD_PRELOAD, no change to the addon). The addon issues its real open() and ioctl() syscalls; here
 * we do what drivers/misc/nsm.c does with them: read struct nsm_raw and the request from the caller's memory,
 * write a response into its response iovec and rewrite response.len.
 *
 *   fake_nsm DEVICE LOG RESPONSE[,RESPONSE...] -- COMMAND [ARGS...]
 *
 * DEVICE: the only file the ioctl is answered for (others get ENOTTY, as from the kernel).
 * RESPONSE files are used in order (the last one repeats). LOG gets one line per ioctl:
 *   "ioctl fd_ok=1 req_len=N resp_cap=N resp_len=N req=<hex>"
 * Exits with the command's exit status.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "fake_nsm supports x86_64 and aarch64"
#endif

#define NSM_IOCTL_RAW 0xC0200A00U
struct nsm_iovec { uint64_t addr, len; };
struct nsm_raw { struct nsm_iovec request, response; };

static int install_filter(void) {
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 0, 7),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 5),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])), /* low word (little endian) */
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NSM_IOCTL_RAW, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1]) + 4),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
}

static uint8_t* read_file(const char* path, size_t* len) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  uint8_t* buf = malloc(1 << 20);
  *len = fread(buf, 1, 1 << 20, f);
  fclose(f);
  return buf;
}

static int peek(pid_t pid, uint64_t addr, void* out, size_t n) {
  struct iovec local = {out, n}, remote = {(void*)(uintptr_t)addr, n};
  return process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)n ? 0 : -1;
}

static int poke(pid_t pid, uint64_t addr, const void* in, size_t n) {
  struct iovec local = {(void*)in, n}, remote = {(void*)(uintptr_t)addr, n};
  return process_vm_writev(pid, &local, 1, &remote, 1, 0) == (ssize_t)n ? 0 : -1;
}

int main(int argc, char** argv) {
  if (argc < 6 || strcmp(argv[4], "--") != 0) {
    fprintf(stderr, "usage: fake_nsm DEVICE LOG RESPONSE[,RESPONSE...] -- COMMAND [ARGS...]\n");
    return 2;
  }
  char device[PATH_MAX];
  if (!realpath(argv[1], device)) { perror("realpath DEVICE"); return 2; }
  FILE* log = fopen(argv[2], "w");
  if (!log) { perror("LOG"); return 2; }
  char* responses[16];
  int n_responses = 0;
  for (char* tok = strtok(argv[3], ","); tok && n_responses < 16; tok = strtok(NULL, ",")) responses[n_responses++] = tok;

  int listener = install_filter();
  if (listener < 0) { perror("seccomp"); return 3; }
  pid_t child = fork();
  if (child == 0) {
    close(listener);
    execvp(argv[5], &argv[5]);
    perror("execvp");
    _exit(127);
  }

  struct seccomp_notif_sizes sizes;
  syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes);
  struct seccomp_notif* req = calloc(1, sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req);
  struct seccomp_notif_resp* resp = calloc(1, sizes.seccomp_notif_resp > sizeof *resp ? sizes.seccomp_notif_resp : sizeof *resp);
  int calls = 0, status = 0;
  for (;;) {
    pid_t w = waitpid(child, &status, WNOHANG);
    if (w == child) break;
    struct pollfd p = {listener, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0 || !(p.revents & POLLIN)) continue;
    memset(req, 0, sizes.seccomp_notif);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req) != 0) continue;
    memset(resp, 0, sizes.seccomp_notif_resp);
    resp->id = req->id;
    int err = 0;
    /* Which file is the fd? Only our device answers; anything else gets the kernel's ENOTTY. */
    char link[64], target[PATH_MAX];
    snprintf(link, sizeof link, "/proc/%d/fd/%llu", req->pid, (unsigned long long)req->data.args[0]);
    ssize_t tl = readlink(link, target, sizeof target - 1);
    int fd_ok = tl > 0 && (target[tl] = 0, strcmp(target, device) == 0);
    struct nsm_raw raw;
    uint8_t request[4096];
    size_t resp_len = 0;
    if (!fd_ok) err = ENOTTY;
    else if (peek(req->pid, req->data.args[2], &raw, sizeof raw) != 0) err = EFAULT;
    else if (raw.request.len == 0 || raw.request.len > sizeof request) err = EINVAL; /* as the driver */
    else if (peek(req->pid, raw.request.addr, request, raw.request.len) != 0) err = EFAULT;
    else {
      const char* file = responses[calls < n_responses ? calls : n_responses - 1];
      uint8_t* body = read_file(file, &resp_len);
      if (!body) err = EIO;
      else if (resp_len > raw.response.len) err = EMSGSIZE;
      else if (poke(req->pid, raw.response.addr, body, resp_len) != 0) err = EFAULT;
      else {
        uint64_t len = resp_len;
        if (poke(req->pid, req->data.args[2] + offsetof(struct nsm_raw, response.len), &len, sizeof len) != 0) err = EFAULT;
      }
      free(body);
    }
    fprintf(log, "ioctl fd_ok=%d req_len=%llu resp_cap=%llu resp_len=%zu err=%d req=", fd_ok,
            fd_ok ? (unsigned long long)raw.request.len : 0ULL, fd_ok ? (unsigned long long)raw.response.len : 0ULL,
            err ? 0 : resp_len, err);
    if (fd_ok && err == 0)
      for (size_t i = 0; i < raw.request.len; i++) fprintf(log, "%02x", request[i]);
    fprintf(log, "\n");
    fflush(log);
    calls++;
    resp->error = err ? -err : 0;
    resp->val = 0;
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) == 0) ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp);
  }
  fclose(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
