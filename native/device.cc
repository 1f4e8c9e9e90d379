#include "device.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "backing.h"
#include "claim.h"
#include "events.h"
#include "sys_error.h"

namespace {
uint8_t Log2(uint32_t v) {
  uint8_t s = 0;
  while ((1u << s) < v) s++;
  return s;
}

// The largest discard one request may carry: bounded so that its length fits the request's 32 bits.
constexpr uint64_t kMaxDiscardBytes = 1ull << 30;

// Worker thread. Advertises what the data path can serve. Write-zeroes always (fallocate ZERO_RANGE on
// the device the block lives on, else writes of zeros from a buffer of max_io_bytes, which bounds one
// request). Discard only where main takes one (a block device with discard_max_bytes, or a regular
// file: punch hole), with main's granularity and at most main's limit.
void SetDiscardParams(const BackingInfo& main, const DeviceConfig& cfg, ublk::Params* params) {
  params->types |= ublk::kParamTypeDiscard;
  ublk::ParamDiscard& d = params->discard;
  d.max_write_zeroes_sectors = cfg.max_io_bytes >> 9;
  d.discard_granularity = std::max<uint32_t>(cfg.block_size, main.discard_granularity);
  if (!cfg.discard || !main.discard) return;
  uint64_t max = main.is_block_device ? std::min(main.discard_max_bytes, kMaxDiscardBytes) : kMaxDiscardBytes;
  max -= max % d.discard_granularity;
  if (max == 0) return;
  d.max_discard_sectors = static_cast<uint32_t>(max >> 9);
  d.max_discard_segments = 1;
}
}  // namespace

// JS thread.
Device::Device(DeviceConfig cfg, EventSink* events)
    : cfg_(std::move(cfg)), events_(events), index_(std::make_unique<RemapIndex>(cfg_.queues + 1)) {
  PlanGeometry geo;
  geo.block_shift = Log2(cfg_.block_size);
  geo.spare_data_offset = cfg_.spare_data_offset;
  // Scan pieces of up to one chunk (kScanAlignBytes), whatever max-io is: the scanner's reads never pass
  // through a queue, and one pread per chunk is what holds an idle scan near the disk's sequential rate.
  scan_ = std::make_unique<ScanReader>(index_.get(), cfg_.queues, geo, kScanAlignBytes);
  park_faults_.store(cfg_.park_faults, std::memory_order_relaxed);
  slow_io_us_.store(cfg_.slow_io_us, std::memory_order_relaxed);
  for (uint32_t q = 0; q < cfg_.queues; q++) counters_.push_back(std::make_unique<QueueCounters>());
}

// JS thread.
Device::~Device() {
  try {
    Stop();
  } catch (const SysError&) {
    // Nothing can be reported from a destructor; Stop has already released what it could.
  }
}

// Worker thread.
void Device::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (added_ || state().stopped) ThrowSys(EALREADY, "start", "(device already started)");
  try {
    BackingInfo main_info = OpenBackingFds();
    ctrl_ = std::make_unique<Control>();

    ublk::DevInfo info{};
    info.nr_hw_queues = static_cast<uint16_t>(cfg_.queues);
    info.queue_depth = static_cast<uint16_t>(cfg_.depth);
    info.max_io_buf_bytes = cfg_.max_io_bytes;
    info.dev_id = cfg_.dev_id < 0 ? ~0u : static_cast<uint32_t>(cfg_.dev_id);
    info.ublksrv_pid = getpid();
    info.flags = ctrl_->encoded() ? ublk::kFCmdIoctlEncode : 0;
    // User recovery: when this process dies the kernel quiesces the device (requests wait) instead of
    // failing them, and requests the dead server held are reissued to its successor (Recover). Only both
    // together: without REISSUE the requests a dead server held would fail. Never FAIL_IO.
    constexpr uint64_t kRecovery = ublk::kFUserRecovery | ublk::kFUserRecoveryReissue;
    if ((ctrl_->features() & kRecovery) == kRecovery) info.flags |= kRecovery;
    if (cfg_.zero_copy) {
      if (!(ctrl_->features() & ublk::kFAutoBufReg)) ThrowSys(EOPNOTSUPP, "ADD_DEV", "(zero copy needs UBLK_F_AUTO_BUF_REG)");
      info.flags |= ublk::kFAutoBufReg;
    }
    uint32_t id = ctrl_->AddDev(info);
    added_ = true;
    dev_id_ = id;
    {
      std::lock_guard<std::mutex> s(state_mu_);
      state_.dev_id = static_cast<int32_t>(id);
      state_.flags = info.flags;
    }

    ublk::Params params{};
    params.len = offsetof(ublk::Params, devt);
    params.types = ublk::kParamTypeBasic;
    ublk::ParamBasic& b = params.basic;
    // The backing write path is O_DIRECT to a device that may have a volatile cache: ask for flushes
    // and FUA so that what the kernel calls durable is durable.
    b.attrs = ublk::kAttrVolatileCache | ublk::kAttrFua | (main_info.rotational ? ublk::kAttrRotational : 0);
    b.logical_bs_shift = Log2(cfg_.block_size);
    b.physical_bs_shift = std::max(b.logical_bs_shift, Log2(main_info.physical_block_size));
    b.io_min_shift = b.logical_bs_shift;
    b.io_opt_shift = b.physical_bs_shift;
    b.max_sectors = cfg_.max_io_bytes >> 9;
    b.dev_sectors = cfg_.size_bytes >> 9;
    SetDiscardParams(main_info, cfg_, &params);
    ctrl_->SetParams(id, params);

    PrepareQueues(id, main_info);
    StartQueues(id);
    ctrl_->StartDev(id, getpid());
    started_ = true;
    MarkLive();
  } catch (const SysError&) {
    std::vector<std::string> ignored;
    Release(&ignored, false);
    throw;
  }
}

// Worker thread.
void Device::Recover() {
  std::lock_guard<std::mutex> lock(mu_);
  if (added_ || state().stopped) ThrowSys(EALREADY, "recover", "(device already started)");
  if (cfg_.dev_id < 0) ThrowSys(EINVAL, "recover", "(no device id)");
  const uint32_t id = static_cast<uint32_t>(cfg_.dev_id);
  try {
    BackingInfo main_info = OpenBackingFds();
    ctrl_ = std::make_unique<Control>();
    ublk::DevInfo info = ctrl_->GetDevInfo(id);
    CheckRecoverable(id, info);
    // Every step that can fail and needs no /dev/ublkcN comes before START_USER_RECOVERY: on 6.12 a
    // recovery cut short after it (no queue fetched) leaves a device whose next START_USER_RECOVERY fails
    // with EINVAL. /dev/ublkcN itself can only be opened after it (the kernel answers EBUSY while it is
    // open) and its descriptors mapped only after it (START resets the mm that may map them).
    PrepareQueues(id, main_info);
    // START_USER_RECOVERY answers EBUSY until the kernel has quiesced the device and the dead server's
    // /dev/ublkcN (its fd, mmaps and rings) is released: retry for a while.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRecoverBusyMs);
    for (;;) {
      try {
        ctrl_->StartUserRecovery(id);
        break;
      } catch (const SysError& e) {
        if (e.err() != EBUSY || std::chrono::steady_clock::now() >= deadline) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    dev_id_ = id;
    {
      std::lock_guard<std::mutex> s(state_mu_);
      state_.dev_id = static_cast<int32_t>(id);
      state_.flags = info.flags;
    }
    StartQueues(id);
    ctrl_->EndUserRecovery(id, getpid());
    // Served by this process from here on: a stop deletes it (STOP_DEV, DEL_DEV) like an added one.
    added_ = true;
    started_ = true;
    MarkLive();
  } catch (const SysError&) {
    // The kernel device stays as it was (quiesced, or recovering: a later START_USER_RECOVERY starts over).
    std::vector<std::string> ignored;
    Release(&ignored, true);
    throw;
  }
}

// Lifecycle thread, mu_ held. Refuses a device this configuration cannot serve: one created without user
// recovery, or with other queues, depth, I/O size, block size, size or buffer mode.
void Device::CheckRecoverable(uint32_t id, const ublk::DevInfo& info) {
  const std::string what = "(device " + std::to_string(id) + " ";
  if (!(info.flags & ublk::kFUserRecovery)) ThrowSys(EOPNOTSUPP, "recover", what + "was created without UBLK_F_USER_RECOVERY)");
  auto mismatch = [&](const char* field, uint64_t have, uint64_t want) {
    if (have != want)
      ThrowSys(EINVAL, "recover", what + "has " + field + " " + std::to_string(have) + ", this daemon wants " + std::to_string(want) + ")");
  };
  mismatch("queues", info.nr_hw_queues, cfg_.queues);
  mismatch("depth", info.queue_depth, cfg_.depth);
  mismatch("max io bytes", info.max_io_buf_bytes, cfg_.max_io_bytes);
  mismatch("zero copy", (info.flags & ublk::kFAutoBufReg) ? 1 : 0, cfg_.zero_copy ? 1 : 0);
  ublk::Params params{};
  params.len = sizeof(params);
  ctrl_->GetParams(id, params);
  mismatch("block size", 1ull << params.basic.logical_bs_shift, cfg_.block_size);
  mismatch("size bytes", params.basic.dev_sectors << 9, cfg_.size_bytes);
}

// Worker thread.
void Device::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> errors;
  Release(&errors, true);
  if (!errors.empty()) ThrowSys(EIO, "detach", errors.front());
}

// Worker thread, or JS thread at env cleanup.
void Device::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> errors;
  Release(&errors, false);
  if (!errors.empty()) ThrowSys(EIO, "stop", errors.front());
}

// Lifecycle thread, mu_ held.
void Device::Release(std::vector<std::string>* errors, bool detach) {
  // A scan read stops before its next piece; the one in flight is waited for (bounded: a read blocked in
  // the kernel on a failing disk keeps its dups until it returns, and nothing here can end it sooner), so
  // that the scan's dups of main and spare are closed, and their claims free, when this returns.
  scan_->Cancel(std::chrono::steady_clock::now() + std::chrono::milliseconds(kScanStopWaitMs));
  std::shared_lock<std::shared_mutex> ql(queues_mu_);
  if (detach) {
    // The kernel device is left to a successor: no STOP_DEV, no DEL_DEV. The queues finish their backing
    // I/O and leave every other request uncommitted; closing the rings and /dev/ublkcN quiesces the device.
    started_ = false;
    added_ = false;
    for (auto& q : queues_) q->RequestDetach();
  } else {
    // A request parked on a moving block, or held faulted for TypeScript, would hold STOP_DEV forever: the
    // queues complete those (EIO, or a faulted request's errno) and hold no new ones from here on.
    for (auto& q : queues_) q->NotifyTableChanged(true);
  }
  ql.unlock();
  if (started_) {
    // The queues keep serving while STOP_DEV removes the disk (it may flush dirty pages through them).
    try {
      ctrl_->StopDev(dev_id_);
    } catch (const SysError& e) {
      errors->push_back(e.what());
    }
    started_ = false;
  }
  std::vector<std::unique_ptr<Queue>> queues;
  {
    std::unique_lock<std::shared_mutex> ql(queues_mu_);
    queues.swap(queues_);
  }
  for (auto& q : queues) q->RequestStop();
  for (auto& q : queues) q->Join();
  queues.clear();
  // /dev/ublkcN must be closed (and its mappings gone) before DEL_DEV, which waits for its release.
  if (cdev_fd_ >= 0) close(cdev_fd_);
  cdev_fd_ = -1;
  if (added_) {
    try {
      ctrl_->DelDev(dev_id_);
    } catch (const SysError& e) {
      errors->push_back(e.what());
    }
    added_ = false;
  }
  {
    std::lock_guard<std::mutex> f(fds_mu_);
    fds_open_ = false;
    if (main_fd_ >= 0) close(main_fd_);
    if (spare_fd_ >= 0) close(spare_fd_);
    main_fd_ = spare_fd_ = -1;
  }
  ctrl_.reset();
  std::lock_guard<std::mutex> s(state_mu_);
  if (state_.live) state_.stopped = true;
  state_.live = false;
}

// JS thread.
void Device::PublishRemap(std::vector<RemapEntry> entries) {
  index_->Publish(std::move(entries));
  std::shared_lock<std::shared_mutex> ql(queues_mu_);
  for (auto& q : queues_) q->NotifyTableChanged();
}

// JS thread.
void Device::UpdateRemap(const std::vector<RemapEntry>& delta) {
  index_->Update(delta);
  std::shared_lock<std::shared_mutex> ql(queues_mu_);
  for (auto& q : queues_) q->NotifyTableChanged();
}

// Any thread (the JS thread).
void Device::ResolveFault(uint32_t queue, const FaultResolution& r) {
  std::shared_lock<std::shared_mutex> ql(queues_mu_);
  if (queue < queues_.size()) queues_[queue]->ResolveFault(r);
}

// Worker thread.
void Device::Drain(int timeout_ms) {
  std::shared_lock<std::shared_mutex> ql(queues_mu_);
  std::vector<uint64_t> target;
  for (auto& q : queues_) {
    q->WantDrain(true);
    target.push_back(q->dispatch_seq());
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool done = false;
  for (int round = 0; !done && std::chrono::steady_clock::now() < deadline; round++) {
    // Wake idle queues now and then so that they look (a busy queue looks on every completion).
    if (round % 20 == 0)
      for (auto& q : queues_) q->NotifyTableChanged();
    std::this_thread::sleep_for(std::chrono::microseconds(500));
    done = true;
    for (size_t i = 0; i < queues_.size(); i++) done = done && queues_[i]->settled_seq() >= target[i];
  }
  for (auto& q : queues_) q->WantDrain(false);
  ql.unlock();
  // Not the scanner's piece in flight: a scan read writes nothing, and a result planned against an older
  // table names that generation (TypeScript reads it again or does not count it), so waiting for a piece
  // that may sit in a failing disk's error recovery would buy nothing but a failed remap.
  if (!done) ThrowSys(ETIMEDOUT, "drain", "(requests still in flight)");
}

// Pool thread.
void Device::ScanRead(uint64_t offset, uint32_t len, bool narrow, ScanResult* out) {
  const uint64_t bs = cfg_.block_size;
  if (len == 0 || offset % bs != 0 || len % bs != 0 || offset > cfg_.size_bytes || len > cfg_.size_bytes - offset)
    ThrowSys(EINVAL, "scan read", "(offset " + std::to_string(offset) + " and " + std::to_string(len) +
                                      " bytes must be whole blocks of " + std::to_string(bs) + " inside the device)");
  // The dups are made once the read is admitted (not refused as busy) and closed by the reader before
  // it returns (Release waits for that).
  scan_->Read(
      offset, len, narrow,
      [this] {
        ScanFds fds;
        fds.main = DupBackingFd(false);
        try {
          fds.spare = DupBackingFd(true);
        } catch (...) {
          close(fds.main);
          throw;
        }
        return fds;
      },
      out);
}

// Worker thread.
int Device::DupBackingFd(bool spare) {
  // Not mu_: a fault raised while Start waits in START_DEV (the partition scan) or END_USER_RECOVERY is
  // resolved with reads that come here.
  std::lock_guard<std::mutex> lock(fds_mu_);
  int fd = fds_open_ ? (spare ? spare_fd_ : main_fd_) : -1;  // written before fds_open_ was set, under this lock
  if (fd < 0) ThrowSys(ENODEV, spare ? "spare" : "main", "(device not running)");
  int d = dup(fd);
  if (d < 0) ThrowSys(errno, "dup");
  return d;
}

// Any thread.
DeviceState Device::state() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  return state_;
}

// Lifecycle thread, mu_ held. The queues serve the kernel device: what the state reports of it.
void Device::MarkLive() {
  std::lock_guard<std::mutex> s(state_mu_);
  state_.fixed_buffers = queues_.front()->fixed_buffers();
  state_.zero_copy = cfg_.zero_copy;
  state_.live = true;
}

// Lifecycle thread, mu_ held. Dups the claims of main and spare (or opens the paths) and probes main.
BackingInfo Device::OpenBackingFds() {
  BackingInfo main_info;
  if (cfg_.main_fd >= 0) {
    // A claim: the geometry comes from its dup; the path is not opened again.
    main_fd_ = DupClaim(cfg_.main_fd, "main");
    main_info = ProbeBackingFd(main_fd_, cfg_.main_path);
  } else {
    main_info = ProbeBacking(cfg_.main_path);
    main_fd_ = OpenBacking(cfg_.main_path);
  }
  spare_fd_ = cfg_.spare_fd >= 0 ? DupClaim(cfg_.spare_fd, "spare") : OpenBacking(cfg_.spare_path);
  return main_info;
}

// Lifecycle thread, mu_ held. Creates every queue and its thread, which sets up its io_uring and buffers
// (what needs no /dev/ublkcN) and waits for StartQueues.
void Device::PrepareQueues(uint32_t id, const BackingInfo& main_info) {
  for (uint32_t q = 0; q < cfg_.queues; q++) {
    QueueConfig qc;
    qc.dev_id = id;
    qc.q_id = static_cast<uint16_t>(q);
    qc.depth = cfg_.depth;
    qc.max_io_bytes = cfg_.max_io_bytes;
    qc.cdev_fd = -1;  // handed over by StartQueues
    qc.main_fd = main_fd_;
    qc.spare_fd = spare_fd_;
    qc.encoded = ctrl_->encoded();
    qc.zero_copy = cfg_.zero_copy;
    qc.block_shift = Log2(cfg_.block_size);
    qc.spare_data_offset = cfg_.spare_data_offset;
    qc.main_is_block = main_info.is_block_device;
    qc.main_zero_range = !main_info.is_block_device || main_info.write_zeroes_max_bytes > 0;
    qc.park_faults = &park_faults_;
    qc.slow_io_us = &slow_io_us_;
    auto queue = std::make_unique<Queue>(qc, index_.get(), q, events_, counters_[q].get());
    queue->Prepare();
    std::unique_lock<std::shared_mutex> ql(queues_mu_);
    queues_.push_back(std::move(queue));
  }
}

// Lifecycle thread, mu_ held, after PrepareQueues. Opens /dev/ublkcN and hands it to every queue thread
// (each has fetched its tags when this returns).
void Device::StartQueues(uint32_t id) {
  // Without udev the char device node appears a moment after ADD_DEV (devtmpfs): retry briefly.
  std::string cdev = "/dev/ublkc" + std::to_string(id);
  for (int i = 0; i < 300; i++) {
    cdev_fd_ = open(cdev.c_str(), O_RDWR | O_CLOEXEC);
    if (cdev_fd_ >= 0 || errno != ENOENT) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (cdev_fd_ < 0) ThrowSys(errno, "open", cdev);
  {
    std::shared_lock<std::shared_mutex> ql(queues_mu_);
    for (auto& q : queues_) q->Start(cdev_fd_);
  }
  // Requests can fault from here on (START_DEV's partition scan, reissued requests): let workers read.
  std::lock_guard<std::mutex> f(fds_mu_);
  fds_open_ = true;
  scan_->Reopen();
}
