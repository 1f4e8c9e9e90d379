#include "request_plan.h"

#include <algorithm>
#include <cerrno>

// Queue thread, between the index's Enter and Leave.
int PlanSegments(const PlanRequest& req, const PlanGeometry& geo, const RemapIndex::Snapshot* snap,
                 std::vector<Segment>* segs, std::vector<Segment>* scratch, bool* lost_segs) {
  segs->clear();
  *lost_segs = false;
  const uint32_t shift = geo.block_shift;
  const uint64_t first = req.offset >> shift;
  const uint64_t end = (req.offset + req.len) >> shift;
  const bool discard = req.op == PlanOp::kDiscard;
  const RemapEntry* e = RemapIndex::FirstInRange(snap, first, end);
  const RemapEntry* last = e ? snap->entries.data() + snap->entries.size() : nullptr;
  auto main_run = [&](uint64_t from, uint64_t to) {
    Segment s;
    s.dev_offset = from << shift;
    s.buf_offset = uint32_t((from - first) << shift);
    s.len = uint32_t((to - from) << shift);
    segs->push_back(s);
  };
  if (!e) {
    // The common case, and the only one while the table is empty: all of it on main.
    main_run(first, end);
  } else {
    uint64_t cur = first;
    while (cur < end) {
      if (e != last && e->block == cur) {
        if (discard) {
          // A discard never touches a remapped block: its slot keeps its data (a discard promises no
          // zeros), and a LOST block stays LOST (reads still fail) rather than expose whatever its slot
          // held. MOVING ones alike: the move copies data that the discard leaves in place; and
          // REDIRECT ones: the block's data is main's until the redirect's write is committed.
          ++e;
          ++cur;
          continue;
        }
        // A block being moved is touched by nobody until the move is over.
        if (e->flags & kRemapMoving) return kPlanPark;
        // Never serve a block whose data is lost: not from main (stale or unreadable), not from the slot
        // (never written). A write (or write-zeroes) to it goes to its slot, and the request is then held
        // for TypeScript to commit the block as mapped (a lost_written fault).
        if ((e->flags & kRemapLost) && req.op == PlanOp::kRead) return -EIO;
        // A block whose failed write is being redirected: main refused that write, and the slot holds it
        // only once the retry has landed there and been committed. A read waits for the table that ends
        // the redirect (the block mapped at the slot, or back on main) rather than read either now: the
        // write is not acknowledged yet, so the old data (main) or the new (the slot) are both answers.
        // A write goes to the slot like one to a LOST block (held for the commit, lost_written).
        if ((e->flags & kRemapRedirect) && req.op == PlanOp::kRead) return kPlanPark;
        const bool lost = (e->flags & (kRemapLost | kRemapRedirect)) != 0;
        const uint32_t flags = e->flags;
        const uint64_t slot = e->slot;
        uint64_t n = 1;
        ++e;
        while (e != last && cur + n < end && e->block == cur + n && e->slot == slot + n && e->flags == flags) {
          ++e;
          ++n;
        }
        Segment s;
        s.spare = true;
        s.dev_offset = geo.spare_data_offset + (slot << shift);
        s.buf_offset = uint32_t((cur - first) << shift);
        s.len = uint32_t(n << shift);
        s.lost = lost;
        s.slot = slot;
        *lost_segs = *lost_segs || lost;
        segs->push_back(s);
        cur += n;
      } else {
        const uint64_t stop = (e != last && e->block < end) ? e->block : end;
        main_run(cur, stop);
        cur = stop;
      }
    }
  }
  // A narrow retry: one backing I/O per block, so that a failure names exactly its blocks (the queue's
  // segment index must fit its 16 bits of user_data).
  if (req.narrow && (end - first) > segs->size() && (end - first) <= 0xffff) {
    const uint32_t bs = 1u << shift;
    scratch->clear();
    for (const Segment& s : *segs) {
      for (uint32_t off = 0; off < s.len; off += bs) {
        Segment one = s;
        one.dev_offset = s.dev_offset + off;
        one.buf_offset = s.buf_offset + off;
        one.len = std::min(bs, s.len - off);
        if (s.spare) one.slot = s.slot + (off >> shift);
        scratch->push_back(one);
      }
    }
    segs->swap(*scratch);
  }
  return 0;
}

// Queue thread.
int FailedRanges(uint64_t first_block, uint32_t block_shift, const std::vector<Segment>& segs,
                 std::vector<FaultRange>* out) {
  int first_err = 0;
  for (const Segment& s : segs) {
    if (!s.err) continue;
    if (!first_err) first_err = s.err;
    const uint64_t from = first_block + ((uint64_t(s.buf_offset) + s.done) >> block_shift);
    const uint64_t to = first_block + ((uint64_t(s.buf_offset) + s.len + (1u << block_shift) - 1) >> block_shift);
    if (!out->empty()) {
      FaultRange& prev = out->back();
      if (prev.spare == s.spare && prev.err == s.err && prev.block + prev.blocks == from) {
        prev.blocks += static_cast<uint32_t>(to - from);
        continue;
      }
    }
    out->push_back(FaultRange{from, static_cast<uint32_t>(to - from), s.spare, s.err});
  }
  return first_err;
}

// Queue thread.
void WrittenRanges(uint64_t first_block, uint32_t block_shift, const std::vector<Segment>& segs,
                   std::vector<WrittenRange>* out) {
  for (const Segment& s : segs) {
    if (!s.lost) continue;
    const uint64_t from = first_block + (s.buf_offset >> block_shift);
    const uint32_t n = s.len >> block_shift;
    if (!out->empty()) {
      WrittenRange& prev = out->back();
      if (prev.block + prev.blocks == from && prev.slot + prev.blocks == s.slot) {
        prev.blocks += n;
        continue;
      }
    }
    out->push_back(WrittenRange{from, n, s.slot});
  }
}

// Queue thread.
uint32_t FuaSyncDevices(const std::vector<Segment>& segs) {
  uint32_t devices = 0;
  for (const Segment& s : segs)
    if (s.zero_range) devices |= s.spare ? 2u : 1u;
  return devices;
}
