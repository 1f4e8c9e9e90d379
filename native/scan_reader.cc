#include "scan_reader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "sys_error.h"

// Reader of the snapshot (pool thread between Enter and Leave, or a test's thread).
void PlanScan(uint64_t first, uint64_t end, uint32_t max_blocks, const PlanGeometry& geo, const RemapIndex::Snapshot* snap,
              std::vector<ScanSegment>* out) {
  out->clear();
  const uint32_t shift = geo.block_shift;
  if (max_blocks == 0) max_blocks = 1;
  const RemapEntry* e = RemapIndex::FirstInRange(snap, first, end);
  const RemapEntry* last = e ? snap->entries.data() + snap->entries.size() : nullptr;
  // Appends pieces of at most max_blocks; a spare piece's next part starts max_blocks slots further.
  auto push = [&](ScanSegment s) {
    while (s.blocks > 0) {
      ScanSegment part = s;
      part.blocks = std::min(s.blocks, max_blocks);
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
      // MOVING first: a user request touching it waits, whatever else the entry says.
      if (flags & kRemapMoving) {
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
ScanReader::ScanReader(RemapIndex* index, uint32_t reader, PlanGeometry geo) : index_(index), reader_(reader), geo_(geo) {}

// The Device's owner thread, after every scan read has finished (each PromiseWorker holds the Device).
ScanReader::~ScanReader() { free(buf_); }

// Pool thread, mu_ held.
char* ScanReader::Buffer(uint32_t len) {
  if (buf_len_ >= len) return buf_;
  void* p = nullptr;
  if (posix_memalign(&p, 4096, len) != 0) ThrowSys(ENOMEM, "scan read", "(buffer of " + std::to_string(len) + " bytes)");
  free(buf_);
  buf_ = static_cast<char*>(p);
  buf_len_ = len;
  return buf_;
}

namespace {
// Pool thread. One O_DIRECT pread of `len` bytes, looping over short reads: 0 or a positive errno (EIO for
// a read that ends before `len`: past the end of the device).
int PreadWhole(int fd, char* buf, uint32_t len, uint64_t offset) {
  uint32_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    done += static_cast<uint32_t>(n);
  }
  return 0;
}
}  // namespace

// Pool thread.
void ScanReader::Read(uint64_t offset, uint32_t len, bool narrow, int main_fd, int spare_fd, std::vector<ScanSegment>* out) {
  std::lock_guard<std::timed_mutex> lock(mu_);
  const uint32_t shift = geo_.block_shift;
  char* buf = Buffer(len);
  // The plan is made from one snapshot, held only while planning (the reads below block in the kernel); the
  // drain that follows a MOVING publish waits for this whole function (mu_), so no piece read below can be
  // one a move has started to copy.
  index_->Enter(reader_);
  PlanScan(offset >> shift, (offset + len) >> shift, narrow ? 1 : ~0u, geo_, index_->Current(), out);
  index_->Leave(reader_);
  for (ScanSegment& s : *out) {
    if (s.skip != ScanSkip::kNone) continue;
    const uint32_t bytes = s.blocks << shift;
    auto t0 = std::chrono::steady_clock::now();
    s.err = PreadWhole(s.spare ? spare_fd : main_fd, buf, bytes, s.dev_offset);
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count();
    s.latency_us = static_cast<uint32_t>(std::min<int64_t>(us, UINT32_MAX));
  }
}

// Pool thread.
bool ScanReader::WaitIdle(std::chrono::steady_clock::time_point deadline) {
  if (!mu_.try_lock_until(deadline)) return false;
  mu_.unlock();
  return true;
}
