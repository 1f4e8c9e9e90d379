// Unit tests of the request planner (native/request_plan.*), run on the host: no kernel, no io_uring.
// Built by `npm run build` as build/Release/request_plan_test and run by test/unit/native-plan.test.ts;
// exits non-zero when a check fails, naming it on stderr.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../remap_index.h"
#include "../request_plan.h"

namespace {

int failures = 0;
int checks = 0;

// Main thread (the only one).
#define CHECK_EQ(a, b)                                                                                   \
  do {                                                                                                   \
    checks++;                                                                                            \
    auto va = (a);                                                                                       \
    auto vb = (b);                                                                                       \
    if (!(va == vb)) {                                                                                   \
      failures++;                                                                                        \
      std::fprintf(stderr, "%s:%d: %s: %s == %llu, expected %llu\n", __FILE__, __LINE__, current.c_str(), \
                   #a, static_cast<unsigned long long>(va), static_cast<unsigned long long>(vb));        \
    }                                                                                                    \
  } while (0)

std::string current;

constexpr uint32_t kShift = 12;  // 4 KiB blocks
constexpr uint64_t kBs = 1ull << kShift;
constexpr uint64_t kSpareData = 1ull << 20;

// A planner over a fixed table: the index publishes it and the test reads it as a queue thread would.
struct Planner {
  RemapIndex index{1};
  std::vector<Segment> segs, scratch;
  bool lost = false;

  // Main thread.
  explicit Planner(std::vector<RemapEntry> entries) {
    index.Publish(std::move(entries));
    index.Enter(0);
  }
  // Main thread.
  ~Planner() { index.Leave(0); }
  // Main thread. Plans `blocks` blocks at `block`.
  int Plan(PlanOp op, uint64_t block, uint32_t blocks, bool narrow = false) {
    PlanRequest req;
    req.op = op;
    req.offset = block * kBs;
    req.len = static_cast<uint32_t>(blocks * kBs);
    req.narrow = narrow;
    PlanGeometry geo;
    geo.block_shift = kShift;
    geo.spare_data_offset = kSpareData;
    return PlanSegments(req, geo, index.Current(), &segs, &scratch, &lost);
  }
};

// Main thread. Checks one segment: device, where on it (block on main, slot on the spare), where in the
// request (in blocks), length in blocks, LOST.
void ExpectSeg(const Segment& s, bool spare, uint64_t at, uint64_t req_block, uint64_t blocks, bool lost) {
  CHECK_EQ(s.spare, spare);
  CHECK_EQ(s.dev_offset, spare ? kSpareData + at * kBs : at * kBs);
  if (spare) CHECK_EQ(s.slot, at);
  CHECK_EQ(s.buf_offset, req_block * kBs);
  CHECK_EQ(s.len, blocks * kBs);
  CHECK_EQ(s.lost, lost);
}

// Main thread.
void NoRemappedBlock() {
  current = "a request with no remapped block is one piece on main";
  Planner p({{1000, 0, 0}, {5000, 1, 0}});  // entries elsewhere: the index is not empty
  for (PlanOp op : {PlanOp::kRead, PlanOp::kWrite, PlanOp::kWriteZeroes, PlanOp::kDiscard}) {
    CHECK_EQ(p.Plan(op, 100, 16), 0);
    CHECK_EQ(p.segs.size(), 1u);
    ExpectSeg(p.segs[0], false, 100, 0, 16, false);
    CHECK_EQ(p.lost, false);
  }
  current = "an empty table: one piece on main";
  Planner empty({});
  CHECK_EQ(empty.Plan(PlanOp::kRead, 7, 3), 0);
  CHECK_EQ(empty.segs.size(), 1u);
  ExpectSeg(empty.segs[0], false, 7, 0, 3, false);
}

// Main thread.
void RunsAcrossRemappedAndLost() {
  current = "a write crossing remapped and LOST blocks";
  // Blocks 10-11 remapped to slots 4-5, block 13 LOST at slot 9, block 15 remapped to slot 2.
  Planner p({{10, 4, 0}, {11, 5, 0}, {13, 9, kRemapLost}, {15, 2, 0}});
  CHECK_EQ(p.Plan(PlanOp::kWrite, 8, 10), 0);  // blocks 8..17
  CHECK_EQ(p.segs.size(), 7u);
  ExpectSeg(p.segs[0], false, 8, 0, 2, false);
  ExpectSeg(p.segs[1], true, 4, 2, 2, false);
  ExpectSeg(p.segs[2], false, 12, 4, 1, false);
  ExpectSeg(p.segs[3], true, 9, 5, 1, true);
  ExpectSeg(p.segs[4], false, 14, 6, 1, false);
  ExpectSeg(p.segs[5], true, 2, 7, 1, false);
  ExpectSeg(p.segs[6], false, 16, 8, 2, false);
  CHECK_EQ(p.lost, true);

  current = "write-zeroes is planned as a write (a LOST block's zeros go to its slot)";
  CHECK_EQ(p.Plan(PlanOp::kWriteZeroes, 12, 2), 0);
  CHECK_EQ(p.segs.size(), 2u);
  ExpectSeg(p.segs[0], false, 12, 0, 1, false);
  ExpectSeg(p.segs[1], true, 9, 1, 1, true);
  CHECK_EQ(p.lost, true);

  current = "a read of remapped blocks reads their slots";
  CHECK_EQ(p.Plan(PlanOp::kRead, 10, 3), 0);
  CHECK_EQ(p.segs.size(), 2u);
  ExpectSeg(p.segs[0], true, 4, 0, 2, false);
  ExpectSeg(p.segs[1], false, 12, 2, 1, false);
  CHECK_EQ(p.lost, false);

  current = "a read touching a LOST block fails with EIO";
  CHECK_EQ(p.Plan(PlanOp::kRead, 12, 4), -EIO);
  current = "a read ending just before a LOST block is served";
  CHECK_EQ(p.Plan(PlanOp::kRead, 12, 1), 0);
}

// Main thread.
void MovingParks() {
  current = "a request touching a MOVING block parks (reads, writes, write-zeroes)";
  Planner p({{20, 3, kRemapMoving}, {21, 4, kRemapMoving | kRemapLost}});
  for (PlanOp op : {PlanOp::kRead, PlanOp::kWrite, PlanOp::kWriteZeroes}) {
    CHECK_EQ(p.Plan(op, 18, 3), kPlanPark);
    CHECK_EQ(p.Plan(op, 21, 1), kPlanPark);
    CHECK_EQ(p.Plan(op, 22, 4), 0);  // past them
  }
}

// Main thread.
void RedirectParksReads() {
  // Block 50 on main, 51-52 being redirected to slots 6-7 (a failed write's reserved slots), 53 LOST at 8.
  Planner p({{51, 6, kRemapRedirect}, {52, 7, kRemapRedirect}, {53, 8, kRemapLost}});
  current = "a read touching a REDIRECT block parks";
  CHECK_EQ(p.Plan(PlanOp::kRead, 50, 2), kPlanPark);
  CHECK_EQ(p.Plan(PlanOp::kRead, 52, 1), kPlanPark);
  CHECK_EQ(p.Plan(PlanOp::kRead, 52, 1, true), kPlanPark);  // a narrow retry too
  current = "a read ending just before a REDIRECT block is served from main";
  CHECK_EQ(p.Plan(PlanOp::kRead, 49, 2), 0);
  CHECK_EQ(p.segs.size(), 1u);
  ExpectSeg(p.segs[0], false, 49, 0, 2, false);

  current = "a write to REDIRECT blocks goes to their slots, reported as written there (lost_written)";
  CHECK_EQ(p.Plan(PlanOp::kWrite, 50, 4), 0);  // blocks 50..53
  CHECK_EQ(p.segs.size(), 3u);
  ExpectSeg(p.segs[0], false, 50, 0, 1, false);
  ExpectSeg(p.segs[1], true, 6, 1, 2, true);
  ExpectSeg(p.segs[2], true, 8, 3, 1, true);  // REDIRECT and LOST differ in flags: two pieces
  CHECK_EQ(p.lost, true);
  std::vector<WrittenRange> written;
  WrittenRanges(50, kShift, p.segs, &written);
  CHECK_EQ(written.size(), 1u);  // slots 6, 7, 8 follow on: one range
  CHECK_EQ(written[0].block, 51u);
  CHECK_EQ(written[0].blocks, 3u);
  CHECK_EQ(written[0].slot, 6u);
  current = "write-zeroes to a REDIRECT block goes to its slot";
  CHECK_EQ(p.Plan(PlanOp::kWriteZeroes, 52, 1), 0);
  CHECK_EQ(p.segs.size(), 1u);
  ExpectSeg(p.segs[0], true, 7, 0, 1, true);
  current = "a discard leaves REDIRECT blocks out";
  CHECK_EQ(p.Plan(PlanOp::kDiscard, 50, 3), 0);
  CHECK_EQ(p.segs.size(), 1u);
  ExpectSeg(p.segs[0], false, 50, 0, 1, false);
  CHECK_EQ(p.lost, false);

  current = "a REDIRECT block being moved: every request parks";
  Planner m({{60, 2, kRemapRedirect | kRemapMoving}});
  for (PlanOp op : {PlanOp::kRead, PlanOp::kWrite, PlanOp::kWriteZeroes}) CHECK_EQ(m.Plan(op, 60, 1), kPlanPark);

  current = "the redirect committed (mapped at its slot): the parked read, planned again, reads the slot";
  p.index.Leave(0);
  p.index.Update({{51, 6, 0}, {52, 7, 0}});
  p.index.Enter(0);
  CHECK_EQ(p.Plan(PlanOp::kRead, 50, 3), 0);
  CHECK_EQ(p.segs.size(), 2u);
  ExpectSeg(p.segs[0], false, 50, 0, 1, false);
  ExpectSeg(p.segs[1], true, 6, 1, 2, false);
  current = "the redirect given up (the entries dropped): the read goes to main";
  p.index.Leave(0);
  p.index.Update({{51, 0, kRemapRemove}, {52, 0, kRemapRemove}});
  p.index.Enter(0);
  CHECK_EQ(p.Plan(PlanOp::kRead, 50, 3), 0);
  CHECK_EQ(p.segs.size(), 1u);
  ExpectSeg(p.segs[0], false, 50, 0, 3, false);
}

// Main thread.
void DiscardLeavesRemappedBlocks() {
  current = "a discard goes to main only: remapped, LOST and MOVING blocks are left out";
  Planner p({{30, 7, 0}, {31, 8, kRemapLost}, {33, 1, kRemapMoving}, {36, 2, kRemapLost}});
  CHECK_EQ(p.Plan(PlanOp::kDiscard, 28, 10), 0);  // blocks 28..37
  CHECK_EQ(p.segs.size(), 4u);
  ExpectSeg(p.segs[0], false, 28, 0, 2, false);
  ExpectSeg(p.segs[1], false, 32, 4, 1, false);
  ExpectSeg(p.segs[2], false, 34, 6, 2, false);
  ExpectSeg(p.segs[3], false, 37, 9, 1, false);
  CHECK_EQ(p.lost, false);  // never reported lost_written: a discard heals nothing
  current = "a discard of remapped blocks only plans nothing";
  CHECK_EQ(p.Plan(PlanOp::kDiscard, 30, 2), 0);
  CHECK_EQ(p.segs.size(), 0u);
  CHECK_EQ(p.lost, false);
  current = "a narrow discard: one piece per main block";
  CHECK_EQ(p.Plan(PlanOp::kDiscard, 28, 10, true), 0);
  CHECK_EQ(p.segs.size(), 6u);
  for (const Segment& s : p.segs) CHECK_EQ(s.spare, false);
}

// Main thread.
void SlotRunsSplit() {
  current = "consecutive blocks in consecutive slots are one piece; a slot gap or a flag change splits";
  // 40-42 at slots 10-12 (one run), 43 at slot 20 (gap), 44 at slot 21 but LOST (flag change), 45 at 22 LOST.
  Planner p({{40, 10, 0}, {41, 11, 0}, {42, 12, 0}, {43, 20, 0}, {44, 21, kRemapLost}, {45, 22, kRemapLost}});
  CHECK_EQ(p.Plan(PlanOp::kWrite, 40, 6), 0);
  CHECK_EQ(p.segs.size(), 3u);
  ExpectSeg(p.segs[0], true, 10, 0, 3, false);
  ExpectSeg(p.segs[1], true, 20, 3, 1, false);
  ExpectSeg(p.segs[2], true, 21, 4, 2, true);
  current = "a run cut by the end of the request";
  CHECK_EQ(p.Plan(PlanOp::kRead, 39, 3), 0);
  CHECK_EQ(p.segs.size(), 2u);
  ExpectSeg(p.segs[0], false, 39, 0, 1, false);
  ExpectSeg(p.segs[1], true, 10, 1, 2, false);
  current = "a request starting inside a run";
  CHECK_EQ(p.Plan(PlanOp::kRead, 41, 2), 0);
  CHECK_EQ(p.segs.size(), 1u);
  ExpectSeg(p.segs[0], true, 11, 0, 2, false);
}

// Main thread.
void NarrowOnePerBlock() {
  current = "narrow: one piece per block, slots following the run";
  Planner p({{52, 30, 0}, {53, 31, 0}, {55, 40, kRemapLost}});
  CHECK_EQ(p.Plan(PlanOp::kWrite, 50, 7, true), 0);  // 50..56
  CHECK_EQ(p.segs.size(), 7u);
  ExpectSeg(p.segs[0], false, 50, 0, 1, false);
  ExpectSeg(p.segs[1], false, 51, 1, 1, false);
  ExpectSeg(p.segs[2], true, 30, 2, 1, false);
  ExpectSeg(p.segs[3], true, 31, 3, 1, false);
  ExpectSeg(p.segs[4], false, 54, 4, 1, false);
  ExpectSeg(p.segs[5], true, 40, 5, 1, true);
  ExpectSeg(p.segs[6], false, 56, 6, 1, false);
  current = "narrow of a request already one piece per block changes nothing";
  CHECK_EQ(p.Plan(PlanOp::kRead, 52, 1, true), 0);
  CHECK_EQ(p.segs.size(), 1u);
  ExpectSeg(p.segs[0], true, 30, 0, 1, false);
}

// Main thread.
void FaultRangesMerge() {
  current = "failed pieces: adjacent ones on the same device with the same errno merge";
  Planner p({{62, 5, 0}, {63, 6, 0}});
  CHECK_EQ(p.Plan(PlanOp::kWrite, 60, 8, true), 0);  // 60..67, narrow: 8 pieces
  CHECK_EQ(p.segs.size(), 8u);
  p.segs[0].err = EIO;  // 60 main
  p.segs[1].err = EIO;  // 61 main: merges with 60
  p.segs[2].err = EIO;  // 62 spare: another device, not merged
  p.segs[3].err = EIO;  // 63 spare: merges with 62
  p.segs[4].err = ENODATA;  // 64 main: another errno
  p.segs[6].err = EIO;  // 66 main: not adjacent to 64
  std::vector<FaultRange> out;
  CHECK_EQ(FailedRanges(60, kShift, p.segs, &out), EIO);
  CHECK_EQ(out.size(), 4u);
  if (out.size() == 4) {
    CHECK_EQ(out[0].block, 60u); CHECK_EQ(out[0].blocks, 2u); CHECK_EQ(out[0].spare, false); CHECK_EQ(out[0].err, EIO);
    CHECK_EQ(out[1].block, 62u); CHECK_EQ(out[1].blocks, 2u); CHECK_EQ(out[1].spare, true);
    CHECK_EQ(out[2].block, 64u); CHECK_EQ(out[2].blocks, 1u); CHECK_EQ(out[2].err, ENODATA);
    CHECK_EQ(out[3].block, 66u); CHECK_EQ(out[3].blocks, 1u);
  }
  current = "a piece that failed after a short transfer counts from the block it stopped in";
  CHECK_EQ(p.Plan(PlanOp::kWrite, 60, 2), 0);  // one main piece 60..61
  CHECK_EQ(p.segs.size(), 1u);
  p.segs[0].done = static_cast<uint32_t>(kBs + 512);  // stopped inside block 61
  p.segs[0].err = EIO;
  out.clear();
  CHECK_EQ(FailedRanges(60, kShift, p.segs, &out), EIO);
  CHECK_EQ(out.size(), 1u);
  if (out.size() == 1) {
    CHECK_EQ(out[0].block, 61u);
    CHECK_EQ(out[0].blocks, 1u);
  }
  current = "nothing failed";
  p.segs[0].err = 0;
  out.clear();
  CHECK_EQ(FailedRanges(60, kShift, p.segs, &out), 0);
  CHECK_EQ(out.size(), 0u);
}

// Main thread.
void WrittenRangesCarrySlots() {
  current = "lost_written ranges name the slots and split where slots are not consecutive";
  // LOST 70-71 at slots 3-4, 72 at slot 9 (gap), 73 remapped (not LOST), 74 LOST at 10.
  Planner p({{70, 3, kRemapLost}, {71, 4, kRemapLost}, {72, 9, kRemapLost}, {73, 50, 0}, {74, 10, kRemapLost}});
  CHECK_EQ(p.Plan(PlanOp::kWrite, 69, 7), 0);  // 69..75
  std::vector<WrittenRange> w;
  WrittenRanges(69, kShift, p.segs, &w);
  CHECK_EQ(w.size(), 3u);
  if (w.size() == 3) {
    CHECK_EQ(w[0].block, 70u); CHECK_EQ(w[0].blocks, 2u); CHECK_EQ(w[0].slot, 3u);
    CHECK_EQ(w[1].block, 72u); CHECK_EQ(w[1].blocks, 1u); CHECK_EQ(w[1].slot, 9u);
    CHECK_EQ(w[2].block, 74u); CHECK_EQ(w[2].blocks, 1u); CHECK_EQ(w[2].slot, 10u);
  }
  current = "narrow pieces of one slot run merge back into one range";
  CHECK_EQ(p.Plan(PlanOp::kWrite, 70, 3, true), 0);
  w.clear();
  WrittenRanges(70, kShift, p.segs, &w);
  CHECK_EQ(w.size(), 2u);
  if (w.size() == 2) {
    CHECK_EQ(w[0].block, 70u); CHECK_EQ(w[0].blocks, 2u); CHECK_EQ(w[0].slot, 3u);
    CHECK_EQ(w[1].block, 72u); CHECK_EQ(w[1].slot, 9u);
  }
  current = "a LOST block's slot next to the previous run's slots but not adjacent in blocks stays apart";
  Planner q({{80, 5, kRemapLost}, {82, 6, kRemapLost}});
  CHECK_EQ(q.Plan(PlanOp::kWriteZeroes, 80, 3), 0);
  w.clear();
  WrittenRanges(80, kShift, q.segs, &w);
  CHECK_EQ(w.size(), 2u);
}

}  // namespace

// Main thread.
// A FUA write-zeroes syncs each device that got a fallocate piece, and only those.
void FuaSyncsFallocatedDevices() {
  current = "FuaSyncsFallocatedDevices";
  std::vector<Segment> segs(3);
  CHECK_EQ(FuaSyncDevices(segs), 0u);  // all written as zeros (RWF_DSYNC): nothing to sync after
  segs[1].zero_range = true;
  CHECK_EQ(FuaSyncDevices(segs), 1u);  // main
  segs[2].spare = true;
  CHECK_EQ(FuaSyncDevices(segs), 1u);  // the spare piece was written as zeros
  segs[2].zero_range = true;
  CHECK_EQ(FuaSyncDevices(segs), 3u);  // main and the spare
  segs[1].zero_range = false;
  CHECK_EQ(FuaSyncDevices(segs), 2u);  // the spare only
}

int main() {
  NoRemappedBlock();
  RunsAcrossRemappedAndLost();
  MovingParks();
  RedirectParksReads();
  DiscardLeavesRemappedBlocks();
  SlotRunsSplit();
  NarrowOnePerBlock();
  FaultRangesMerge();
  WrittenRangesCarrySlots();
  FuaSyncsFallocatedDevices();
  std::printf("request_plan_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
