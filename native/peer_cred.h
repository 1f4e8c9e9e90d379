// The credentials of a unix socket's peer, as the kernel recorded them when it connected: SO_PEERCRED (pid,
// uid, gid) and SO_PEERGROUPS (its supplementary groups, Linux 4.13+). What the control socket's access check
// decides on (src/control/access.ts); Node does not expose either option.
#pragma once

#include <napi.h>
#include <sys/types.h>

#include <vector>

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// JS thread (a getsockopt on an fd the caller owns; never blocks). `fd` is a connected AF_UNIX socket.
// Throws SysError: EBADF, ENOTSOCK, ENOPROTOOPT (a kernel without SO_PEERGROUPS), or whatever getsockopt
// reports. Never returns partial credentials.
PeerCred ReadPeerCred(int fd);

// JS thread. peerCred(fd) -> { pid, uid, gid, groups: number[] } (ReadPeerCred); a failure is thrown as the
// addon's errors are (code: the errno name, errno, command: "getsockopt").
Napi::Value PeerCredJs(const Napi::CallbackInfo& info);
