// Queue: one ublk hardware queue, served by one thread with its own io_uring.
//
// The thread fetches requests from /dev/ublkcN (FETCH_REQ, then COMMIT_AND_FETCH_REQ per completion),
// turns each into backing I/O on the same ring (O_DIRECT main/spare, registered files, registered
// buffers where the kernel allows), and commits the result. It makes no policy decisions: errors are
// reported as events and returned to the kernel, or (fault parking) the request is held "faulted" until
// TypeScript resolves it (retry, fail, complete). A write that touched LOST blocks is always held that way
// once its data is in their slots, so that TypeScript can commit the blocks as mapped before it is acked.
#pragma once

#include <liburing.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "discard_worker.h"
#include "request_plan.h"
#include "slow_io_limit.h"
#include "ublk_abi.h"

class EventSink;
class RemapIndex;

struct QueueConfig {
  uint32_t dev_id = 0;
  uint16_t q_id = 0;
  uint32_t depth = 128;
  uint32_t max_io_bytes = 512 * 1024;
  int cdev_fd = -1;   // /dev/ublkcN
  int main_fd = -1;   // O_DIRECT
  int spare_fd = -1;  // O_DIRECT
  bool encoded = true;  // ioctl-encoded I/O opcodes
  // UBLK_F_AUTO_BUF_REG: the kernel registers each request's own pages in this ring's buffer table at
  // index = tag, and backing I/O reads/writes them directly (no copy, no buffers of ours).
  bool zero_copy = false;
  uint32_t block_shift = 9;        // log2 of the exported logical block size (the remap unit)
  uint64_t spare_data_offset = 0;  // byte offset of slot 0 on the spare; slot s is at + (s << block_shift)
  // Main is a block device (discard goes down as a block discard) rather than a regular file (punch hole).
  bool main_is_block = false;
  // Write-zeroes on main by fallocate(ZERO_RANGE): false for a block device without write-zeroes, where
  // the kernel would only write zero pages itself (synchronously, in an io-wq thread): writes of zeros
  // from the queue's buffer do the same asynchronously.
  bool main_zero_range = true;
  // Park failed reads/writes (the device owns the flag; JS flips it, queue threads read it). Null: off.
  const std::atomic<bool>* park_faults = nullptr;
  // A successful read slower than this (µs) is reported as slow_io (the device owns it, JS sets it, queue
  // threads read it). 0 or null: off.
  const std::atomic<uint64_t>* slow_io_us = nullptr;
};

// What TypeScript decided for a faulted request (resolveFault).
struct FaultResolution {
  enum class Action : uint8_t { kRetry, kFail, kComplete };
  uint16_t tag = 0;
  uint64_t seq = 0;
  Action action = Action::kRetry;
  bool narrow = false;  // kRetry: one backing I/O per block
  int err = 0;          // kFail: positive errno
};

constexpr int kLatencyBuckets = 32;

// Cumulative counters, written only by the queue thread, readable from any thread.
struct QueueCounters {
  std::atomic<uint64_t> reads{0}, writes{0}, flushes{0}, discards{0};
  std::atomic<uint64_t> read_bytes{0}, write_bytes{0}, errors{0}, inflight{0};
  // Backing writes (and write-zeroes) to main, counted per piece when it ends: done whole, or failed.
  // `writes` above counts requests at dispatch; these tell a main that refuses writes from bad sectors.
  std::atomic<uint64_t> main_writes_ok{0}, main_writes_failed{0};
  std::atomic<uint64_t> latency_log2_us[kLatencyBuckets];
  QueueCounters() {
    for (auto& b : latency_log2_us) b.store(0, std::memory_order_relaxed);
  }
};

class Queue {
 public:
  // Owner thread (the device's lifecycle thread).
  // `counters` outlives the queue (the device owns it, so stats stay readable after a stop).
  Queue(const QueueConfig& cfg, RemapIndex* index, uint32_t reader_slot, EventSink* events,
        QueueCounters* counters);
  // Owner thread. Joins the thread if still running.
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  // Owner thread. Starts the queue thread and waits until it has set up what needs no /dev/ublkcN (its
  // io_uring, I/O buffers): every fallible step a user recovery can take before START_USER_RECOVERY. The
  // thread then waits for Start (or a stop: it exits). Throws SysError on failure (the thread is joined).
  void Prepare();
  // Owner thread. Hands /dev/ublkcN to the queue thread (Prepare first, if not done) and waits until it has
  // registered it, mapped its descriptors and fetched every tag (or failed: throws SysError, joined).
  void Start(int cdev_fd);
  // Any thread. Wakes the queue thread to look at the remap table again (and at queued fault
  // resolutions): parked requests are planned again (dispatched once no block they touch is moving, nor,
  // for a read, redirected). With fail_parked (the device stops), every parked request fails with EIO
  // instead and every faulted one completes: kind error with its errno, kind lost_written with EIO.
  void NotifyTableChanged(bool fail_parked = false);
  // Any thread. Sequence number of the next request this queue will dispatch.
  uint64_t dispatch_seq() const { return dispatch_seq_.load(std::memory_order_acquire); }
  // Any thread. Every request with a lower sequence number has completed (parked and faulted ones
  // excepted), as seen at the queue thread's last look; it looks on each wakeup while a drain is wanted.
  uint64_t settled_seq() const { return settled_seq_.load(std::memory_order_acquire); }
  void WantDrain(bool on) { drain_waiters_.fetch_add(on ? 1 : -1, std::memory_order_acq_rel); }
  // Any thread (the JS thread). Queues a resolution for a faulted request and wakes the queue thread,
  // which applies it (before re-routing parked requests) on that wakeup. Ignored there when the tag is not
  // faulted or has another seq, and ignored once the queue is stopping.
  void ResolveFault(const FaultResolution& r);

  // Any thread. Asks the queue thread to exit once its in-flight backing I/O is done; the kernel
  // cancels the fetch commands still outstanding when the ring is closed.
  void RequestStop();
  // Any thread. Like RequestStop, for a detach (the device is left to a successor, ublk user recovery):
  // backing I/O in flight completes and is committed, but no request is failed for the stop. Requests
  // held (parked, faulted) and requests fetched from now on are left uncommitted, so that the kernel
  // reissues them to the next server (UBLK_F_USER_RECOVERY_REISSUE) when the ring is closed.
  void RequestDetach();
  // Owner thread. Waits for the queue thread to exit.
  void Join();

  bool fixed_buffers() const { return fixed_buffers_.load(std::memory_order_relaxed); }

 private:
  enum class FaultKind : uint8_t { kNone, kError, kLostWritten };

  struct Tag {
    uint8_t op = 0;
    uint32_t op_flags = 0;
    uint64_t offset = 0;  // byte offset on main
    uint32_t len = 0;     // bytes requested
    std::vector<Segment> segs;  // read/write pieces; capacity kept between requests
    int pending = 0;      // backing operations in flight
    int result = 0;       // first error (negative errno), else 0
    uint64_t start_ns = 0;
    uint64_t seq = 0;       // dispatch order, for drains
    bool active = false;    // dispatched and not yet committed
    bool parked = false;    // waits for a table in which none of its blocks is moving (or, a read, redirected)
    bool waited = false;    // was parked in this dispatch: its latency is not the disk's (no slow_io)
    bool cmd_live = false;  // a FETCH/COMMIT_AND_FETCH command is outstanding in the kernel
    // Fault parking. A faulted tag is active (not committed, its buffer kept) and waits for a
    // resolution with its seq; it is held out of drains like a parked one.
    bool faulted = false;
    FaultKind fault_kind = FaultKind::kNone;
    int fault_err = 0;          // kError: errno it completes with if the device stops
    uint32_t attempt = 0;       // 0 at dispatch, +1 per retry
    uint32_t error_faults = 0;  // kError faults reported for this dispatch (fault_cleared when > 0)
    bool narrow = false;        // this attempt: one backing I/O per block
    bool io_failed = false;     // a read/write segment failed in this attempt
    bool lost_segs = false;     // this attempt writes slots of LOST blocks
    bool fua_synced = false;    // this attempt: a FUA write-zeroes' fdatasync was submitted
  };

  // Queue thread: the whole life of the queue.
  void Run();
  // Queue thread; throw SysError. SetupLocal: ring and buffers (before /dev/ublkcN is open); SetupDevice:
  // registered files, descriptors, FETCH_REQ of every tag.
  void SetupLocal();
  void SetupDevice();
  void Teardown();
  // Queue thread.
  io_uring_sqe* GetSqe();
  void PrepIoCmd(uint16_t tag, uint32_t nr, int32_t result);
  void HandleCqe(const io_uring_cqe* cqe);
  void Dispatch(uint16_t tag);
  // Plans and submits a request's backing I/O, or parks it while a block it touches is moving (or, a read,
  // redirected).
  void Route(uint16_t tag);
  void OnTableChanged();
  // Applies the queued resolutions (dropped when stopping).
  void ApplyResolutions();
  // Completes every held request (faulted, and parked with fail_parked): the device stops. On a detach
  // they are dropped instead (Drop).
  void FailHeld();
  // A request this server gives up without committing it: the kernel reissues it to the next server.
  void Drop(uint16_t tag);
  // True once nothing will resolve a held request any more (stop requested, or fail_parked).
  bool Stopping() const { return stop_requested_ || fail_parked_.load(std::memory_order_acquire); }
  void PublishSettled();
  // Splits a request at remap boundaries (PlanSegments): 0, kPlanPark (a block is moving, or redirected for a
  // read) or a negative
  // errno (a read of a LOST block).
  int Plan(Tag& t);
  void SubmitSegment(uint16_t tag, uint32_t index);
  void SubmitSync(uint16_t tag, bool spare);
  // A write-zeroes with FUA whose pieces all succeeded: fdatasync of the devices fallocate zeroed, before
  // the ack. False when none needs it.
  bool SubmitFuaSync(uint16_t tag);
  void OnFuaSyncDone(uint16_t tag, bool spare, int res);
  // A discard piece on main (a block device that refused the io_uring discard): BLKDISCARD on the
  // queue's discard worker (started here the first time), so that the queue thread keeps serving.
  void DiscardAsync(uint16_t tag, uint32_t index);
  // The discard worker's eventfd fired: re-arm its read and finish the pieces it completed.
  void OnDiscardWorkerDone();
  // The result of a discard piece on main: a discard is a hint, so a refusal is reported (io_error) and
  // the request still succeeds.
  void DiscardDone(uint16_t tag, uint32_t index, int res);
  void OnBackingDone(uint16_t tag, uint32_t seg, int res, bool spare);
  // All of a request's backing I/O is done: complete it, or hold it faulted.
  void Finish(uint16_t tag);
  void Fault(uint16_t tag, FaultKind kind);
  void ReportCleared(uint16_t tag);
  void Complete(uint16_t tag);
  // A successful read over cfg_.slow_io_us (not parked, not retried): slow_io, within SlowIoLimiter's bound.
  void ReportSlow(uint16_t tag, uint64_t latency_us);
  void ReportError(uint16_t tag, int err, bool spare, uint64_t offset, uint64_t len);
  char* Buffer(uint16_t tag) { return buffers_ + size_t(tag) * cfg_.max_io_bytes; }

  QueueConfig cfg_;
  RemapIndex* index_;
  uint32_t reader_slot_;
  EventSink* events_;
  QueueCounters& counters_;

  std::thread thread_;
  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  int ready_state_ = 0;  // 0 pending, 2 prepared (waits for go_), 1 serving, -1 failed
  bool go_ = false;      // Start handed over cfg_.cdev_fd
  bool abort_ = false;   // stopped before Start: the prepared thread exits
  std::string ready_error_;
  int ready_errno_ = 0;

  int stop_fd_ = -1;   // eventfd
  int table_fd_ = -1;  // eventfd: the remap table changed
  uint64_t table_event_ = 0;  // read target of the pending eventfd read
  std::atomic<bool> fail_parked_{false};
  std::atomic<uint64_t> dispatch_seq_{0};
  std::atomic<uint64_t> settled_seq_{0};
  std::atomic<int> drain_waiters_{0};
  std::atomic<bool> fixed_buffers_{false};
  // Resolutions from the JS thread; looked at only on the table eventfd's wakeup.
  std::mutex resolve_mu_;
  std::vector<FaultResolution> resolutions_;
  bool resolve_closed_ = false;  // the queue thread has exited: drop further resolutions

  // Queue thread only.
  io_uring ring_{};
  bool ring_ready_ = false;
  const ublk::IoDesc* descs_ = nullptr;
  size_t descs_len_ = 0;
  char* buffers_ = nullptr;  // mmap'd, buffers_len_ bytes (copy mode only)
  size_t buffers_len_ = 0;
  // Copy mode: bytes at the start of each tag's buffer registered with the ring (queue thread only).
  uint32_t pinned_len_ = 0;
  std::vector<Tag> tags_;
  uint32_t live_cmds_ = 0;
  uint32_t inflight_backing_ = 0;
  std::vector<uint16_t> parked_;
  uint32_t faulted_count_ = 0;
  std::vector<Segment> split_;  // scratch for narrow planning
  SlowIoLimiter slow_limit_{kSlowIoEventsPerSecond};
  char* zeros_ = nullptr;        // max_io_bytes of zeros: the data of write-zeroes served as writes
  // Write-zeroes by fallocate(ZERO_RANGE) on main / the spare: main starts from cfg_.main_zero_range,
  // and either turns to writes of zeros when fallocate answers EOPNOTSUPP.
  bool zero_range_[2] = {true, true};
  bool discard_ioctl_ = false;  // main refused the io_uring block discard: BLKDISCARD from then on
  std::unique_ptr<DiscardWorker> discard_worker_;  // started with the first BLKDISCARD; joined in Teardown
  uint64_t discard_event_ = 0;                     // read target of the pending read of its eventfd
  std::vector<DiscardWorker::Done> discard_done_;  // scratch for its results
  bool stop_requested_ = false;
  std::string stop_reason_;
  std::atomic<bool> detach_{false};  // set by RequestDetach before the stop eventfd is written
};
