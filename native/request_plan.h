// Request planning: the pure arithmetic of the data path, with no io_uring and no kernel in it, so that
// it can be unit-tested on any host (native/test/request_plan_test.cc).
//
// PlanSegments splits one request into backing I/O pieces against a snapshot of the remap index: runs of
// unmapped blocks go to main, runs of remapped blocks in consecutive spare slots go to the spare. The
// fault-range functions turn the pieces of a finished request back into block ranges for the events
// TypeScript decides on (io_fault kind error: what failed; kind lost_written: which slot each written
// LOST block's data went to).
//
// Every function here runs on a queue thread (between the index's Enter and Leave where it reads a
// snapshot), or on the test's thread.
#pragma once

#include <cstdint>
#include <vector>

#include "remap_index.h"

// The operations a request can plan (a subset of the ublk opcodes, which the queue maps onto these).
enum class PlanOp : uint8_t { kRead, kWrite, kWriteZeroes, kDiscard };

// One contiguous piece of a request: a run of unmapped blocks on main, or of remapped blocks in
// consecutive spare slots.
struct Segment {
  bool spare = false;
  uint64_t dev_offset = 0;  // byte offset on main or spare
  uint32_t buf_offset = 0;  // byte offset in the request (its buffer, for reads and writes)
  uint32_t len = 0;
  uint32_t done = 0;  // bytes transferred (short transfers are resubmitted)
  bool lost = false;  // slots of LOST or REDIRECT blocks (writes and write-zeroes only)
  int err = 0;        // positive errno once the segment failed
  uint64_t slot = 0;  // spare: the slot of the segment's first block
  bool zero_range = false;  // the queue submitted it as fallocate(ZERO_RANGE) (write-zeroes)
};

struct PlanRequest {
  PlanOp op = PlanOp::kRead;
  uint64_t offset = 0;  // byte offset on the exported device (a multiple of the block size)
  uint32_t len = 0;     // bytes (a multiple of the block size)
  bool narrow = false;  // one piece per block, so that a failure names exactly its blocks
};

struct PlanGeometry {
  uint32_t block_shift = 9;        // log2 of the block size (the remap unit)
  uint64_t spare_data_offset = 0;  // byte offset of slot 0 on the spare
};

// PlanSegments' answer when a block of the request is being moved (any request), or being redirected (a
// read): hold the request until the next table is published, then plan it again.
constexpr int kPlanPark = 1;

// Queue thread, between the index's Enter and Leave. Fills `segs` (cleared first) with the request's
// pieces in request order and `*lost_segs` with whether any piece writes the slot of a LOST block.
// Returns 0, kPlanPark, or -EIO (a read touches a LOST block: its data is gone, never served).
// Reads, writes and write-zeroes are planned alike: a remapped block's I/O goes to its slot, also for a
// LOST or REDIRECT block (whose slot then holds the written data, and the request is reported
// lost_written); a read of a REDIRECT block parks.
// A discard goes to main only: the parts over remapped blocks are left out (their slot data stays, and
// a LOST block stays LOST: a discard writes no data, so it never makes a slot's contents readable).
// `scratch` is reused memory for the narrow split.
int PlanSegments(const PlanRequest& req, const PlanGeometry& geo, const RemapIndex::Snapshot* snap,
                 std::vector<Segment>* segs, std::vector<Segment>* scratch, bool* lost_segs);

// A range of a faulted request's blocks that failed, in main-block space (a spare piece: the blocks that
// map to the slots that failed).
struct FaultRange {
  uint64_t block = 0;
  uint32_t blocks = 0;
  bool spare = false;
  int err = 0;  // positive errno
};

// LOST blocks block..block+blocks-1 whose data went to spare slots slot..slot+blocks-1.
struct WrittenRange {
  uint64_t block = 0;
  uint32_t blocks = 0;
  uint64_t slot = 0;
};

// Queue thread. The failed pieces of a request whose first block is `first_block`, merged where they
// are adjacent, on the same device and failed with the same errno. A piece that transferred part of its
// bytes before it failed counts from the block it stopped in. Returns the errno of the first failed
// piece (0 when none failed).
int FailedRanges(uint64_t first_block, uint32_t block_shift, const std::vector<Segment>& segs,
                 std::vector<FaultRange>* out);

// Queue thread. The LOST pieces of a request, merged where both the blocks and the slots are consecutive
// (a run whose slots are not consecutive is split).
void WrittenRanges(uint64_t first_block, uint32_t block_shift, const std::vector<Segment>& segs,
                   std::vector<WrittenRange>* out);

// Queue thread. The backing devices a write-zeroes with FUA must fdatasync before it is acknowledged:
// bit 0 main, bit 1 the spare, for each device that got a piece served by fallocate(ZERO_RANGE), which
// carries no FUA of its own (a piece served as a write of zeros is written with RWF_DSYNC).
uint32_t FuaSyncDevices(const std::vector<Segment>& segs);
