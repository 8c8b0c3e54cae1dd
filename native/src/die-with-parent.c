/*
 * enclave_die_with_parent [(--sandbox | --deny-vsock) [--read-only DIR]...] PPID ERRFD FILE [ARG...]
 *
 * The app of `enclave-agent run` must not outlive the agent, even when the agent is SIGKILLed (nothing of the
 * agent runs then). The kernel can do it: PR_SET_PDEATHSIG makes it send a signal to a process when its parent
 * dies. But prctl() acts on the calling process and Node cannot run code between fork and exec, so the agent
 * spawns this program instead of the app; it
 *   1. sets PR_SET_PDEATHSIG = SIGKILL on itself (kept across execve for a normal, non-setuid binary),
 *   2. checks that its parent is still PPID: if the agent died before step 1, nobody would send the signal,
 *   3. execvp()s FILE with ARGs — the same pid, so the app is what the agent supervises and signals.
 * If the exec fails, it writes the errno in decimal to ERRFD (a pipe from the agent, made close-on-exec here so
 * the app never inherits it; "-" for none) and exits 127, so the agent reports ENOENT/EACCES as a spawn failure,
 * as if it had exec'd the app itself. Linux only; built with the addon (binding.gyp).
 *
 * The signal comes when the THREAD that forked us exits: the agent spawns from its main thread.
 *
 * --sandbox (the app of `run`, unless [app] sandbox = false): before the exec, a seccomp filter (kept across
 * execve and by every descendant; no_new_privs first, so it needs no privilege and root cannot lift it) makes
 * io_uring_setup (whose IORING_OP_SOCKET makes sockets without socket()) fail with ENOSYS; pidfd_getfd, ptrace
 * and process_vm_readv/writev (ways to use the agent's own vsock descriptors or memory) with EPERM;
 * perf_event_open, bpf, userfaultfd (and /dev/userfaultfd's ioctl), keyctl, add_key and request_key with EPERM,
 * as Docker's default profile does (kernel attack surface no app needs); unshare/clone with CLONE_NEWUSER with
 * EPERM and clone3 with ENOSYS (a user namespace would give the app every capability back, over namespaces of
 * its own); ioctl(NSM_IOCTL_RAW) on any descriptor with EPERM (the app runs as the agent's user and could open
 * /dev/nsm itself: the NSM would then attest a public_key, nonce or user_data of the app's choosing, which the
 * agent's local API refuses to do); syscalls of another ABI (i386 on x86_64: socketcall; x32) with ENOSYS.
 * --deny-vsock (unless [egress] app_vsock = true) is all of that, and socket(AF_VSOCK, ...) fails with EACCES:
 * an enclave has no network but vsock to its parent, and without it the app could open a stream to the host
 * dialer and go around the egress policy the agent enforces, or to anything else the host listens on.
 * The app inherits its stdio only: every other descriptor is made close-on-exec (cloexec_above_stdio).
 * Before that it keeps only Docker's default capabilities minus CAP_MKNOD and CAP_NET_RAW
 * (keep_only_allowed_caps; bounding, effective, permitted, inheritable and ambient sets): an app running as root
 * would otherwise reach past the filter through the kernel (CAP_SYS_MODULE loads a module that opens vsock;
 * CAP_SYS_ADMIN, CAP_SYS_RAWIO...), and without CAP_SYS_PTRACE, with the agent non-dumpable
 * (native/src/process.c), it cannot open /proc/<agent>/mem or environ: the keys. First of all, while it still
 * has CAP_SYS_ADMIN, it gives the app its own mount namespace (every mount
 * a slave of the agent's) in which /proc/sys, /proc/sysrq-trigger and /sys, with every mount under them, are
 * read-only (read_only_kernel_settings): root needs no capability to write kernel settings, and some make the
 * kernel run a program as full root outside the sandbox (a core_pattern pipe handler, modprobe, uevent_helper,
 * a cgroup v1 release_agent); an agent without CAP_SYS_ADMIN (not root) skips it, its app cannot write them.
 * Left to the app as root: root-owned files elsewhere (/dev, /etc...), another procfs or sysfs mounted outside
 * those paths, and kernel settings of the few that need a capability it kept. Any failure here: a message on
 * stderr and exit 2, the app never runs. Linux x86_64 and aarch64 (Nitro's two); elsewhere both options fail
 * (exit 2).
 *
 * --read-only DIR (absolute; after --sandbox or --deny-vsock, up to 8): in that same namespace DIR and every mount under it are
 * read-only too, and DIR and each directory above it are mount points, which cannot be renamed or replaced
 * (EBUSY). The supervisor names the agent's own code and the node_modules its dependencies lie in
 * (src/runtime/agent-read-only-dirs.ts): the agent starts worker threads from files there long after the app
 * has started, and a root app that rewrote one (or renamed a directory above it and put a directory of its own
 * in its place) would run its code inside the agent, keys and vsock included. Nothing is
 * done without CAP_SYS_ADMIN (see below): the app's user must then not be able to write the agent's code.
 *
 * Linked statically (binding.gyp): this runs as the agent's user with every capability before the sandbox is up,
 * on each launch of the app. Dynamically linked, the loader would first run whatever /etc/ld.so.preload names
 * and the libc it finds on disk, both of which a root app can rewrite between two of its launches (the sealed
 * copy of this file, native/src/process.c, guards only the file itself).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_clone3
#define __NR_clone3 435
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
/*
 * The NSM driver's one ioctl (include/uapi/linux/nsm.h; native/src/nsm.c uses the same): _IOWR(0x0A, 0, struct
 * nsm_raw), the struct being two { u64 addr; u64 len; } iovecs. The older out-of-tree driver's NSM_IO_REQUEST
 * has the same number (two struct iovec, 32 bytes on both 64-bit ABIs).
 */
struct nsm_raw_layout {
  __u64 request_addr, request_len, response_addr, response_len;
};
#define NSM_IOCTL_RAW _IOWR(0x0A, 0, struct nsm_raw_layout)
_Static_assert(NSM_IOCTL_RAW == 0xC0200A00u, "NSM_IOCTL_RAW must match the driver's number");
/* /dev/userfaultfd's one ioctl (Linux 6.1, include/uapi/linux/userfaultfd.h): a userfaultfd without the syscall. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
/* The low 32 bits of seccomp_data.args[n] (a u64): where they lie in memory depends on the byte order. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LOW(n) offsetof(struct seccomp_data, args[n])
#else
#define ARG_LOW(n) (offsetof(struct seccomp_data, args[n]) + 4)
#endif
#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define X32_SYSCALL_BIT 0x40000000u
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#endif

/*
 * What the sandboxed app keeps of root's capabilities: Docker's default set (what images built for containers
 * expect: chown, binding ports below 1024, switching users...) minus CAP_MKNOD, which Docker can grant only
 * because its device cgroup stops the nodes from being opened and we have no such cgroup, and minus
 * CAP_NET_RAW: an enclave has loopback only, where a raw socket could only forge packets toward the agent's
 * own listeners (the egress proxy, the local API) and a packet socket read their traffic, and both are a long
 * line of kernel bugs; and there is nothing to ping but the enclave itself. Everything else
 * reaches past the seccomp filter through the kernel: CAP_SYS_MODULE loads a module (kernel code, which can open
 * vsock), CAP_SYS_ADMIN mounts, loads BPF and makes namespaces, CAP_SYS_RAWIO, CAP_SYS_PTRACE (the agent's
 * /proc/<pid>/mem; it is non-dumpable, native/src/process.c), CAP_NET_ADMIN...
 */
static const int kept_caps[] = {
  CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FSETID, CAP_FOWNER, CAP_SETGID, CAP_SETUID, CAP_SETFCAP,
  CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_KILL, CAP_AUDIT_WRITE,
};

static int is_kept(unsigned long cap) {
  for (size_t i = 0; i < sizeof kept_caps / sizeof kept_caps[0]; i++)
    if ((unsigned long)kept_caps[i] == cap) return 1;
  return 0;
}

/*
 * Removes every capability but kept_caps from the bounding set (so no exec, of a setuid-root binary or as root,
 * gives one back), the ambient set and the effective, permitted and inheritable sets, for the app and all it
 * starts. The bounding set is walked up to the kernel's last capability (PR_CAPBSET_READ says EINVAL past it),
 * so capabilities newer than this file go too. Dropping from it needs CAP_SETPCAP: a process without it (not
 * root) has nothing there it could use (no_new_privs ignores setuid bits and file capabilities) and keeps it
 * as it is; the other sets can always be lowered. 0, or -1 with errno set.
 */
static int keep_only_allowed_caps(void) {
  struct __user_cap_header_struct head = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &head, data) != 0) return -1;
  const int can_drop_bounding = (data[CAP_SETPCAP / 32].effective >> (CAP_SETPCAP % 32)) & 1;
  unsigned long cap;
  for (cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
    if (is_kept(cap)) continue;
    if (can_drop_bounding && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) return -1;
    /* EINVAL: a kernel without ambient capabilities (< 4.3). */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, cap, 0, 0) != 0 && errno != EINVAL) return -1;
  }
  if (errno != EINVAL) return -1;
  /* Version 3 of capget/capset covers capabilities 0-63: all there are (Linux 6.x has 41). */
  for (unsigned w = 0; w < 2; w++) {
    __u32 keep = 0;
    for (unsigned b = 0; b < 32; b++)
      if (is_kept(w * 32 + b)) keep |= 1u << b;
    data[w].effective &= keep;
    data[w].permitted &= keep;
    data[w].inheritable &= keep;
  }
  return (int)syscall(SYS_capset, &head, data);
}

/*
 * Root needs no capability to write root-owned kernel settings, and some make the kernel run a program as full
 * root outside the sandbox (no filter, every capability), which can open vsock: a core_pattern pipe handler
 * ("|/path", run when any process crashes), kernel.modprobe, /sys/kernel/uevent_helper, a cgroup v1
 * release_agent; /proc/sysrq-trigger acts on the whole machine. As Docker does, the app gets its own mount
 * namespace in which these trees, and every mount under them, are read-only.
 */
static const char* const kernel_trees[] = { "/proc/sys", "/proc/sysrq-trigger", "/sys" };
#define MAX_AGENT_TREES 8
#define KERNEL_TREES (sizeof kernel_trees / sizeof kernel_trees[0])

/* What read_only_kernel_settings makes read-only: kernel_trees, then the --read-only directories. */
struct trees {
  const char* path[KERNEL_TREES + MAX_AGENT_TREES];
  size_t count;
};

/* 1 if this process has `cap` in its effective set, 0 if not, -1 with errno set. */
static int has_effective_cap(unsigned cap) {
  struct __user_cap_header_struct head = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &head, data) != 0) return -1;
  return (int)((data[cap / 32].effective >> (cap % 32)) & 1);
}

/* mountinfo writes a space, tab, newline or backslash in a path as \ooo (octal); decoded in place. */
static void unescape_octal(char* s) {
  char* out = s;
  for (const char* in = s; *in != '\0';) {
    if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' && in[3] <= '7') {
      *out++ = (char)(((in[1] - '0') << 6) | ((in[2] - '0') << 3) | (in[3] - '0'));
      in += 4;
    } else {
      *out++ = *in++;
    }
  }
  *out = '\0';
}

/*
 * Makes the mount at `path` read-only in this namespace. The flags it has (nosuid, nodev, noexec, atime) are
 * passed again: a remount that would clear one the kernel has locked (a namespace made by a less privileged
 * user namespace) fails with EPERM.
 */
static int remount_read_only(const char* path) {
  struct statvfs st;
  if (statvfs(path, &st) != 0) return -1;
  static const struct { unsigned long st, ms; } keep[] = {
    { ST_NOSUID, MS_NOSUID }, { ST_NODEV, MS_NODEV }, { ST_NOEXEC, MS_NOEXEC },
    { ST_NOATIME, MS_NOATIME }, { ST_NODIRATIME, MS_NODIRATIME }, { ST_RELATIME, MS_RELATIME },
  };
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
    if (st.f_flag & keep[i].st) flags |= keep[i].ms;
  return mount(NULL, path, NULL, flags, NULL);
}

/* Remounts read-only every mount listed in this namespace's mountinfo at or below one of `trees`. */
static int remount_trees_read_only(const struct trees* trees, const char** failed) {
  *failed = "/proc/self/mountinfo";
  /* Read whole before the first remount, so the remounts cannot disturb the walk. */
  FILE* f = fopen("/proc/self/mountinfo", "re");
  if (f == NULL) return -1;
  char* text = NULL;
  size_t size = 0;
  FILE* buf = open_memstream(&text, &size);
  if (buf == NULL) {
    fclose(f);
    return -1;
  }
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, n, buf);
  const int read_failed = ferror(f);
  fclose(f);
  if (fclose(buf) != 0 || read_failed) {
    free(text);
    errno = EIO;
    return -1;
  }
  int rc = 0;
  char* save_line = NULL;
  for (char* line = strtok_r(text, "\n", &save_line); line != NULL && rc == 0; line = strtok_r(NULL, "\n", &save_line)) {
    /* ID PARENT MAJ:MIN ROOT MOUNT-POINT ...: the fifth field. */
    char* save_field = NULL;
    char* mnt = strtok_r(line, " ", &save_field);
    for (int i = 0; i < 4 && mnt != NULL; i++) mnt = strtok_r(NULL, " ", &save_field);
    if (mnt == NULL) continue;
    unescape_octal(mnt);
    for (size_t t = 0; t < trees->count; t++) {
      const size_t len = strlen(trees->path[t]);
      if (strncmp(mnt, trees->path[t], len) != 0 || (mnt[len] != '\0' && mnt[len] != '/')) continue;
      if (remount_read_only(mnt) != 0) {
        *failed = trees->path[t];
        rc = -1;
      }
      break;
    }
  }
  free(text);
  return rc;
}

/*
 * Makes `dir` and each directory above it (not "/") a mount point of this namespace, top down, by binding each
 * onto itself: rename(2) and rmdir(2) refuse a mount point (EBUSY), so the app cannot move the agent's code
 * aside and put a writable directory of its own at the path the agent reads.
 */
static int pin_path(const char* dir, const char** failed) {
  char prefix[PATH_MAX];
  const size_t len = strlen(dir);
  if (len >= sizeof prefix) {
    errno = ENAMETOOLONG;
    return -1;
  }
  *failed = dir;
  /* Through a symbolic link the mounts would pin its target, and the link itself could be replaced. */
  char* real = realpath(dir, NULL);
  if (real == NULL) return -1;
  const int canonical = strcmp(real, dir) == 0;
  free(real);
  if (!canonical) {
    errno = EINVAL;
    return -1;
  }
  for (size_t i = 1; i <= len; i++) {
    if (dir[i] != '/' && dir[i] != '\0') continue;
    memcpy(prefix, dir, i);
    prefix[i] = '\0';
    if (mount(prefix, prefix, NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
  }
  return 0;
}

/*
 * Gives this process (the app to be) its own mount namespace with kernel_trees and `agent_trees` read-only; 0, or -1 with
 * errno set and *failed naming the step. Every mount is made a slave first: mounts the agent makes later still
 * reach the app (where the agent's are shared), and nothing done here reaches the agent's namespace. Needs
 * CAP_SYS_ADMIN, so it comes before the capability cut; without it (an agent not running as root) there is
 * nothing to protect, as a non-root app cannot write these files, and nothing is done.
 */
static int read_only_kernel_settings(const char* const* agent_trees, size_t agent_count, const char** failed) {
  *failed = "capget";
  const int admin = has_effective_cap(CAP_SYS_ADMIN);
  if (admin <= 0) return admin;
  *failed = "unshare(CLONE_NEWNS)";
  if (unshare(CLONE_NEWNS) != 0) return -1;
  *failed = "making / a slave";
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) return -1;
  struct trees trees = { .count = 0 };
  /* A bind onto itself makes /proc/sys and the sysrq file mount points that can be remounted on their own. */
  for (size_t t = 0; t < KERNEL_TREES; t++) {
    struct stat st;
    *failed = kernel_trees[t];
    if (lstat(kernel_trees[t], &st) != 0) {
      if (errno == ENOENT) continue;
      return -1;
    }
    if (mount(kernel_trees[t], kernel_trees[t], NULL, MS_BIND | MS_REC, NULL) != 0) return -1;
    trees.path[trees.count++] = kernel_trees[t];
  }
  for (size_t t = 0; t < agent_count; t++) {
    if (pin_path(agent_trees[t], failed) != 0) return -1;
    trees.path[trees.count++] = agent_trees[t];
  }
  if (remount_trees_read_only(&trees, failed) != 0) return -1;
  /*
   * The working directory still points into the mounts as they were before the binds: from an ancestor of a
   * --read-only DIR (an app in /app, the agent in /app/node_modules/...), relative paths would reach DIR's
   * files through the writable mount underneath. Entering it again by name goes through the new ones.
   */
  char cwd[PATH_MAX];
  *failed = "chdir";
  if (getcwd(cwd, sizeof cwd) != NULL && cwd[0] == '/' && chdir(cwd) != 0) return -1;
  return 0;
}

/*
 * Syscalls the sandboxed app gets EPERM for, as under Docker's default profile. pidfd_getfd, ptrace and
 * process_vm_readv/writev: ways to use the agent's own descriptors (its vsock streams, the dialer's idle ones
 * included) or memory. perf_event_open, bpf, userfaultfd and the kernel keyring (keyctl, add_key,
 * request_key): kernel attack surface an app does not need, which the kernel opens to unprivileged callers
 * as its sysctls allow (the keyring is not namespaced either).
 */
static const long refused_eperm[] = {
  __NR_pidfd_getfd, __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev,
  __NR_perf_event_open, __NR_bpf, __NR_userfaultfd, __NR_keyctl, __NR_add_key, __NR_request_key,
};

/* Room for every instruction install_filter emits (checked as it emits them). */
#define FILTER_MAX 64

/* The sandbox's seccomp filter (see the file comment): socket(AF_VSOCK) refused when `vsock_denied`; 0, or -1 with errno set. */
static int install_filter(int vsock_denied) {
#ifndef NATIVE_ARCH
  (void)vsock_denied;
  errno = ENOSYS;
  return -1;
#else
  struct sock_filter filter[FILTER_MAX];
  size_t n = 0;
#define EMIT(insn) \
  do { \
    if (n == FILTER_MAX) { \
      errno = E2BIG; \
      return -1; \
    } \
    filter[n++] = (struct sock_filter)insn; \
  } while (0)
/* With the syscall number in the accumulator: `nr` fails with `err`, anything else goes on. */
#define REFUSE(nr, err) \
  do { \
    EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1)); \
    EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))); \
  } while (0)
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#ifdef X32_SYSCALL_BIT
  EMIT(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
#endif
  /* IORING_OP_SOCKET makes sockets without socket(): no io_uring at all (as under Docker's default profile). */
  REFUSE(__NR_io_uring_setup, ENOSYS);
  /*
   * No user namespace: in one the app holds every capability again (mount, CAP_NET_ADMIN, the kernel code
   * behind them), over its own namespaces only, but all of it reachable. clone3 passes its flags in memory a
   * filter cannot read: ENOSYS, and the C library falls back to clone (as under Docker's default profile).
   */
  REFUSE(__NR_clone3, ENOSYS);
  for (size_t i = 0; i < sizeof refused_eperm / sizeof refused_eperm[0]; i++) REFUSE(refused_eperm[i], EPERM);
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unshare, 1, 0));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4));
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0)));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NEWUSER, 0, 1));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  /*
   * The NSM, which signs whatever public_key, nonce and user_data it is given, and /dev/userfaultfd's way to the
   * userfaultfd syscall refused above. ioctl's request is an unsigned int to the kernel, which drops the
   * register's high 32 bits: only the low ones are compared, so setting high bits does not slip past.
   */
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 5));
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(1)));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NSM_IOCTL_RAW, 1, 0));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, USERFAULTFD_IOC_NEW, 0, 1));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  if (vsock_denied) {
    EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 3));
    /* socket()'s domain is an int: the low 32 bits of args[0]. */
    EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LOW(0)));
    EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_VSOCK, 0, 1));
    EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES));
  }
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
#undef REFUSE
#undef EMIT
  struct sock_fprog prog = { .len = (unsigned short)n, .filter = filter };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
#endif
}

/*
 * Marks every descriptor from 3 up close-on-exec: the sandboxed app gets its stdio and nothing else, whatever
 * the agent holds without FD_CLOEXEC (one it inherited from its own parent, a vsock stream included). ERRFD
 * is close-on-exec already. close_range (Linux 5.11), else a walk of /proc/self/fd. 0, or -1 with errno set.
 */
static int cloexec_above_stdio(void) {
  if (syscall(__NR_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) == 0) return 0;
  if (errno != ENOSYS && errno != EINVAL) return -1;
  DIR* d = opendir("/proc/self/fd");
  if (d == NULL) return -1;
  int rc = 0;
  for (struct dirent* e; (e = readdir(d)) != NULL;) {
    char* end = NULL;
    const long fd = strtol(e->d_name, &end, 10);
    if (*end != '\0' || end == e->d_name || fd < 3 || fd == dirfd(d)) continue;
    if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) != 0 && errno != EBADF) rc = -1;
  }
  closedir(d);
  return rc;
}

static int usage(void) {
  fputs("usage: enclave_die_with_parent [(--sandbox | --deny-vsock) [--read-only DIR]...] PPID ERRFD FILE [ARG...]\n", stderr);
  return 2;
}

/* A non-negative decimal below INT_MAX, the whole string; -1 otherwise. */
static long parse_num(const char* s) {
  if (s == NULL || *s == '\0') return -1;
  char* end = NULL;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0 || v >= INT_MAX) return -1;
  return v;
}

int main(int argc, char** argv) {
  /* --sandbox: the sandbox, vsock allowed ([egress] app_vsock); --deny-vsock: the sandbox without vsock. */
  const int vsock_denied = argc > 1 && strcmp(argv[1], "--deny-vsock") == 0;
  const int sandboxed = vsock_denied || (argc > 1 && strcmp(argv[1], "--sandbox") == 0);
  if (sandboxed) {
    argv++;
    argc--;
  }
  const char* agent_trees[MAX_AGENT_TREES];
  size_t agent_count = 0;
  while (sandboxed && argc > 2 && strcmp(argv[1], "--read-only") == 0) {
    const char* dir = argv[2];
    /* absolute, no trailing slash: compared as is with mountinfo's mount points */
    const size_t len = strlen(dir);
    if (agent_count == MAX_AGENT_TREES || dir[0] != '/' || len < 2 || dir[len - 1] == '/') return usage();
    agent_trees[agent_count++] = dir;
    argv += 2;
    argc -= 2;
  }
  if (argc < 4) return usage();
  const long ppid = parse_num(argv[1]);
  const long errfd = strcmp(argv[2], "-") == 0 ? -2 : parse_num(argv[2]);
  if (ppid <= 1 || errfd == -1) return usage();

  if (errfd >= 0 && fcntl((int)errfd, F_SETFD, FD_CLOEXEC) != 0) {
    fprintf(stderr, "enclave_die_with_parent: fd %ld: %s\n", errfd, strerror(errno));
    return 2;
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) {
    fprintf(stderr, "enclave_die_with_parent: prctl(PR_SET_PDEATHSIG): %s\n", strerror(errno));
    return 2;
  }
  /* The agent died between fork and the prctl: we were reparented already and no signal will come. */
  if ((long)getppid() != ppid) raise(SIGKILL);
  const char* failed = NULL;
  const char* const option = vsock_denied ? "--deny-vsock" : "--sandbox";
  if (sandboxed && read_only_kernel_settings(agent_trees, agent_count, &failed) != 0) {
    fprintf(stderr, "enclave_die_with_parent: %s: read-only mounts: %s: %s\n", option, failed, strerror(errno));
    return 2;
  }
  if (sandboxed && keep_only_allowed_caps() != 0) {
    fprintf(stderr, "enclave_die_with_parent: %s: capabilities: %s\n", option, strerror(errno));
    return 2;
  }
  if (sandboxed && cloexec_above_stdio() != 0) {
    fprintf(stderr, "enclave_die_with_parent: %s: close-on-exec: %s\n", option, strerror(errno));
    return 2;
  }
  if (sandboxed && install_filter(vsock_denied) != 0) {
    fprintf(stderr, "enclave_die_with_parent: %s: %s\n", option, strerror(errno));
    return 2;
  }

  execvp(argv[3], argv + 3);
  const int e = errno;
  if (errfd >= 0) {
    char buf[16];
    const int n = snprintf(buf, sizeof buf, "%d", e);
    ssize_t w;
    do w = write((int)errfd, buf, (size_t)n);
    while (w < 0 && errno == EINTR);
  } else {
    fprintf(stderr, "enclave_die_with_parent: %s: %s\n", argv[3], strerror(e));
  }
  return 127;
}
