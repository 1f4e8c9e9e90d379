#include "control.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "sys_error.h"

namespace {
constexpr const char* kControlPath = "/dev/ublk-control";
}

// Any thread.
bool ControlAvailable(int* err) {
  int fd = open(kControlPath, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return false;
  }
  close(fd);
  *err = 0;
  return true;
}

// Any thread.
Control::Control() {
  fd_ = open(kControlPath, O_RDWR | O_CLOEXEC);
  if (fd_ < 0) ThrowSys(errno, "open", kControlPath);
  int rc = io_uring_queue_init(4, &ring_, IORING_SETUP_SQE128);
  if (rc < 0) {
    close(fd_);
    ThrowSys(-rc, "io_uring_queue_init", "(control ring)");
  }
  ring_ready_ = true;

  // GET_FEATURES exists only in the ioctl-encoded form (6.5+); older kernels reject it.
  uint64_t feats = 0;
  ublk::CtrlCmd cmd{};
  cmd.dev_id = ~0u;
  cmd.queue_id = 0xffff;
  cmd.addr = reinterpret_cast<uint64_t>(&feats);
  cmd.len = sizeof(feats);
  encoded_ = true;
  try {
    std::lock_guard<std::mutex> lock(mu_);
    Run(ublk::kCmdGetFeatures, false, "GET_FEATURES", cmd);
    features_ = feats;
    features_known_ = true;
  } catch (const SysError&) {
    features_ = 0;
    features_known_ = false;
  }
  // Kernels that cannot tell us their features predate CMD_IOCTL_ENCODE (6.4) or refuse it: use legacy numbers.
  encoded_ = features_known_ && (features_ & ublk::kFCmdIoctlEncode) != 0;
}

// Any thread (the owner's).
Control::~Control() {
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (fd_ >= 0) close(fd_);
}

// Any thread, with mu_ held.
int Control::Run(uint32_t nr, bool write_dir, const char* name, const ublk::CtrlCmd& cmd) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) ThrowSys(EBUSY, name, "(control ring full)");
  std::memset(sqe, 0, 128);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd_;
  sqe->cmd_op = encoded_ ? ublk::EncodeCtrl(nr, write_dir) : nr;
  std::memcpy(sqe->cmd, &cmd, sizeof(cmd));
  int rc = io_uring_submit(&ring_);
  if (rc < 0) ThrowSys(-rc, name, "(submit)");
  io_uring_cqe* cqe = nullptr;
  do {
    rc = io_uring_wait_cqe(&ring_, &cqe);
  } while (rc == -EINTR);
  if (rc < 0) ThrowSys(-rc, name, "(wait)");
  int res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  if (res < 0) ThrowSys(-res, name);
  return res;
}

// Any thread.
uint32_t Control::AddDev(ublk::DevInfo& info) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = info.dev_id;
  cmd.queue_id = 0xffff;
  cmd.addr = reinterpret_cast<uint64_t>(&info);
  cmd.len = sizeof(info);
  Run(ublk::kCmdAddDev, true, "ADD_DEV", cmd);
  return info.dev_id;
}

// Any thread.
void Control::SetParams(uint32_t dev_id, ublk::Params& params) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  cmd.addr = reinterpret_cast<uint64_t>(&params);
  cmd.len = static_cast<uint16_t>(params.len);
  Run(ublk::kCmdSetParams, true, "SET_PARAMS", cmd);
}

// Any thread.
void Control::GetParams(uint32_t dev_id, ublk::Params& params) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  cmd.addr = reinterpret_cast<uint64_t>(&params);
  cmd.len = static_cast<uint16_t>(params.len);
  Run(ublk::kCmdGetParams, false, "GET_PARAMS", cmd);
}

// Any thread.
void Control::StartDev(uint32_t dev_id, pid_t server_pid) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  cmd.data[0] = static_cast<uint64_t>(server_pid);
  Run(ublk::kCmdStartDev, true, "START_DEV", cmd);
}

// Any thread.
void Control::StopDev(uint32_t dev_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  Run(ublk::kCmdStopDev, true, "STOP_DEV", cmd);
}

// Any thread.
void Control::DelDev(uint32_t dev_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  Run(ublk::kCmdDelDev, true, "DEL_DEV", cmd);
}

// Any thread.
ublk::DevInfo Control::GetDevInfo(uint32_t dev_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::DevInfo info{};
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  cmd.addr = reinterpret_cast<uint64_t>(&info);
  cmd.len = sizeof(info);
  Run(ublk::kCmdGetDevInfo, false, "GET_DEV_INFO", cmd);
  return info;
}

// Any thread.
void Control::StartUserRecovery(uint32_t dev_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  Run(ublk::kCmdStartUserRecovery, true, "START_USER_RECOVERY", cmd);
}

// Any thread.
void Control::EndUserRecovery(uint32_t dev_id, pid_t server_pid) {
  std::lock_guard<std::mutex> lock(mu_);
  ublk::CtrlCmd cmd{};
  cmd.dev_id = dev_id;
  cmd.queue_id = 0xffff;
  cmd.data[0] = static_cast<uint64_t>(server_pid);
  Run(ublk::kCmdEndUserRecovery, true, "END_USER_RECOVERY", cmd);
}
