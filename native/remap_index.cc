#include "remap_index.h"

#include <algorithm>

// JS thread.
RemapIndex::RemapIndex(uint32_t readers)
    : current_(new Snapshot()), seen_(new std::atomic<uint64_t>[readers]), readers_(readers) {
  for (uint32_t i = 0; i < readers_; i++) seen_[i].store(kIdle, std::memory_order_relaxed);
}

// The owner's thread, after every reader has stopped.
RemapIndex::~RemapIndex() {
  for (auto& r : retired_) delete r.snap;
  delete current_.load();
}

// Queue thread `reader`.
void RemapIndex::Enter(uint32_t reader) {
  seen_[reader].store(epoch_.load(std::memory_order_seq_cst), std::memory_order_seq_cst);
}

// Queue thread `reader`.
void RemapIndex::Leave(uint32_t reader) { seen_[reader].store(kIdle, std::memory_order_seq_cst); }

// Queue thread.
const RemapEntry* RemapIndex::LowerBound(const Snapshot* s, uint64_t first) {
  auto it = std::lower_bound(s->entries.begin(), s->entries.end(), first,
                             [](const RemapEntry& e, uint64_t b) { return e.block < b; });
  return it == s->entries.end() ? nullptr : &*it;
}

// Writer thread.
void RemapIndex::Publish(std::vector<RemapEntry> entries) {
  auto* next = new Snapshot{std::move(entries)};
  std::lock_guard<std::mutex> lock(writer_mu_);
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
