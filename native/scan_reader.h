// ScanReader: the background scanner's reads of the exported device (issue 13), through the data path's
// own remap index, so that a scan reads where a user read would and says which table it read against:
//
//  - a range is planned against the current published table exactly as a user read is (request_plan.h):
//    runs of unmapped blocks are read from main, runs of remapped blocks in consecutive slots from their
//    spare slots;
//  - a block the data path holds requests for (MOVING: a move is copying it) is skipped, not read, and so is
//    a LOST block (a user read of it fails with EIO without any backing I/O: there is nothing to read);
//    TypeScript revisits skipped blocks;
//  - the exclusion with a move is per piece, not per call: each piece is taken from a plan made against
//    the table current when the piece starts (the rest of the range is planned again whenever the table's
//    generation changed), and carries that generation. Nothing waits for the scanner: Device::Drain waits
//    for user requests only, so a piece planned before a MOVING publish may still be reading while the
//    move copies the block. That is harmless: a scan read writes nothing, and its result names the oldest
//    generation a piece was planned against, which TypeScript compares with the table's generation and
//    reads again (or does not count) when they differ. A remap's drain therefore never waits for a piece
//    that sits in a failing drive's error recovery.
//
// The reads are O_DIRECT preads into an aligned buffer of one piece, kept by the reader (the data is not
// returned), timed one by one; the Device makes pieces of up to one chunk (kScanAlignBytes), so a latency
// is the time of one read of at most 1 MiB. They go through dups of the backing fds, never through a queue: they count
// in no queue counter and are never parked as faults; a failed read is an errno in the result, nothing
// else. A call is bounded: a narrow call covers at most kScanNarrowMaxBytes, any call stops after
// kScanMaxFailures failed reads, and a wide call over more than one chunk (kScanAlignBytes) stops at the end
// of the chunk that holds its first failed read (ScanStop::kFailures); the result says how far it got (the
// caller asks again for the rest).
//
// Threads: Read runs on a libuv pool thread (the addon's PromiseWorker), one call at a time per device: a
// second call is refused at once with EBUSY (it never waits for the first, so scan reads can occupy one
// pool thread at most). Cancel and Reopen run on the device's lifecycle thread (Start/Stop/Detach: a pool
// thread, or the JS thread at env cleanup). The reader slot given at construction is used only by Read,
// between its index Enter and Leave.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "remap_index.h"
#include "request_plan.h"

// Most bytes one narrow call reads (one pread per block: up to 2048 at 512-byte blocks); a longer narrow
// call stops there (ScanStop::kNarrowCap).
constexpr uint32_t kScanNarrowMaxBytes = 1u << 20;
// No piece crosses a multiple of this many bytes of the exported device: the scanner's chunks (SCAN_CHUNK_BYTES
// in src/scan/scanner.ts), so that a call over many chunks still reports each piece inside one chunk, which
// the scanner counts and judges chunk by chunk. A multiple of every block size.
constexpr uint32_t kScanAlignBytes = 1u << 20;
// Failed reads after which a call stops (ScanStop::kFailures): each one on a failing disk can be seconds
// of error handling that stalls the disk's other I/O, so a call is at most this many of them in a row.
constexpr uint32_t kScanMaxFailures = 32;

// Why a piece of a scan was not read.
// kMoving also for a REDIRECT block: like a moving one, a user read of it waits, and it is read again later.
enum class ScanSkip : uint8_t { kNone, kMoving, kLost };

// Why a call stopped before the end of its range (ScanResult::covered_bytes tells where).
enum class ScanStop : uint8_t { kNone, kNarrowCap, kFailures };

// One piece of a scan: a run of blocks read with one pread (or skipped).
struct ScanSegment {
  bool spare = false;        // read from the blocks' spare slots (remapped), else from main
  uint64_t block = 0;        // first block (exported device's block number)
  uint32_t blocks = 0;
  uint64_t dev_offset = 0;   // byte offset on main or the spare
  ScanSkip skip = ScanSkip::kNone;
  uint32_t latency_us = 0;   // time the read took (0 for a skipped piece)
  int err = 0;               // positive errno of a failed read, 0 when it succeeded or was skipped
  uint64_t generation = 0;   // the table (RemapIndex::Snapshot::generation) the piece was planned against
};

// What one Read did.
struct ScanResult {
  std::vector<ScanSegment> segments;  // in block order, covering [offset, offset + covered_bytes) exactly
  uint32_t covered_bytes = 0;         // the whole length asked for unless `stopped`
  ScanStop stopped = ScanStop::kNone;
  uint64_t generation = 0;            // the oldest generation a piece was planned against (the first's)
};

// The backing fds one Read uses: dups it owns and closes before it returns.
struct ScanFds {
  int main = -1;
  int spare = -1;
};

// Any thread holding the snapshot (a reader between the index's Enter and Leave, or a test). The pieces of
// blocks [first, end): main runs, spare runs of consecutive slots with the same flags, MOVING and LOST runs
// as skipped pieces (a spare piece of such a run names its slot). `max_blocks` splits a piece longer than
// that (1: one piece per block, the narrow scan), and a piece is also split where it would cross a multiple
// of `align_blocks` (kScanAlignBytes in blocks; 0: no such split).
void PlanScan(uint64_t first, uint64_t end, uint32_t max_blocks, uint32_t align_blocks, const PlanGeometry& geo,
              const RemapIndex::Snapshot* snap, std::vector<ScanSegment>* out);

class ScanReader {
 public:
  using PreadFn = ssize_t (*)(int fd, void* buf, size_t count, off_t offset);

  // JS thread (with the Device). `reader`: the index's reader slot reserved for the scanner.
  // `max_piece_bytes`: the longest piece (a multiple of the block size). `pread_fn`: the read (tests
  // inject one that blocks or fails).
  ScanReader(RemapIndex* index, uint32_t reader, PlanGeometry geo, uint32_t max_piece_bytes, PreadFn pread_fn = ::pread);
  ~ScanReader();
  ScanReader(const ScanReader&) = delete;
  ScanReader& operator=(const ScanReader&) = delete;

  // Pool thread. Reads blocks [offset, offset + len) (block-aligned, checked by the caller), piece by
  // piece (see the top): main pieces from the main fd, spare pieces from the spare fd, both from
  // `open_fds`, called once the call is admitted; the fds are closed before Read returns or throws.
  // `narrow`: one read per block. Fills `out` (cleared first). Throws SysError: EBUSY at once when another
  // Read is running, ENODEV when the reader is cancelled (before the call, or between two pieces: what
  // was read is dropped), ENOMEM when the buffer cannot be allocated; whatever `open_fds` throws. A failed
  // read is its piece's err.
  void Read(uint64_t offset, uint32_t len, bool narrow, const std::function<ScanFds()>& open_fds, ScanResult* out);

  // Lifecycle thread (Device::Release). From now on Read refuses with ENODEV, and a running Read stops
  // before its next piece. Waits until a running Read has returned (its fds closed); false if it is still
  // running at `deadline` (a piece blocked in the kernel: it keeps its fds until its pread returns).
  bool Cancel(std::chrono::steady_clock::time_point deadline);
  // Lifecycle thread (the device's backing fds are open again): Read is admitted again.
  void Reopen();

 private:
  RemapIndex* index_;
  uint32_t reader_;
  PlanGeometry geo_;
  uint32_t max_piece_blocks_;
  PreadFn pread_;
  std::mutex state_mu_;  // guards the two below (short sections only; never held across a read)
  std::condition_variable state_cv_;  // running_ became false
  bool running_ = false;    // a Read is admitted and has not returned (its fds are open)
  bool cancelled_ = false;  // Cancel was called (and no Reopen since)
  // The read buffer, kept from one Read to the next (one piece at most: max_piece_blocks_ blocks): a new
  // buffer per Read was an mmap, 128 page faults and an munmap per 1 MiB chunk (glibc maps allocations this
  // large), a third of a chunk's time in the TCG test VM. Touched only by the Read admitted (running_),
  // whose admission under state_mu_ orders it after the previous Read's use on another pool thread.
  struct BufferFree {
    void operator()(char* p) const;
  };
  std::unique_ptr<char, BufferFree> buf_;
};
