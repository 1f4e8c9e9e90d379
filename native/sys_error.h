// SysError: a failed syscall or ublk command, with the errno and the command's name, thrown by the
// C++ side on any thread and turned into a JS Error (code, errno, command) on the JS thread.
#pragma once

#include <stdexcept>
#include <string>

class SysError : public std::runtime_error {
 public:
  // Any thread. err is a positive errno (0 when there is none); command names what failed.
  SysError(int err, std::string command, const std::string& detail);
  int err() const { return err_; }
  const std::string& command() const { return command_; }
  // The errno's symbolic name ("EBUSY"), or "EUNKNOWN".
  std::string code() const;

 private:
  int err_;
  std::string command_;
};

// Any thread. Throws SysError(errno_value, command, detail).
[[noreturn]] void ThrowSys(int errno_value, const std::string& command, const std::string& detail = "");
