#include "queue.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>

#include "events.h"
#include "remap_index.h"
#include "sys_error.h"

namespace {

// user_data: bits 0-15 tag, bits 16-23 kind, bits 24-39 segment index.
enum Kind : uint64_t {
  kKindCmd = 1,
  kKindMain = 2,
  kKindSpare = 3,
  kKindStop = 4,
  kKindTable = 5,
  kKindDiscardWorker = 6,  // the discard worker's eventfd
  kKindFuaSync = 7,        // a FUA write-zeroes' fdatasync; segment field: 1 for the spare
};
// Registered file slots.
constexpr int kFileCdev = 0;
constexpr int kFileMain = 1;
constexpr int kFileSpare = 2;
// Registered buffers are pinned: resident for the device's life whatever the load. Only the first
// kPinnedPerTag bytes of each tag's buffer are registered (the size of most random I/O); larger requests use
// plain reads and writes from the same buffer, whose pages the kernel maps per request and which stay
// unallocated until a request that large arrives. Pinned per queue: depth x 64 KiB (8 MiB at depth 128).
constexpr uint32_t kPinnedPerTag = 64u << 10;

inline uint64_t Ud(Kind kind, uint16_t tag, uint32_t seg = 0) {
  return (uint64_t(seg) << 24) | (uint64_t(kind) << 16) | tag;
}
inline uint32_t UdSeg(uint64_t ud) { return static_cast<uint32_t>((ud >> 24) & 0xffff); }
inline Kind UdKind(uint64_t ud) { return static_cast<Kind>((ud >> 16) & 0xff); }
inline uint16_t UdTag(uint64_t ud) { return static_cast<uint16_t>(ud & 0xffff); }

inline uint64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// io_uring block command (include/uapi/linux/blkdev.h, Linux 6.12): an asynchronous discard.
#ifndef BLOCK_URING_CMD_DISCARD
#define BLOCK_URING_CMD_DISCARD _IO(0x12, 0)
#endif

inline void Bump(std::atomic<uint64_t>& c, uint64_t by = 1) {
  c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

uint32_t RoundUpPow2(uint32_t v) {
  uint32_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

// Owner thread.
Queue::Queue(const QueueConfig& cfg, RemapIndex* index, uint32_t reader_slot, EventSink* events,
             QueueCounters* counters)
    : cfg_(cfg), index_(index), reader_slot_(reader_slot), events_(events), counters_(*counters) {
  zero_range_[0] = cfg_.main_zero_range;
}

// Owner thread.
Queue::~Queue() {
  if (thread_.joinable()) {
    RequestStop();
    thread_.join();
  }
  if (stop_fd_ >= 0) close(stop_fd_);
  if (table_fd_ >= 0) close(table_fd_);
}

// Owner thread.
void Queue::Prepare() {
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) ThrowSys(errno, "eventfd");
  table_fd_ = eventfd(0, EFD_CLOEXEC);
  if (table_fd_ < 0) ThrowSys(errno, "eventfd");
  thread_ = std::thread([this] { Run(); });
  std::unique_lock<std::mutex> lock(ready_mu_);
  ready_cv_.wait(lock, [this] { return ready_state_ != 0; });
  if (ready_state_ < 0) {
    lock.unlock();
    thread_.join();
    ThrowSys(ready_errno_, ready_error_, "(queue " + std::to_string(cfg_.q_id) + ")");
  }
}

// Owner thread.
void Queue::Start(int cdev_fd) {
  if (!thread_.joinable()) Prepare();
  std::unique_lock<std::mutex> lock(ready_mu_);
  cfg_.cdev_fd = cdev_fd;
  go_ = true;
  ready_cv_.notify_all();
  ready_cv_.wait(lock, [this] { return ready_state_ == 1 || ready_state_ < 0; });
  if (ready_state_ < 0) {
    lock.unlock();
    thread_.join();
    ThrowSys(ready_errno_, ready_error_, "(queue " + std::to_string(cfg_.q_id) + ")");
  }
}

// Any thread.
void Queue::RequestStop() {
  {
    // A prepared thread still waiting for Start exits.
    std::lock_guard<std::mutex> lock(ready_mu_);
    abort_ = true;
    ready_cv_.notify_all();
  }
  if (stop_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t n = write(stop_fd_, &one, sizeof(one));
  (void)n;  // an eventfd write only fails when the counter would overflow, which a second stop cannot do
}

// Any thread.
void Queue::RequestDetach() {
  detach_.store(true, std::memory_order_release);
  RequestStop();
}

// Any thread.
void Queue::NotifyTableChanged(bool fail_parked) {
  if (fail_parked) fail_parked_.store(true, std::memory_order_release);
  if (table_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t n = write(table_fd_, &one, sizeof(one));
  (void)n;  // cannot overflow: the queue thread reads the counter back to zero on every wakeup
}

// Any thread (the JS thread).
void Queue::ResolveFault(const FaultResolution& r) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(resolve_mu_);
    if (resolve_closed_) return;
    // Only the first resolution of a round wakes the queue thread: it takes the whole list after its
    // wakeup was consumed, so one that arrives behind it is either taken along or finds the list empty
    // and wakes it again. A burst of resolutions costs one eventfd write, not one each.
    wake = resolutions_.empty();
    resolutions_.push_back(r);
  }
  if (wake) NotifyTableChanged();
}

// Owner thread.
void Queue::Join() {
  if (thread_.joinable()) thread_.join();
}

// Queue thread.
void Queue::SetupLocal() {
  uint32_t entries = RoundUpPow2(cfg_.depth * 2 + 4);
  io_uring_params p{};
  // Only this thread submits; let completions run when it waits (6.1+), with fallbacks for older kernels.
  const uint32_t flag_sets[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN,
      IORING_SETUP_COOP_TASKRUN, 0};
  int rc = -EINVAL;
  for (uint32_t flags : flag_sets) {
    std::memset(&p, 0, sizeof(p));
    p.flags = flags;
    rc = io_uring_queue_init_params(entries, &ring_, &p);
    if (rc == 0) break;
  }
  if (rc < 0) ThrowSys(-rc, "io_uring_queue_init");
  ring_ready_ = true;

  if (cfg_.zero_copy) {
    rc = io_uring_register_buffers_sparse(&ring_, cfg_.depth);
    if (rc < 0) ThrowSys(-rc, "io_uring_register_buffers_sparse");
    fixed_buffers_.store(true, std::memory_order_relaxed);
  }
  size_t buf_bytes = cfg_.zero_copy ? 0 : size_t(cfg_.depth) * cfg_.max_io_bytes;
  void* mem = nullptr;
  if (buf_bytes > 0) {
    // Anonymous pages, allocated on first touch, and never transparent huge pages: with those, pinning a
    // tag's 64 KiB head (or one small request) would make its whole 2 MiB resident, and every tag's buffer
    // with it (the kernel accounts a pinned huge page whole).
    mem = mmap(nullptr, buf_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) ThrowSys(errno, "mmap", "(I/O buffers)");
    madvise(mem, buf_bytes, MADV_NOHUGEPAGE);  // advice: a kernel without THP refuses it, harmlessly
    buffers_len_ = buf_bytes;
  }
  void* zeros = nullptr;
  if (posix_memalign(&zeros, 4096, cfg_.max_io_bytes) != 0) {
    if (mem != nullptr) munmap(mem, buf_bytes);
    buffers_len_ = 0;
    ThrowSys(ENOMEM, "posix_memalign");
  }
  std::memset(zeros, 0, cfg_.max_io_bytes);
  zeros_ = static_cast<char*>(zeros);
  buffers_ = static_cast<char*>(mem);
  if (!cfg_.zero_copy) {
    pinned_len_ = std::min(cfg_.max_io_bytes, kPinnedPerTag);
    std::vector<iovec> iov(cfg_.depth);
    for (uint32_t t = 0; t < cfg_.depth; t++) iov[t] = {Buffer(static_cast<uint16_t>(t)), pinned_len_};
    // Registration pins the pages once instead of per I/O; where it is refused, plain reads/writes work.
    fixed_buffers_.store(io_uring_register_buffers(&ring_, iov.data(), cfg_.depth) == 0, std::memory_order_relaxed);
  }
}

// Queue thread.
void Queue::SetupDevice() {
  int files[3] = {cfg_.cdev_fd, cfg_.main_fd, cfg_.spare_fd};
  int rc = io_uring_register_files(&ring_, files, 3);
  if (rc < 0) ThrowSys(-rc, "io_uring_register_files");

  long page = sysconf(_SC_PAGESIZE);
  descs_len_ = (size_t(cfg_.depth) * sizeof(ublk::IoDesc) + page - 1) / page * page;
  void* m = mmap(nullptr, descs_len_, PROT_READ, MAP_SHARED | MAP_POPULATE, cfg_.cdev_fd,
                 static_cast<off_t>(ublk::DescMmapOffset(cfg_.q_id, page)));
  if (m == MAP_FAILED) ThrowSys(errno, "mmap", "(io descriptors)");
  descs_ = static_cast<const ublk::IoDesc*>(m);

  tags_.assign(cfg_.depth, Tag{});
  for (Tag& t : tags_) t.segs.reserve(4);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, stop_fd_, POLLIN);
  io_uring_sqe_set_data64(sqe, Ud(kKindStop, 0));
  sqe = GetSqe();
  io_uring_prep_read(sqe, table_fd_, &table_event_, sizeof(table_event_), 0);
  io_uring_sqe_set_data64(sqe, Ud(kKindTable, 0));
  for (uint32_t t = 0; t < cfg_.depth; t++) PrepIoCmd(static_cast<uint16_t>(t), ublk::kIoFetchReq, 0);
  rc = io_uring_submit(&ring_);
  if (rc < 0) ThrowSys(-rc, "io_uring_submit", "(FETCH_REQ)");
}

// Queue thread.
void Queue::Teardown() {
  if (ring_ready_) {
    // Closing the ring cancels fetch commands still held by the kernel.
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
  }
  // Idle here (the loop ends with no backing I/O in flight), unless the ring failed: then its ioctl ends first.
  discard_worker_.reset();
  if (descs_) munmap(const_cast<ublk::IoDesc*>(descs_), descs_len_);
  descs_ = nullptr;
  if (buffers_) munmap(buffers_, buffers_len_);
  buffers_ = nullptr;
  buffers_len_ = 0;
  free(zeros_);
  zeros_ = nullptr;
}

// Queue thread.
void Queue::Run() {
  // Named for top -H / ps -L (15 characters at most): "dmremap-q<N>".
  std::string name = "dmremap-q" + std::to_string(cfg_.q_id);
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
  auto fail = [this](const SysError& e) {
    Teardown();
    std::lock_guard<std::mutex> lock(ready_mu_);
    ready_state_ = -1;
    ready_errno_ = e.err();
    ready_error_ = e.command();
    ready_cv_.notify_all();
  };
  try {
    SetupLocal();
  } catch (const SysError& e) {
    fail(e);
    return;
  }
  {
    std::unique_lock<std::mutex> lock(ready_mu_);
    ready_state_ = 2;
    ready_cv_.notify_all();
    ready_cv_.wait(lock, [this] { return go_ || abort_; });
    if (!go_) {
      // Stopped before Start: nothing was fetched, nothing is owed to the kernel.
      ready_state_ = -1;
      lock.unlock();
      Teardown();
      return;
    }
  }
  try {
    SetupDevice();
  } catch (const SysError& e) {
    fail(e);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(ready_mu_);
    ready_state_ = 1;
    ready_cv_.notify_all();
  }
  Event started;
  started.type = Event::Type::kQueueStarted;
  started.queue = cfg_.q_id;
  started.tid = static_cast<int>(syscall(SYS_gettid));
  events_->Push(started);

  stop_reason_ = "aborted by the kernel";
  for (;;) {
    index_->Leave(reader_slot_);
    int rc = io_uring_submit_and_wait(&ring_, 1);
    index_->Enter(reader_slot_);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      stop_reason_ = std::string("io_uring_enter: ") + strerror(-rc);
      break;
    }
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      HandleCqe(cqe);
      seen++;
    }
    io_uring_cq_advance(&ring_, seen);
    if (drain_waiters_.load(std::memory_order_acquire) > 0) PublishSettled();
    // Held requests keep the thread alive (their commit is still owed to the kernel) unless stopping,
    // where FailHeld has already completed them.
    if (inflight_backing_ == 0 && parked_.empty() && faulted_count_ == 0 && (stop_requested_ || live_cmds_ == 0))
      break;
  }
  index_->Leave(reader_slot_);
  {
    std::lock_guard<std::mutex> lock(resolve_mu_);
    resolve_closed_ = true;
    resolutions_.clear();
  }
  // Commits prepared in the last round (requests failed at stop) still reach the kernel.
  if (ring_ready_) io_uring_submit(&ring_);
  Teardown();
  Event stopped;
  stopped.type = Event::Type::kQueueStopped;
  stopped.queue = cfg_.q_id;
  stopped.reason = stop_requested_ ? "stopped" : stop_reason_;
  events_->Push(stopped);
}

// Queue thread.
io_uring_sqe* Queue::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

// Queue thread.
void Queue::PrepIoCmd(uint16_t tag, uint32_t nr, int32_t result) {
  io_uring_sqe* sqe = GetSqe();
  std::memset(sqe, 0, sizeof(*sqe));
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = kFileCdev;
  sqe->flags = IOSQE_FIXED_FILE;
  sqe->cmd_op = cfg_.encoded ? ublk::EncodeIo(nr) : nr;
  ublk::IoCmd cmd{};
  cmd.q_id = cfg_.q_id;
  cmd.tag = tag;
  cmd.result = result;
  if (cfg_.zero_copy) {
    sqe->addr = tag;  // struct ublk_auto_buf_reg: index = tag, no flags
  } else {
    cmd.addr = reinterpret_cast<uint64_t>(Buffer(tag));
  }
  std::memcpy(sqe->cmd, &cmd, sizeof(cmd));
  io_uring_sqe_set_data64(sqe, Ud(kKindCmd, tag));
  if (!tags_[tag].cmd_live) {
    tags_[tag].cmd_live = true;
    live_cmds_++;
  }
}

// Queue thread.
void Queue::HandleCqe(const io_uring_cqe* cqe) {
  uint64_t ud = cqe->user_data;
  uint16_t tag = UdTag(ud);
  switch (UdKind(ud)) {
    case kKindStop:
      stop_requested_ = true;
      FailHeld();  // nobody resolves them any more
      return;
    case kKindTable: {
      if (!stop_requested_) {
        io_uring_sqe* sqe = GetSqe();
        io_uring_prep_read(sqe, table_fd_, &table_event_, sizeof(table_event_), 0);
        io_uring_sqe_set_data64(sqe, Ud(kKindTable, 0));
      }
      OnTableChanged();
      return;
    }
    case kKindCmd: {
      Tag& t = tags_[tag];
      t.cmd_live = false;
      live_cmds_--;
      if (cqe->res == ublk::kIoResOk && stop_requested_ && detach_.load(std::memory_order_acquire)) {
        // Detaching: not served here; the kernel reissues it to the next server.
        return;
      } else if (cqe->res == ublk::kIoResOk) {
        Dispatch(tag);
      } else if (cqe->res != -ENODEV) {
        // Not an abort: the kernel refused our command. The tag is out of service; say so.
        stop_reason_ = std::string("ublk io command: ") + strerror(-cqe->res);
        ReportError(tag, -cqe->res, false, 0, 0);
      }
      return;
    }
    case kKindMain:
    case kKindSpare:
      inflight_backing_--;
      OnBackingDone(tag, UdSeg(ud), cqe->res, UdKind(ud) == kKindSpare);
      return;
    case kKindFuaSync:
      inflight_backing_--;
      OnFuaSyncDone(tag, UdSeg(ud) != 0, cqe->res);
      return;
    case kKindDiscardWorker:
      OnDiscardWorkerDone();
      return;
  }
}

// Queue thread.
void Queue::Dispatch(uint16_t tag) {
  const ublk::IoDesc& d = descs_[tag];
  Tag& t = tags_[tag];
  t.op_flags = __atomic_load_n(&d.op_flags, __ATOMIC_ACQUIRE);
  t.op = static_cast<uint8_t>(t.op_flags & 0xff);
  t.offset = d.start_sector << 9;
  t.len = d.nr_sectors << 9;
  t.pending = 0;
  t.result = 0;
  t.start_ns = NowNs();
  t.seq = dispatch_seq_.load(std::memory_order_relaxed);
  dispatch_seq_.store(t.seq + 1, std::memory_order_release);
  t.active = true;
  t.parked = false;
  t.waited = false;
  t.faulted = false;
  t.fault_kind = FaultKind::kNone;
  t.fault_err = 0;
  t.attempt = 0;
  t.error_faults = 0;
  t.narrow = false;
  t.io_failed = false;
  t.lost_segs = false;
  Bump(counters_.inflight);
  switch (t.op) {
    case ublk::kOpRead: Bump(counters_.reads); break;
    case ublk::kOpWrite: Bump(counters_.writes); break;
    case ublk::kOpFlush: Bump(counters_.flushes); break;
    case ublk::kOpDiscard:
    case ublk::kOpWriteZeroes: Bump(counters_.discards); break;
    default: break;
  }
  Route(tag);
}

// Queue thread, between the index's Enter and Leave.
void Queue::Route(uint16_t tag) {
  Tag& t = tags_[tag];
  t.fua_synced = false;
  switch (t.op) {
    case ublk::kOpRead:
    case ublk::kOpWrite:
    case ublk::kOpDiscard:
    case ublk::kOpWriteZeroes: {
      // Reads, writes and write-zeroes are bounded by max_io_bytes (write-zeroes by the limit advertised
      // for them, the size of the zero buffer); discards by their own limit.
      if (t.op != ublk::kOpDiscard && t.len > cfg_.max_io_bytes) {
        t.result = -EIO;
        break;
      }
      int plan = Plan(t);
      if (plan == kPlanPark && Stopping() && detach_.load(std::memory_order_acquire)) {
        Drop(tag);  // the next server serves it once the move is over
        return;
      }
      if (plan == kPlanPark && Stopping()) {
        t.result = -EIO;  // the device is stopping: nothing will end the move any more
        break;
      }
      if (plan == kPlanPark) {
        t.parked = true;
        t.waited = true;
        parked_.push_back(tag);
        return;
      }
      if (plan < 0) {
        t.result = plan;
        break;
      }
      for (uint32_t i = 0; i < t.segs.size(); i++) SubmitSegment(tag, i);
      break;
    }
    case ublk::kOpFlush:
      SubmitSync(tag, false);
      SubmitSync(tag, true);
      break;
    default:
      t.result = -EOPNOTSUPP;
      break;
  }
  if (t.pending == 0) Finish(tag);
}

// Queue thread: the table changed, a resolution arrived, or the device stops. Resolutions first (a
// retried request routes against the current table), then parked requests are re-routed.
void Queue::OnTableChanged() {
  ApplyResolutions();
  if (Stopping()) {
    FailHeld();
    return;
  }
  if (parked_.empty()) return;
  std::vector<uint16_t> waiting;
  waiting.swap(parked_);
  for (uint16_t tag : waiting) {
    tags_[tag].parked = false;
    Route(tag);
  }
}

// Queue thread, between the index's Enter and Leave.
void Queue::ApplyResolutions() {
  std::vector<FaultResolution> list;
  {
    std::lock_guard<std::mutex> lock(resolve_mu_);
    if (resolutions_.empty()) return;
    list.swap(resolutions_);
  }
  if (Stopping()) return;  // FailHeld completes the faulted requests
  for (const FaultResolution& r : list) {
    if (r.tag >= tags_.size()) continue;
    Tag& t = tags_[r.tag];
    if (!t.faulted || t.seq != r.seq) continue;  // stale: already resolved, or another dispatch
    t.faulted = false;
    faulted_count_--;
    FaultKind kind = t.fault_kind;
    t.fault_kind = FaultKind::kNone;
    switch (r.action) {
      case FaultResolution::Action::kRetry:
        t.attempt++;
        t.narrow = r.narrow;
        t.pending = 0;
        t.result = 0;
        t.io_failed = false;
        t.lost_segs = false;
        Route(r.tag);
        break;
      case FaultResolution::Action::kFail:
        t.result = -r.err;
        Complete(r.tag);
        break;
      case FaultResolution::Action::kComplete:
        // Success only where the data is known to be in place (a lost_written fault). For a kind error
        // fault there is nothing to acknowledge: it fails with EIO rather than claim a write it lacks.
        if (kind == FaultKind::kLostWritten) {
          t.result = 0;
          ReportCleared(r.tag);
        } else {
          t.result = -EIO;
        }
        Complete(r.tag);
        break;
    }
  }
}

// Queue thread.
void Queue::Drop(uint16_t tag) {
  Tag& t = tags_[tag];
  t.active = false;
  t.parked = false;
  counters_.inflight.store(counters_.inflight.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

// Queue thread.
void Queue::FailHeld() {
  if (detach_.load(std::memory_order_acquire)) {
    for (uint16_t tag : parked_) Drop(tag);
    parked_.clear();
    for (uint32_t tag = 0; faulted_count_ > 0 && tag < tags_.size(); tag++) {
      Tag& t = tags_[tag];
      if (!t.faulted) continue;
      t.faulted = false;
      t.fault_kind = FaultKind::kNone;
      faulted_count_--;
      Drop(static_cast<uint16_t>(tag));
    }
    return;
  }
  if (!parked_.empty()) {
    std::vector<uint16_t> waiting;
    waiting.swap(parked_);
    for (uint16_t tag : waiting) {
      tags_[tag].parked = false;
      tags_[tag].result = -EIO;
      Complete(tag);
    }
  }
  for (uint32_t tag = 0; faulted_count_ > 0 && tag < tags_.size(); tag++) {
    Tag& t = tags_[tag];
    if (!t.faulted) continue;
    t.faulted = false;
    faulted_count_--;
    t.result = t.fault_kind == FaultKind::kError && t.fault_err > 0 ? -t.fault_err : -EIO;
    t.fault_kind = FaultKind::kNone;
    Complete(static_cast<uint16_t>(tag));
  }
}

// Queue thread: the lowest sequence number still in flight (parked requests excepted).
void Queue::PublishSettled() {
  uint64_t settled = dispatch_seq_.load(std::memory_order_relaxed);
  for (const Tag& t : tags_)
    if (t.active && !t.parked && !t.faulted && t.seq < settled) settled = t.seq;
  settled_seq_.store(settled, std::memory_order_release);
}

// Queue thread, between the index's Enter and Leave.
int Queue::Plan(Tag& t) {
  PlanRequest req;
  switch (t.op) {
    case ublk::kOpRead: req.op = PlanOp::kRead; break;
    case ublk::kOpWrite: req.op = PlanOp::kWrite; break;
    case ublk::kOpWriteZeroes: req.op = PlanOp::kWriteZeroes; break;
    default: req.op = PlanOp::kDiscard; break;
  }
  req.offset = t.offset;
  req.len = t.len;
  req.narrow = t.narrow;
  PlanGeometry geo;
  geo.block_shift = cfg_.block_shift;
  geo.spare_data_offset = cfg_.spare_data_offset;
  return PlanSegments(req, geo, index_->Current(), &t.segs, &split_, &t.lost_segs);
}

// Queue thread.
void Queue::SubmitSegment(uint16_t tag, uint32_t index) {
  Tag& t = tags_[tag];
  Segment& s = t.segs[index];
  if (t.op == ublk::kOpDiscard && cfg_.main_is_block && discard_ioctl_) {
    DiscardAsync(tag, index);
    return;
  }
  io_uring_sqe* sqe = GetSqe();
  uint32_t buf_off = s.buf_offset + s.done;
  // With zero copy the "address" is the offset into the request's registered buffer.
  char* buf = cfg_.zero_copy ? reinterpret_cast<char*>(uintptr_t(buf_off)) : Buffer(tag) + buf_off;
  uint32_t len = s.len - s.done;
  uint64_t off = s.dev_offset + s.done;
  int file = s.spare ? kFileSpare : kFileMain;
  // Zero copy: the request's own buffer, always registered. Copy mode: the registered head of the tag's buffer.
  bool fixed = fixed_buffers_.load(std::memory_order_relaxed) && (cfg_.zero_copy || buf_off + len <= pinned_len_);
  s.zero_range = false;
  if (t.op == ublk::kOpDiscard) {
    // Planned on main only. A block device gets a block discard, a regular file a hole.
    if (cfg_.main_is_block) {
      io_uring_prep_rw(IORING_OP_URING_CMD, sqe, file, nullptr, 0, 0);
      sqe->cmd_op = BLOCK_URING_CMD_DISCARD;
      sqe->addr = off;
      sqe->addr3 = len;
    } else {
      io_uring_prep_fallocate(sqe, file, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                              static_cast<off_t>(len));
    }
  } else if (t.op == ublk::kOpWriteZeroes && zero_range_[s.spare]) {
    // A write of zeros, offloaded: on a block device the kernel uses the device's write-zeroes and falls
    // back to writing zero pages itself; a file system allocates zeroed extents.
    s.zero_range = true;
    io_uring_prep_fallocate(sqe, file, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                            static_cast<off_t>(len));
  } else if (t.op == ublk::kOpWriteZeroes) {
    // Where fallocate cannot zero (tmpfs, some file systems): a plain write from the zero buffer.
    io_uring_prep_write(sqe, file, zeros_, len, off);
    if (t.op_flags & ublk::kIoFFua) sqe->rw_flags = RWF_DSYNC;
  } else if (t.op == ublk::kOpRead) {
    if (fixed) io_uring_prep_read_fixed(sqe, file, buf, len, off, tag);
    else io_uring_prep_read(sqe, file, buf, len, off);
  } else {
    if (fixed) io_uring_prep_write_fixed(sqe, file, buf, len, off, tag);
    else io_uring_prep_write(sqe, file, buf, len, off);
    // FUA: the write is durable when it completes.
    if (t.op_flags & ublk::kIoFFua) sqe->rw_flags = RWF_DSYNC;
  }
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, Ud(s.spare ? kKindSpare : kKindMain, tag, index));
  t.pending++;
  inflight_backing_++;
}

// Queue thread. Counts as backing I/O in flight until the worker's result is taken.
void Queue::DiscardAsync(uint16_t tag, uint32_t index) {
  Tag& t = tags_[tag];
  const Segment& s = t.segs[index];
  if (!discard_worker_) {
    try {
      std::string name = "dmremap-d" + std::to_string(cfg_.q_id);
      discard_worker_ = std::make_unique<DiscardWorker>(cfg_.main_fd, name.c_str());
    } catch (const SysError& e) {
      DiscardDone(tag, index, -e.err());  // a hint dropped (out of descriptors): reported, and tried again next time
      return;
    } catch (const std::system_error& e) {
      DiscardDone(tag, index, -(e.code().value() > 0 ? e.code().value() : EAGAIN));
      return;
    }
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_read(sqe, discard_worker_->done_fd(), &discard_event_, sizeof(discard_event_), 0);
    io_uring_sqe_set_data64(sqe, Ud(kKindDiscardWorker, 0));
  }
  discard_worker_->Submit(DiscardWorker::Job{tag, index, s.dev_offset, s.len});
  t.pending++;
  inflight_backing_++;
}

// Queue thread, between the index's Enter and Leave.
void Queue::OnDiscardWorkerDone() {
  // Re-armed before the results are taken: a result posted after the take fires the new read.
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, discard_worker_->done_fd(), &discard_event_, sizeof(discard_event_), 0);
  io_uring_sqe_set_data64(sqe, Ud(kKindDiscardWorker, 0));
  discard_done_.clear();
  discard_worker_->TakeDone(&discard_done_);
  for (const DiscardWorker::Done& d : discard_done_) {
    inflight_backing_--;
    Tag& t = tags_[d.tag];
    t.pending--;
    DiscardDone(d.tag, d.seg, d.res);  // the ioctl's answer is final
    if (t.pending == 0) Finish(d.tag);
  }
}

// Queue thread.
void Queue::DiscardDone(uint16_t tag, uint32_t index, int res) {
  const Segment& s = tags_[tag].segs[index];
  if (res < 0) ReportError(tag, -res, false, s.dev_offset, s.len);
}

// Queue thread.
void Queue::SubmitSync(uint16_t tag, bool spare) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_fsync(sqe, spare ? kFileSpare : kFileMain, IORING_FSYNC_DATASYNC);
  sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, Ud(spare ? kKindSpare : kKindMain, tag));
  tags_[tag].pending++;
  inflight_backing_++;
}

// Queue thread.
bool Queue::SubmitFuaSync(uint16_t tag) {
  Tag& t = tags_[tag];
  t.fua_synced = true;
  const uint32_t devices = FuaSyncDevices(t.segs);
  for (uint32_t spare = 0; spare < 2; spare++) {
    if (!(devices & (1u << spare))) continue;
    io_uring_sqe* sqe = GetSqe();
    io_uring_prep_fsync(sqe, spare ? kFileSpare : kFileMain, IORING_FSYNC_DATASYNC);
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, Ud(kKindFuaSync, tag, spare));
    t.pending++;
    inflight_backing_++;
  }
  return devices != 0;
}

// Queue thread, between the index's Enter and Leave.
void Queue::OnFuaSyncDone(uint16_t tag, bool spare, int res) {
  Tag& t = tags_[tag];
  t.pending--;
  if (res < 0) {
    // The zeros may not be durable: the request fails (reported like a failed flush).
    if (t.result == 0) t.result = res;
    ReportError(tag, -res, spare, t.offset, t.len);
  }
  if (t.pending == 0) Finish(tag);
}

// Queue thread.
void Queue::OnBackingDone(uint16_t tag, uint32_t seg, int res, bool spare) {
  Tag& t = tags_[tag];
  t.pending--;
  const bool segmented = t.op == ublk::kOpRead || t.op == ublk::kOpWrite || t.op == ublk::kOpDiscard ||
                         t.op == ublk::kOpWriteZeroes;
  if (!segmented) {
    if (res < 0) {
      if (t.result == 0) t.result = res;
      ReportError(tag, -res, spare, t.offset, t.len);
    }
  } else if (t.op == ublk::kOpDiscard) {
    if (res == -EOPNOTSUPP && cfg_.main_is_block) {
      // The io_uring block discard is refused (a kernel before 6.12 has none; on 6.12 a device-mapper
      // main refused it where a loop device took it): this piece, and every discard from now on,
      // through the ioctl, whose answer is final.
      discard_ioctl_ = true;
      DiscardAsync(tag, seg);
    } else {
      DiscardDone(tag, seg, res);
    }
  } else {
    Segment& s = t.segs[seg];
    if (s.zero_range && res == -EOPNOTSUPP) {
      // This device cannot zero a range by fallocate: writes of zeros from now on, this piece first.
      zero_range_[s.spare] = false;
      SubmitSegment(tag, seg);
      return;
    }
    if (s.zero_range && res == 0) res = static_cast<int>(s.len - s.done);  // fallocate: all of it
    if (res <= 0) {
      // A read, write or write-zeroes piece failed. res == 0: no progress (past the end of the device):
      // never report that as success. Reported in Finish, as an io_fault or as io_error events.
      int err = res < 0 ? -res : EIO;
      s.err = err;
      t.io_failed = true;
      if (t.result == 0) t.result = -err;
      if (t.op != ublk::kOpRead && !s.spare) Bump(counters_.main_writes_failed);
    } else {
      s.done += static_cast<uint32_t>(res);
      if (s.done < s.len) {
        // Short transfer: continue where it stopped (also when another segment failed, so that each
        // segment ends either done or failed).
        SubmitSegment(tag, seg);
        return;
      }
      if (t.op != ublk::kOpRead && !s.spare) Bump(counters_.main_writes_ok);
    }
  }
  if (t.pending == 0) Finish(tag);
}

// Queue thread, between the index's Enter and Leave.
void Queue::Finish(uint16_t tag) {
  Tag& t = tags_[tag];
  if (!t.io_failed && t.result == 0 && !t.fua_synced && t.op == ublk::kOpWriteZeroes &&
      (t.op_flags & ublk::kIoFFua) && SubmitFuaSync(tag))
    return;  // FUA: the zeros fallocate wrote are made durable before the ack (or the LOST-block commit)
  if (t.io_failed) {
    // A read or write whose backing I/O failed in part.
    if (cfg_.park_faults && cfg_.park_faults->load(std::memory_order_relaxed) && !Stopping()) {
      Fault(tag, FaultKind::kError);
      return;
    }
    if (Stopping() && detach_.load(std::memory_order_acquire)) {
      Drop(tag);  // the next server handles the failure from scratch
      return;
    }
    for (const Segment& s : t.segs)
      if (s.err) ReportError(tag, s.err, s.spare, s.dev_offset + s.done, s.len - s.done);
    Complete(tag);
    return;
  }
  if (t.result == 0 && t.lost_segs) {
    // Every part succeeded and LOST blocks now hold the request's data in their slots: TypeScript
    // commits them as mapped before the write is acknowledged.
    if (!Stopping()) {
      Fault(tag, FaultKind::kLostWritten);
      return;
    }
    if (detach_.load(std::memory_order_acquire)) {
      Drop(tag);  // its LOST blocks are committed by the next server, which writes them again
      return;
    }
    t.result = -EIO;
  }
  if (t.result == 0) ReportCleared(tag);
  Complete(tag);
}

// Queue thread: holds the request and reports it.
void Queue::Fault(uint16_t tag, FaultKind kind) {
  Tag& t = tags_[tag];
  const uint32_t shift = cfg_.block_shift;
  const uint64_t first = t.offset >> shift;
  t.faulted = true;
  t.fault_kind = kind;
  faulted_count_++;
  Event ev;
  ev.type = Event::Type::kIoFault;
  ev.queue = cfg_.q_id;
  ev.tag = tag;
  ev.seq = t.seq;
  ev.op = t.op;
  ev.fault_kind = kind == FaultKind::kError ? Event::FaultKind::kError : Event::FaultKind::kLostWritten;
  ev.block = first;
  ev.blocks = t.len >> shift;
  ev.attempt = t.attempt;
  ev.latency_us = (NowNs() - t.start_ns) / 1000;
  if (kind == FaultKind::kError) {
    t.error_faults++;
    t.fault_err = FailedRanges(first, shift, t.segs, &ev.failed);
  } else {
    WrittenRanges(first, shift, t.segs, &ev.written);
  }
  events_->Push(std::move(ev));
}

// Queue thread: a request that was reported faulted (kind error) completes successfully.
void Queue::ReportCleared(uint16_t tag) {
  const Tag& t = tags_[tag];
  if (t.error_faults == 0) return;
  Event ev;
  ev.type = Event::Type::kFaultCleared;
  ev.queue = cfg_.q_id;
  ev.tag = tag;
  ev.seq = t.seq;
  ev.attempts = t.attempt + 1;
  events_->Push(std::move(ev));
}

// Queue thread.
void Queue::Complete(uint16_t tag) {
  Tag& t = tags_[tag];
  t.active = false;
  int32_t result = t.result;
  if (result == 0) {
    if (t.op == ublk::kOpRead) {
      result = static_cast<int32_t>(t.len);
      Bump(counters_.read_bytes, t.len);
    } else if (t.op == ublk::kOpWrite) {
      result = static_cast<int32_t>(t.len);
      Bump(counters_.write_bytes, t.len);
    }
  } else {
    Bump(counters_.errors);
  }
  uint64_t us = (NowNs() - t.start_ns) / 1000;
  int bucket = us == 0 ? 0 : std::min(kLatencyBuckets - 1, 63 - __builtin_clzll(us));
  Bump(counters_.latency_log2_us[bucket]);
  if (t.op == ublk::kOpRead && t.result == 0) ReportSlow(tag, us);
  counters_.inflight.store(counters_.inflight.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  PrepIoCmd(tag, ublk::kIoCommitAndFetchReq, result);
}

// Queue thread, from Complete (before the request leaves counters_.inflight). Only the first attempt of
// a request never parked: a retried request's latency holds TypeScript's decision, a parked one's a move.
void Queue::ReportSlow(uint16_t tag, uint64_t latency_us) {
  const Tag& t = tags_[tag];
  if (cfg_.slow_io_us == nullptr || t.waited || t.attempt != 0) return;
  const uint64_t limit = cfg_.slow_io_us->load(std::memory_order_relaxed);
  if (limit == 0 || latency_us <= limit) return;
  Event ev;
  if (!slow_limit_.Admit(NowNs(), &ev.dropped)) return;
  const uint32_t shift = cfg_.block_shift;
  ev.type = Event::Type::kSlowIo;
  ev.queue = cfg_.q_id;
  ev.block = t.offset >> shift;
  ev.blocks = t.len >> shift;
  ev.latency_us = latency_us;
  ev.inflight = static_cast<uint32_t>(counters_.inflight.load(std::memory_order_relaxed));
  events_->Push(std::move(ev));
}

// Queue thread.
void Queue::ReportError(uint16_t tag, int err, bool spare, uint64_t offset, uint64_t len) {
  const Tag& t = tags_[tag];
  Event ev;
  ev.type = Event::Type::kIoError;
  ev.queue = cfg_.q_id;
  ev.op = t.op;
  ev.spare = spare;
  ev.sector = offset >> 9;
  ev.sectors = static_cast<uint32_t>(len >> 9);
  ev.err = err;
  ev.latency_us = t.start_ns ? (NowNs() - t.start_ns) / 1000 : 0;
  events_->Push(ev);
}
