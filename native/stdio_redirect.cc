// stdio_redirect: see stdio_redirect.h.
#include "stdio_redirect.h"

#include <cerrno>
#include <string>

#include <unistd.h>

#include "sys_error.h"

// JS thread.
void RedirectStdio(int fd, int target) {
  if (target != STDOUT_FILENO && target != STDERR_FILENO) ThrowSys(EINVAL, "dup2", "only fd 1 or 2 can be redirected, not " + std::to_string(target));
  if (fd < 0) ThrowSys(EINVAL, "dup2", "no file descriptor " + std::to_string(fd));
  if (fd == target) return;
  int r;
  do {
    r = dup2(fd, target);
  } while (r < 0 && errno == EINTR);
  if (r < 0) ThrowSys(errno, "dup2", "fd " + std::to_string(fd) + " onto " + std::to_string(target));
}
