#include "scan_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>

#include "sys_error.h"

// Reader of the snapshot (pool thread between Enter and Leave, or a test's thread).
void PlanScan(uint64_t first, uint64_t end, uint32_t max_blocks, uint32_t align_blocks, const PlanGeometry& geo,
              const RemapIndex::Snapshot* snap, std::vector<ScanSegment>* out) {
  out->clear();
  const uint32_t shift = geo.block_shift;
  if (max_blocks == 0) max_blocks = 1;
  const RemapEntry* e = RemapIndex::FirstInRange(snap, first, end);
  const RemapEntry* last = e ? snap->entries.data() + snap->entries.size() : nullptr;
  // Appends pieces of at most max_blocks that do not cross a multiple of align_blocks; a spare piece's next
  // part starts as many slots further as the part before it had blocks.
  auto push = [&](ScanSegment s) {
    while (s.blocks > 0) {
      ScanSegment part = s;
      part.blocks = std::min(s.blocks, max_blocks);
      if (align_blocks != 0) {
        const uint64_t to_boundary = align_blocks - s.block % align_blocks;
        if (to_boundary < part.blocks) part.blocks = static_cast<uint32_t>(to_boundary);
      }
      out->push_back(part);
      s.block += part.blocks;
      s.dev_offset += uint64_t(part.blocks) << shift;
      s.blocks -= part.blocks;
    }
  };
  uint64_t cur = first;
  while (cur < end) {
    if (e != nullptr && e != last && e->block == cur) {
      // A remapped run: consecutive blocks in consecutive slots with the same flags, as the data path plans it.
      const uint32_t flags = e->flags;
      const uint64_t slot = e->slot;
      uint64_t n = 1;
      ++e;
      while (e != last && cur + n < end && e->block == cur + n && e->slot == slot + n && e->flags == flags) {
        ++e;
        ++n;
      }
      ScanSegment s;
      s.spare = true;
      s.block = cur;
      s.blocks = static_cast<uint32_t>(n);
      s.dev_offset = geo.spare_data_offset + (slot << shift);
      // MOVING first: a user request touching it waits, whatever else the entry says. A REDIRECT block
      // alike (a user read of it waits): its data is main's or the slot's once the redirect ends.
      if (flags & (kRemapMoving | kRemapRedirect)) {
        s.skip = ScanSkip::kMoving;
      } else if (flags & kRemapLost) {
        s.skip = ScanSkip::kLost;
      }
      push(s);
      cur += n;
    } else {
      const uint64_t stop = (e != nullptr && e != last && e->block < end) ? e->block : end;
      ScanSegment s;
      s.block = cur;
      s.blocks = static_cast<uint32_t>(stop - cur);
      s.dev_offset = cur << shift;
      push(s);
      cur = stop;
    }
  }
}

// JS thread.
ScanReader::ScanReader(RemapIndex* index, uint32_t reader, PlanGeometry geo, uint32_t max_piece_bytes, PreadFn pread_fn)
    : index_(index), reader_(reader), geo_(geo), max_piece_blocks_(std::max<uint32_t>(1, max_piece_bytes >> geo.block_shift)),
      pread_(pread_fn) {}

// The Device's owner thread, after every scan read has finished (each PromiseWorker holds the Device).
ScanReader::~ScanReader() = default;

namespace {
// Pool thread. One O_DIRECT pread of `len` bytes, looping over short reads: 0 or a positive errno (EIO for
// a read that ends before `len`: past the end of the device).
int PreadWhole(ScanReader::PreadFn read_fn, int fd, char* buf, uint32_t len, uint64_t offset) {
  uint32_t done = 0;
  while (done < len) {
    ssize_t n = read_fn(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    done += static_cast<uint32_t>(n);
  }
  return 0;
}

// Pool thread. The scanner's reader section of the index: Enter on construction, Leave on destruction, so
// that a throw while planning (an allocation) never leaves the slot entered (which would keep every
// snapshot retired from then on alive).
class ReadSection {
 public:
  ReadSection(RemapIndex* index, uint32_t reader) : index_(index), reader_(reader) { index_->Enter(reader_); }
  ~ReadSection() { index_->Leave(reader_); }
  ReadSection(const ReadSection&) = delete;
  ReadSection& operator=(const ReadSection&) = delete;

 private:
  RemapIndex* index_;
  uint32_t reader_;
};

// Pool thread. Closes a Read's fds when it returns or throws.
struct FdCloser {
  ScanFds fds;
  ~FdCloser() {
    if (fds.main >= 0) close(fds.main);
    if (fds.spare >= 0) close(fds.spare);
  }
};

}  // namespace

// The thread that destroys the reader (its buffer was posix_memalign'ed).
void ScanReader::BufferFree::operator()(char* p) const { free(p); }

// Pool thread.
void ScanReader::Read(uint64_t offset, uint32_t len, bool narrow, const std::function<ScanFds()>& open_fds, ScanResult* out) {
  {
    std::lock_guard<std::mutex> l(state_mu_);
    if (cancelled_) ThrowSys(ENODEV, "scan read", "(device not running)");
    if (running_) ThrowSys(EBUSY, "scan read", "(another scan read is running on this device)");
    running_ = true;
  }
  // Declared first, destroyed last: the fds are closed before Cancel can see running_ false.
  struct Admitted {
    ScanReader* r;
    ~Admitted() {
      std::lock_guard<std::mutex> l(r->state_mu_);
      r->running_ = false;
      r->state_cv_.notify_all();
    }
  } admitted{this};
  FdCloser fds{open_fds()};

  out->segments.clear();
  out->covered_bytes = 0;
  out->stopped = ScanStop::kNone;
  out->generation = 0;
  const uint32_t shift = geo_.block_shift;
  const uint64_t first = offset >> shift;
  uint64_t end = (offset + len) >> shift;
  bool capped = false;
  if (narrow && len > kScanNarrowMaxBytes) {
    end = first + (kScanNarrowMaxBytes >> shift);
    capped = true;
  }
  const uint32_t max_blocks = narrow ? 1 : max_piece_blocks_;
  if (!buf_) {
    // One piece at most (a narrow read's piece, one block, is smaller): allocated at the first Read, kept.
    const uint32_t cap = max_piece_blocks_ << shift;
    void* p = nullptr;
    if (posix_memalign(&p, 4096, cap) != 0) ThrowSys(ENOMEM, "scan read", "(buffer of " + std::to_string(cap) + " bytes)");
    buf_.reset(static_cast<char*>(p));
  }
  char* const buf = buf_.get();

  std::vector<ScanSegment> plan;  // the pieces of [plan's first block, end) as planned against plan_gen
  size_t next = 0;
  uint64_t plan_gen = 0;
  uint32_t failures = 0;
  uint64_t cur = first;
  // A run (a wide call over more than one chunk) ends with the chunk of its first failed read: on a failing
  // disk each failed read can take seconds, and a command waiting for the call waits for all of them.
  const uint64_t align = kScanAlignBytes >> shift;
  const bool run = !narrow && align != 0 && first / align != (end - 1) / align;
  uint64_t limit = end;
  while (cur < limit) {
    // One piece: planned (or taken from the plan, if the table has not changed since), then read. The
    // snapshot is held only while planning: the read below blocks in the kernel, and no publish waits for
    // it. A cancel is seen here, between two pieces.
    {
      std::lock_guard<std::mutex> l(state_mu_);
      if (cancelled_) ThrowSys(ENODEV, "scan read", "(device not running: stopped during the read)");
    }
    {
      ReadSection section(index_, reader_);
      const RemapIndex::Snapshot* snap = index_->Current();
      if (next == plan.size() || snap->generation != plan_gen) {
        PlanScan(cur, end, max_blocks, kScanAlignBytes >> shift, geo_, snap, &plan);
        next = 0;
        plan_gen = snap->generation;
      }
    }
    ScanSegment s = plan[next++];
    s.generation = plan_gen;
    if (s.skip == ScanSkip::kNone) {
      auto t0 = std::chrono::steady_clock::now();
      s.err = PreadWhole(pread_, s.spare ? fds.fds.spare : fds.fds.main, buf, s.blocks << shift, s.dev_offset);
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
      s.latency_us = static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX));
    }
    if (out->segments.empty()) out->generation = plan_gen;
    out->segments.push_back(s);
    cur = s.block + s.blocks;
    if (s.err != 0 && ++failures >= kScanMaxFailures && cur < end) {
      out->stopped = ScanStop::kFailures;
      break;
    }
    if (s.err != 0 && run && limit == end) limit = std::min(end, (s.block / align + 1) * align);
  }
  if (out->stopped == ScanStop::kNone && cur < end && !capped) out->stopped = ScanStop::kFailures;
  if (out->stopped == ScanStop::kNone && capped) out->stopped = ScanStop::kNarrowCap;
  out->covered_bytes = static_cast<uint32_t>((cur - first) << shift);
}

// Lifecycle thread.
bool ScanReader::Cancel(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> l(state_mu_);
  cancelled_ = true;
  return state_cv_.wait_until(l, deadline, [this] { return !running_; });
}

// Lifecycle thread.
void ScanReader::Reopen() {
  std::lock_guard<std::mutex> l(state_mu_);
  cancelled_ = false;
}
