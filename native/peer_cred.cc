#include "peer_cred.h"

#include <sys/socket.h>

#include <cerrno>

#include "sys_error.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

// JS thread.
PeerCred ReadPeerCred(int fd) {
  if (fd < 0) ThrowSys(EBADF, "getsockopt", "SO_PEERCRED (no fd)");
  struct ucred uc {};
  socklen_t len = sizeof(uc);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) ThrowSys(errno, "getsockopt", "SO_PEERCRED");
  if (len != sizeof(uc)) ThrowSys(EPROTO, "getsockopt", "SO_PEERCRED (short answer)");
  PeerCred out;
  out.pid = uc.pid;
  out.uid = uc.uid;
  out.gid = uc.gid;
  // SO_PEERGROUPS answers ERANGE with the size it needs when the buffer is too small: grow and ask again.
  std::vector<gid_t> groups(32);
  for (int attempt = 0; attempt < 4; attempt++) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      out.groups = std::move(groups);
      return out;
    }
    if (errno != ERANGE) ThrowSys(errno, "getsockopt", "SO_PEERGROUPS");
    size_t need = glen / sizeof(gid_t);
    groups.resize(need > groups.size() ? need : groups.size() * 2);
  }
  ThrowSys(ERANGE, "getsockopt", "SO_PEERGROUPS (the group list kept growing)");
}

// JS thread.
Napi::Value PeerCredJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || info[0].As<Napi::Number>().Int32Value() < 0)
    throw Napi::TypeError::New(env, "peerCred(fd): fd must be a non-negative integer");
  PeerCred c;
  try {
    c = ReadPeerCred(info[0].As<Napi::Number>().Int32Value());
  } catch (const SysError& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", e.code());
    err.Set("errno", Napi::Number::New(env, e.err()));
    err.Set("command", e.command());
    throw err;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, c.pid));
  o.Set("uid", Napi::Number::New(env, c.uid));
  o.Set("gid", Napi::Number::New(env, c.gid));
  Napi::Array groups = Napi::Array::New(env, c.groups.size());
  for (size_t i = 0; i < c.groups.size(); i++) groups.Set(static_cast<uint32_t>(i), Napi::Number::New(env, c.groups[i]));
  o.Set("groups", groups);
  return o;
}
