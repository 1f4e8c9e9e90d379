// sd_notify: see sd_notify.h.
#include "sd_notify.h"

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sys_error.h"

// JS thread.
bool SdNotify(const std::string& state) {
  const char* env = std::getenv("NOTIFY_SOCKET");
  if (env == nullptr || env[0] == '\0') return false;
  std::string name(env);
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (name[0] != '/' && name[0] != '@') ThrowSys(EINVAL, "sd_notify", "NOTIFY_SOCKET must be an absolute path or start with @: " + name);
  // An abstract name fills sun_path from byte 0 (a NUL in place of the '@') and its length is exact;
  // a path needs room for its terminating NUL.
  bool abstract = name[0] == '@';
  size_t limit = abstract ? sizeof addr.sun_path : sizeof addr.sun_path - 1;
  if (name.size() > limit) ThrowSys(ENAMETOOLONG, "sd_notify", "NOTIFY_SOCKET is too long: " + name);
  std::memcpy(addr.sun_path, name.data(), name.size());
  if (abstract) addr.sun_path[0] = '\0';
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (abstract ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) ThrowSys(errno, "socket", "sd_notify");
  ssize_t n = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), len);
  int err = errno;
  close(fd);
  if (n < 0) ThrowSys(err, "sendto", "sd_notify to " + name);
  if (static_cast<size_t>(n) != state.size()) ThrowSys(EMSGSIZE, "sendto", "sd_notify: short datagram");
  return true;
}
