// Control: the ublk control device (/dev/ublk-control) and the io_uring (128-byte SQEs) that carries its
// commands. Every command is synchronous: submit one URING_CMD, wait for its completion.
#pragma once

#include <liburing.h>
#include <sys/types.h>

#include <cstdint>
#include <mutex>

#include "ublk_abi.h"

class Control {
 public:
  // Any thread. Opens /dev/ublk-control, sets up the ring and probes GET_FEATURES. Throws SysError.
  Control();
  // Any thread (the owner's).
  ~Control();
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  uint64_t features() const { return features_; }
  bool features_known() const { return features_known_; }
  bool encoded() const { return encoded_; }

  // Any thread; serialized by an internal mutex. Each throws SysError(errno, "<COMMAND>") on failure.
  // AddDev fills info (dev_id, flags, ...) with what the kernel chose and returns the device id.
  uint32_t AddDev(ublk::DevInfo& info);
  void SetParams(uint32_t dev_id, ublk::Params& params);
  void GetParams(uint32_t dev_id, ublk::Params& params);
  // Blocks until every queue has fetched its tags and the disk is added.
  void StartDev(uint32_t dev_id, pid_t server_pid);
  // Blocks until the disk is deleted; the queues must keep serving until it returns.
  void StopDev(uint32_t dev_id);
  // Blocks until /dev/ublkcN is released by everyone.
  void DelDev(uint32_t dev_id);
  ublk::DevInfo GetDevInfo(uint32_t dev_id);
  // User recovery of a device whose server died (UBLK_F_USER_RECOVERY). START fails with EBUSY while the
  // device is not quiesced yet or the dead server's /dev/ublkcN is not released yet. END blocks until every
  // queue of the new server has fetched its tags, then makes the device live with `server_pid`.
  void StartUserRecovery(uint32_t dev_id);
  void EndUserRecovery(uint32_t dev_id, pid_t server_pid);

 private:
  // Any thread, with mu_ held. Returns the completion's result (>= 0) or throws SysError.
  int Run(uint32_t nr, bool write_dir, const char* name, const ublk::CtrlCmd& cmd);

  std::mutex mu_;
  int fd_ = -1;
  io_uring ring_{};
  bool ring_ready_ = false;
  uint64_t features_ = 0;
  bool features_known_ = false;
  bool encoded_ = false;
};

// Any thread. Whether /dev/ublk-control can be opened; errno of the failure in *err otherwise.
bool ControlAvailable(int* err);
