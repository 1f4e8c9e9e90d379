// Device: one exported /dev/ublkbN, its backing devices, its control commands and its queues.
// Start and Stop block (they wait on the kernel), so the addon runs them on worker threads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "backing.h"
#include "control.h"
#include "queue.h"
#include "remap_index.h"
#include "scan_reader.h"

class EventSink;

// Most ublk queues a Device serves (the queue depth's limit is the ABI's ublk::kMaxQueueDepth). The addon
// exports both as `limits`; src/device/config.ts's MAX_QUEUES / MAX_DEPTH must match (a unit test checks).
constexpr uint32_t kMaxQueues = 16;
// How long Recover retries START_USER_RECOVERY while the kernel answers EBUSY.
constexpr int kRecoverBusyMs = 5000;
// How long Stop/Detach wait for a scan read's piece in flight (a piece that takes longer is stuck in the
// kernel's error handling, and its dups stay open until the pread returns).
constexpr int kScanStopWaitMs = 30000;

struct DeviceConfig {
  std::string main_path;
  std::string spare_path;
  // Claims of main and spare (ClaimBacking) the device uses through dups of its own; the caller keeps
  // and releases the originals. -1: the device opens the paths itself (OpenBacking).
  int main_fd = -1;
  int spare_fd = -1;
  uint32_t queues = 1;
  uint32_t depth = 128;
  uint32_t block_size = 512;
  uint64_t size_bytes = 0;
  uint32_t max_io_bytes = 512 * 1024;
  bool discard = false;
  int32_t dev_id = -1;
  bool zero_copy = false;  // requires UBLK_F_AUTO_BUF_REG (6.16+)
  uint64_t spare_data_offset = 0;  // byte offset of spare slot 0
  bool park_faults = false;        // initial fault parking (see Device::SetFaultParking)
  uint64_t slow_io_us = 0;         // initial slow_io threshold (see Device::SetSlowIoUs); 0: off
};

struct DeviceState {
  int32_t dev_id = -1;
  uint64_t flags = 0;
  bool live = false;
  bool stopped = false;
  bool fixed_buffers = false;
  bool zero_copy = false;
};

class Device {
 public:
  // JS thread.
  Device(DeviceConfig cfg, EventSink* events);
  // JS thread (finalizer or env cleanup). Stops the device if it is still running.
  ~Device();

  // Worker thread. ADD_DEV, SET_PARAMS, queues, START_DEV. On failure throws SysError and leaves no
  // kernel device, thread or open file behind.
  void Start();
  // Worker thread, or the JS thread at env cleanup. STOP_DEV, join the queues, close /dev/ublkcN,
  // DEL_DEV. Idempotent; errors are collected and the first is thrown after everything was tried.
  void Stop();

  // Worker thread. User recovery of the existing device cfg.dev_id, whose server died (or detached): checks
  // that it was created with UBLK_F_USER_RECOVERY and with this configuration's queues, depth, max I/O,
  // block size, size and buffer mode (EOPNOTSUPP / EINVAL otherwise), START_USER_RECOVERY (retried on
  // EBUSY for kRecoverBusyMs), queues, END_USER_RECOVERY. No SET_PARAMS. On failure throws SysError and
  // leaves the kernel device as it was (never deleted), no thread or open file behind.
  void Recover();
  // Worker thread. Leaves the device to a successor: the queues finish their backing I/O in flight, leave
  // every other request uncommitted (reissued by the kernel to the next server), and exit; /dev/ublkcN is
  // closed. No STOP_DEV, no DEL_DEV: the kernel quiesces the device. Threads joined, fds closed.
  void Detach();

  // Any thread.
  DeviceState state() const;
  const DeviceConfig& config() const { return cfg_; }
  // Any one thread at a time (the JS thread). Replaces the remap index the queues consult; may be
  // called before Start (the table must be in place before the device goes live) and while serving.
  void PublishRemap(std::vector<RemapEntry> entries);
  // Any one thread at a time (the JS thread). Changes a few entries of the remap index (RemapIndex::Update).
  void UpdateRemap(const std::vector<RemapEntry>& delta);

  // Worker thread. Returns once every request dispatched before the call has completed (requests
  // parked on a moving block or held faulted excepted). Never waits for a scan read (ScanRead): its result
  // names the table generation it was planned against instead. Throws SysError(ETIMEDOUT) after
  // `timeout_ms`. Holds queues_mu_ (shared) while it waits.
  void Drain(int timeout_ms);
  // Pool thread. The scanner's read of [offset, offset + len) (ScanReader::Read) through dups of the backing
  // fds it closes before returning: counted in no queue counter, never parked. Throws SysError: EINVAL for
  // a range that is not whole blocks inside the device, EBUSY at once when a scan read is running on this
  // device, ENODEV when the device is not running (not started, stopping or detaching: Stop and Detach
  // stop a running scan read before its next piece and wait for it).
  void ScanRead(uint64_t offset, uint32_t len, bool narrow, ScanResult* out);
  // Any thread (the JS thread, the writer: then exact). The remap table's generation (RemapIndex::Generation).
  uint64_t RemapGeneration() const { return index_->Generation(); }

  // Worker thread. A dup of main's or the spare's O_DIRECT fd (the caller closes it), so a copy never
  // races a stop closing the original. Throws SysError(ENODEV) when the device is not running.
  int DupBackingFd(bool spare);

  // Any thread (the JS thread). Failed reads/writes seen after the call are held faulted and reported
  // as io_fault (on) or completed with their errno and reported as io_error (off).
  void SetFaultParking(bool on) { park_faults_.store(on, std::memory_order_relaxed); }
  // Any thread (the JS thread). Successful user reads completing after the call slower than `us` are
  // reported as slow_io events (rate-limited per queue); 0 turns the report off.
  void SetSlowIoUs(uint64_t us) { slow_io_us_.store(us, std::memory_order_relaxed); }
  // Any thread (the JS thread). Hands a resolution to queue `queue`'s thread; ignored when the device
  // is not running (queue out of range or already released).
  void ResolveFault(uint32_t queue, const FaultResolution& r);

  // Any thread. One entry per queue; valid for the device's lifetime.
  const std::vector<std::unique_ptr<QueueCounters>>& counters() const { return counters_; }

 private:
  // Lifecycle thread with mu_ held: releases everything Start acquired, in reverse order, after stopping
  // a scan read (ScanReader::Cancel, waiting up to kScanStopWaitMs). detach: without STOP_DEV/DEL_DEV, and
  // without failing held requests (Queue::RequestDetach).
  void Release(std::vector<std::string>* errors, bool detach);
  // Lifecycle thread with mu_ held.
  BackingInfo OpenBackingFds();
  void PrepareQueues(uint32_t id, const BackingInfo& main_info);
  void StartQueues(uint32_t id);
  void MarkLive();
  void CheckRecoverable(uint32_t id, const ublk::DevInfo& info);

  DeviceConfig cfg_;
  EventSink* events_;
  std::mutex mu_;                // serializes Start and Stop
  // Guards main_fd_/spare_fd_ and fds_open_ for DupBackingFd. Not mu_: Start holds mu_ through START_DEV,
  // which waits for the kernel's partition scan, whose failed read may need a worker's read to resolve.
  std::mutex fds_mu_;
  bool fds_open_ = false;  // the queues run: workers may dup the backing fds
  mutable std::mutex state_mu_;  // guards state_ (short critical sections only)
  std::vector<std::unique_ptr<QueueCounters>> counters_;
  std::unique_ptr<Control> ctrl_;
  std::unique_ptr<RemapIndex> index_;  // reader slots: one per queue, then the scanner's
  std::unique_ptr<ScanReader> scan_;
  std::vector<std::unique_ptr<Queue>> queues_;
  // Guards queues_ against Release while PublishRemap, ResolveFault or Drain look at it (Start appends
  // under both).
  std::shared_mutex queues_mu_;
  std::atomic<bool> park_faults_{false};  // read by the queue threads through QueueConfig::park_faults
  std::atomic<uint64_t> slow_io_us_{0};   // read by the queue threads through QueueConfig::slow_io_us
  int main_fd_ = -1;
  int spare_fd_ = -1;
  int cdev_fd_ = -1;
  uint32_t dev_id_ = 0;
  bool added_ = false;
  bool started_ = false;
  DeviceState state_;
};
