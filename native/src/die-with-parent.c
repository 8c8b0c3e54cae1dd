/*
 * enclave_die_with_parent PPID ERRFD FILE [ARG...]
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
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int usage(void) {
  fputs("usage: enclave_die_with_parent PPID ERRFD FILE [ARG...]\n", stderr);
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
