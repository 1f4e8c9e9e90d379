// RemapIndex: the data path's read-only mirror of the remap table that TypeScript owns.
//
// Readers are the queue threads and the scanner (ScanReader, on a libuv pool thread), each with its own
// reader slot; the writer is whichever thread TypeScript's updates arrive on (the JS thread). A
// lookup is lock-free: one acquire load of the current snapshot, then (unless the table is empty) one
// probe per 64-block chunk the request touches in an open-addressing hash of the chunks that hold
// remapped blocks; a hit points into the immutable array of entries sorted by block. A 4 KiB request
// thus costs about one cache miss whatever the table's size. A writer publishes a
// whole new snapshot and frees an old one only after every reader has passed a quiescent point
// (quiescent-state-based reclamation), so no reader ever sees freed memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

struct RemapEntry {
  uint64_t block;  // logical block on the exported device
  uint64_t slot;   // slot on the spare
  uint32_t flags;  // kRemapLost, kRemapMoving, kRemapRedirect
};

constexpr uint32_t kRemapLost = 1u << 0;    // data unrecoverable: reads fail until written
constexpr uint32_t kRemapMoving = 1u << 1;  // being moved: I/O touching it waits for the next table
// A failed write's redirect to the block's reserved slot, not committed yet: writes go to the slot (and are
// reported lost_written, as for a LOST block), reads wait for the next table (the commit maps the block
// there, or the redirect is given up and the block is on main again).
constexpr uint32_t kRemapRedirect = 1u << 2;
constexpr uint32_t kRemapRemove = 1u << 31;  // in an update only: the block's entry is dropped

class RemapIndex {
 public:
  static constexpr unsigned kChunkShift = 6;  // 64 blocks per chunk

  struct ChunkSlot {
    uint64_t chunk;  // kNoChunk when the slot is free
    uint32_t first;  // index of the chunk's first entry in `entries`
    uint32_t count;
  };
  static constexpr uint64_t kNoChunk = ~0ull;

  // Memory for the chunk hash: 2 MiB aligned and advised as huge pages, so that a probe into a large
  // table costs a cache miss but rarely a TLB miss too.
  struct ChunkArray {
    ChunkSlot* data = nullptr;
    size_t size = 0;
    ChunkArray() = default;
    ChunkArray(const ChunkArray&) = delete;
    ChunkArray& operator=(const ChunkArray&) = delete;
    ~ChunkArray();
    void Assign(size_t n);  // n free slots
    ChunkSlot& operator[](size_t i) { return data[i]; }
    const ChunkSlot& operator[](size_t i) const { return data[i]; }
  };

  struct Snapshot {
    // Which publish this is: 1 for the empty table of construction, then one more per Publish/Update.
    // Set before the snapshot is made current, never changed after.
    uint64_t generation = 1;
    std::vector<RemapEntry> entries;  // sorted by block, unique
    ChunkArray chunks;                // power-of-two sized hash of the non-empty chunks
    uint64_t mask = 0;
  };

  // JS thread (construction). `readers` is the number of reader slots (the queue threads, then the
  // scanner's) that will call Enter/Leave.
  explicit RemapIndex(uint32_t readers);
  ~RemapIndex();

  // Reader thread `reader` (a queue thread, or the scanner's pool thread): marks the start of a section in
  // which it may dereference snapshots.
  void Enter(uint32_t reader);
  // Reader thread `reader`: marks that it holds no snapshot pointer (before blocking in the kernel).
  void Leave(uint32_t reader);
  // Reader thread, between Enter and Leave: the current snapshot (never null).
  //
  // seq_cst, not acquire: Enter's store to seen_ and this load form a store-then-load pair against the
  // writer's exchange of current_ then load of seen_ (SwapLocked, Reclaim). Only if all four are seq_cst
  // is it impossible that the reader loads the old snapshot while the writer still reads its seen_ as idle
  // and frees it (the store-buffering outcome). An acquire load may be ordered before the earlier store on
  // weakly ordered CPUs (ARM64 LDAPR, used for acquire loads from armv8.3); a seq_cst load (LDAR) may not.
  // On x86 both are one plain load.
  const Snapshot* Current() const { return current_.load(std::memory_order_seq_cst); }
  // The writer's thread (the JS thread), or any thread for a value that may be stale: the generation of
  // the table published last (Snapshot::generation of Current() once a publish has returned).
  uint64_t Generation() const { return epoch_.load(std::memory_order_seq_cst); }

  // Reader thread, between Enter and Leave: the first entry with first <= block < end, or nullptr.
  static const RemapEntry* FirstInRange(const Snapshot* s, uint64_t first, uint64_t end);

  // Writer (any one thread at a time): replaces the table; `entries` must be sorted and unique.
  void Publish(std::vector<RemapEntry> entries);
  // Writer (any one thread at a time): publishes the current table changed by `delta` (sorted, unique):
  // an entry replaces the block's entry or adds one; an entry flagged kRemapRemove drops the block's
  // entry (nothing to do where it has none). Costs a copy of the table, not a rebuild from TypeScript.
  void Update(const std::vector<RemapEntry>& delta);
  // Writer: frees retired snapshots no reader can still hold.
  void Reclaim();
  // Writer: how many retired snapshots are not freed yet (a reader still in a section entered before they
  // were retired holds them).
  size_t RetiredCount();

 private:
  struct Retired {
    const Snapshot* snap;
    uint64_t epoch;
  };
  static constexpr uint64_t kIdle = ~0ull;

  // Writer, writer_mu_ held: makes `next` current and retires the snapshot it replaces.
  void SwapLocked(Snapshot* next);

  std::atomic<const Snapshot*> current_;
  std::atomic<uint64_t> epoch_{1};
  std::unique_ptr<std::atomic<uint64_t>[]> seen_;
  uint32_t readers_;
  std::mutex writer_mu_;
  std::vector<Retired> retired_;
};
