#include "remap_index.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace {
// Writer thread (construction): a table with no entries.
RemapIndex::Snapshot* EmptySnapshot() {
  auto* s = new RemapIndex::Snapshot();
  s->chunks.Assign(2);
  s->mask = 1;
  return s;
}
}  // namespace

// JS thread.
RemapIndex::RemapIndex(uint32_t readers)
    : current_(EmptySnapshot()), seen_(new std::atomic<uint64_t>[readers]), readers_(readers) {
  for (uint32_t i = 0; i < readers_; i++) seen_[i].store(kIdle, std::memory_order_relaxed);
}

// The owner's thread, after every reader has stopped.
RemapIndex::~RemapIndex() {
  for (auto& r : retired_) delete r.snap;
  delete current_.load();
}

// Reader thread `reader`. The seq_cst store pairs with Current()'s seq_cst load (see there).
void RemapIndex::Enter(uint32_t reader) {
  seen_[reader].store(epoch_.load(std::memory_order_seq_cst), std::memory_order_seq_cst);
}

// Reader thread `reader`.
void RemapIndex::Leave(uint32_t reader) { seen_[reader].store(kIdle, std::memory_order_seq_cst); }

namespace {
inline uint64_t HashChunk(uint64_t chunk) { return chunk * 0x9E3779B97F4A7C15ull; }
}  // namespace

// Writer thread.
void RemapIndex::ChunkArray::Assign(size_t n) {
  free(data);
  constexpr size_t kHuge = 2u << 20;
  size_t bytes = n * sizeof(ChunkSlot);
  size_t align = bytes >= kHuge ? kHuge : alignof(ChunkSlot);
  void* p = nullptr;
  if (posix_memalign(&p, std::max(align, sizeof(void*)), bytes) != 0) throw std::bad_alloc();
  if (bytes >= kHuge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: ignored where THP is off
  data = static_cast<ChunkSlot*>(p);
  size = n;
  for (size_t i = 0; i < n; i++) data[i] = ChunkSlot{kNoChunk, 0, 0};
}

// The owner of the snapshot.
RemapIndex::ChunkArray::~ChunkArray() { free(data); }

// Reader thread.
const RemapEntry* RemapIndex::FirstInRange(const Snapshot* s, uint64_t first, uint64_t end) {
  if (s->entries.empty() || first >= end) return nullptr;
  const uint64_t last_chunk = (end - 1) >> kChunkShift;
  for (uint64_t c = first >> kChunkShift; c <= last_chunk; c++) {
    for (uint64_t h = HashChunk(c) & s->mask;; h = (h + 1) & s->mask) {
      const ChunkSlot& slot = s->chunks[h];
      if (slot.chunk == kNoChunk) break;
      if (slot.chunk != c) continue;
      const RemapEntry* e = s->entries.data() + slot.first;
      const RemapEntry* stop = e + slot.count;
      while (e != stop && e->block < first) ++e;
      if (e != stop && e->block < end) return e;
      break;
    }
  }
  return nullptr;
}

// Writer thread: the chunk hash of a sorted table, at most half full.
static void BuildChunks(RemapIndex::Snapshot* s) {
  size_t distinct = 0;
  for (size_t i = 0; i < s->entries.size(); i++)
    if (i == 0 || (s->entries[i].block >> RemapIndex::kChunkShift) != (s->entries[i - 1].block >> RemapIndex::kChunkShift))
      distinct++;
  size_t cap = 2;
  while (cap < distinct * 2) cap <<= 1;
  s->chunks.Assign(cap);
  s->mask = cap - 1;
  for (size_t i = 0; i < s->entries.size();) {
    uint64_t c = s->entries[i].block >> RemapIndex::kChunkShift;
    size_t j = i;
    while (j < s->entries.size() && (s->entries[j].block >> RemapIndex::kChunkShift) == c) j++;
    uint64_t h = HashChunk(c) & s->mask;
    while (s->chunks[h].chunk != RemapIndex::kNoChunk) h = (h + 1) & s->mask;
    s->chunks[h] = RemapIndex::ChunkSlot{c, static_cast<uint32_t>(i), static_cast<uint32_t>(j - i)};
    i = j;
  }
}

// Writer thread.
void RemapIndex::Publish(std::vector<RemapEntry> entries) {
  auto* next = new Snapshot();
  next->entries = std::move(entries);
  BuildChunks(next);
  std::lock_guard<std::mutex> lock(writer_mu_);
  SwapLocked(next);
}

// Writer thread.
void RemapIndex::Update(const std::vector<RemapEntry>& delta) {
  std::lock_guard<std::mutex> lock(writer_mu_);
  // Only writers replace current_, and they hold writer_mu_: this snapshot stays alive while we copy it.
  const Snapshot* cur = current_.load(std::memory_order_acquire);
  auto* next = new Snapshot();
  std::vector<RemapEntry>& out = next->entries;
  out.reserve(cur->entries.size() + delta.size());
  auto from = cur->entries.begin();
  const auto end = cur->entries.end();
  for (const RemapEntry& d : delta) {
    auto at = std::lower_bound(from, end, d.block, [](const RemapEntry& e, uint64_t b) { return e.block < b; });
    out.insert(out.end(), from, at);  // the unchanged run before d
    from = at;
    if (from != end && from->block == d.block) ++from;  // d replaces or drops it
    if ((d.flags & kRemapRemove) == 0) out.push_back(d);
  }
  out.insert(out.end(), from, end);
  BuildChunks(next);
  SwapLocked(next);
}

// Writer thread, writer_mu_ held.
void RemapIndex::SwapLocked(Snapshot* next) {
  // Only writers change epoch_, under writer_mu_: the increment below makes it this value.
  next->generation = epoch_.load(std::memory_order_relaxed) + 1;
  const Snapshot* old = current_.exchange(next, std::memory_order_seq_cst);
  uint64_t e = epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
  retired_.push_back({old, e});
  Reclaim();
}

// Writer thread (writer_mu_ held by Publish, or called alone by the only writer).
void RemapIndex::Reclaim() {
  uint64_t oldest = kIdle;
  for (uint32_t i = 0; i < readers_; i++) oldest = std::min(oldest, seen_[i].load(std::memory_order_seq_cst));
  auto keep = std::remove_if(retired_.begin(), retired_.end(), [&](const Retired& r) {
    if (r.epoch > oldest) return false;
    delete r.snap;
    return true;
  });
  retired_.erase(keep, retired_.end());
}

// Writer thread.
size_t RemapIndex::RetiredCount() {
  std::lock_guard<std::mutex> lock(writer_mu_);
  return retired_.size();
}
