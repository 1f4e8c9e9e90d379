#include "sys_error.h"

#include <cstring>

namespace {
std::string Describe(int err, const std::string& command, const std::string& detail) {
  std::string msg = command;
  if (!detail.empty()) msg += " " + detail;
  if (err != 0) msg += ": " + std::string(strerror(err));
  return msg;
}
}  // namespace

// Any thread.
SysError::SysError(int err, std::string command, const std::string& detail)
    : std::runtime_error(Describe(err, command, detail)), err_(err), command_(std::move(command)) {}

// Any thread.
std::string SysError::code() const {
  const char* name = err_ > 0 ? strerrorname_np(err_) : nullptr;
  return name ? name : "EUNKNOWN";
}

// Any thread.
void ThrowSys(int errno_value, const std::string& command, const std::string& detail) {
  throw SysError(errno_value, command, detail);
}
