// ScanReader: the background scanner's reads of the exported device (issue 13), through the data path's
// own remap index, so that a scan never races a remap:
//
//  - a range is planned against the current published table exactly as a user read is (request_plan.h):
//    runs of unmapped blocks are read from main, runs of remapped blocks in consecutive slots from their
//    spare slots;
//  - a block the data path holds requests for (MOVING: a move is copying it) is skipped, not read, and so is
//    a LOST block (a user read of it fails with EIO without any backing I/O: there is nothing to read);
//    TypeScript revisits skipped blocks;
//  - Device::Drain waits for a scan read in flight (WaitIdle), as it waits for user requests, so the remap
//    engine's order (publish MOVING, drain, copy) covers the scanner too: a scan read planned before the
//    MOVING table has finished before the copy starts, one planned after it skips the block.
//
// The reads are O_DIRECT preads into one reused aligned buffer (the data is not returned), timed one by
// one. They go through dups of the backing fds, never through a queue: they count in no queue counter and
// are never parked as faults; a failure is an errno in the result, nothing else.
//
// Threads: Read and WaitIdle run on libuv pool threads (the addon's PromiseWorkers); one scan read at a
// time per device (mu_), which uses the remap index's reader slot given at construction.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "remap_index.h"
#include "request_plan.h"

// Why a piece of a scan was not read.
enum class ScanSkip : uint8_t { kNone, kMoving, kLost };

// One piece of a scan: a run of blocks read with one pread (or skipped).
struct ScanSegment {
  bool spare = false;        // read from the blocks' spare slots (remapped), else from main
  uint64_t block = 0;        // first block (exported device's block number)
  uint32_t blocks = 0;
  uint64_t dev_offset = 0;   // byte offset on main or the spare
  ScanSkip skip = ScanSkip::kNone;
  uint32_t latency_us = 0;   // time the read took (0 for a skipped piece)
  int err = 0;               // positive errno of a failed read, 0 when it succeeded or was skipped
};

// Any thread holding the snapshot (a reader between the index's Enter and Leave, or a test). The pieces of
// blocks [first, end): main runs, spare runs of consecutive slots with the same flags, MOVING and LOST runs
// as skipped pieces (a spare piece of such a run names its slot). `max_blocks` splits a piece longer than
// that (1: one piece per block, the narrow scan).
void PlanScan(uint64_t first, uint64_t end, uint32_t max_blocks, const PlanGeometry& geo, const RemapIndex::Snapshot* snap,
              std::vector<ScanSegment>* out);

class ScanReader {
 public:
  // JS thread (with the Device). `reader`: the index's reader slot reserved for the scanner.
  ScanReader(RemapIndex* index, uint32_t reader, PlanGeometry geo);
  ~ScanReader();
  ScanReader(const ScanReader&) = delete;
  ScanReader& operator=(const ScanReader&) = delete;

  // Pool thread. Plans blocks [offset, offset + len) (block-aligned, checked by the caller) against the
  // current table and reads each piece that is not skipped: main pieces from `main_fd`, spare pieces from
  // `spare_fd`. `narrow`: one read per block. Fills `out` (cleared first). Throws SysError only when the
  // buffer cannot be allocated; a failed read is its piece's err.
  void Read(uint64_t offset, uint32_t len, bool narrow, int main_fd, int spare_fd, std::vector<ScanSegment>* out);

  // Pool thread (Device::Drain). Waits until no scan read is running (one that started before the call
  // has finished); false when it is still running at `deadline`.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline);

 private:
  // Pool thread, mu_ held: a buffer of at least `len` bytes, aligned for O_DIRECT.
  char* Buffer(uint32_t len);

  RemapIndex* index_;
  uint32_t reader_;
  PlanGeometry geo_;
  std::timed_mutex mu_;  // one scan read at a time; held for the whole read (WaitIdle takes it)
  char* buf_ = nullptr;  // mu_
  uint32_t buf_len_ = 0;
};
