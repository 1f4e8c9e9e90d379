// Bench-only executable (not part of the addon): the data path's remap lookup for one 4 KiB request
// (8 blocks of 512 bytes) against a table of `entries` remapped blocks spread over a 1 TiB device.
//   lookup_bench <entries> <lookups>
// prints one JSON line: {"entries":N,"lookups":N,"nsPerLookup":X,"hits":N}. Run by bench/lookup.mjs.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../remap_index.h"

// Main thread (the only one).
int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: lookup_bench <entries> <lookups>\n");
    return 2;
  }
  const uint64_t n = std::strtoull(argv[1], nullptr, 10);
  const uint64_t lookups = std::strtoull(argv[2], nullptr, 10);
  const uint64_t dev_blocks = (1ull << 40) / 512;
  RemapIndex index(1);
  std::vector<RemapEntry> entries(n);
  const uint64_t stride = n ? dev_blocks / n : 0;
  for (uint64_t i = 0; i < n; i++) entries[i] = RemapEntry{i * stride + (i * 7919ull) % (stride ? stride : 1), i, 0};
  index.Publish(std::move(entries));
  uint64_t x = 88172645463325252ull, hits = 0;
  index.Enter(0);
  const auto t0 = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < lookups; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const uint64_t first = x % (dev_blocks - 8);
    if (RemapIndex::FirstInRange(index.Current(), first, first + 8)) hits++;
  }
  const auto t1 = std::chrono::steady_clock::now();
  index.Leave(0);
  const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / double(lookups ? lookups : 1);
  std::printf("{\"entries\":%llu,\"lookups\":%llu,\"nsPerLookup\":%.3f,\"hits\":%llu}\n",
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(lookups), ns,
              static_cast<unsigned long long>(hits));
  return 0;
}
