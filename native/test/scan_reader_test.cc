// Unit tests of the scanner's planning and reads (native/scan_reader.*), run on the host: no kernel, no ublk.
// The reads go to regular files (opened without O_DIRECT: the logic under test is the plan, the skips, the
// per-piece errors and the drain's wait, not the page cache). Built by `npm run build` as
// build/Release/scan_reader_test and run by test/unit/native-scan-reader.test.ts; exits non-zero when a
// check fails, naming it on stderr.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../remap_index.h"
#include "../scan_reader.h"

namespace {

int failures = 0;
int checks = 0;
std::string current;

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

constexpr uint32_t kShift = 12;  // 4 KiB blocks
constexpr uint64_t kBs = 1ull << kShift;
constexpr uint64_t kSpareData = 8 * kBs;

PlanGeometry Geo() {
  PlanGeometry g;
  g.block_shift = kShift;
  g.spare_data_offset = kSpareData;
  return g;
}

// Main thread. Checks one piece.
void Piece(const std::vector<ScanSegment>& segs, size_t i, bool spare, uint64_t block, uint32_t blocks, uint64_t dev_offset,
           ScanSkip skip) {
  CHECK_EQ(i < segs.size(), true);
  if (i >= segs.size()) return;
  CHECK_EQ(segs[i].spare, spare);
  CHECK_EQ(segs[i].block, block);
  CHECK_EQ(segs[i].blocks, blocks);
  CHECK_EQ(segs[i].dev_offset, dev_offset);
  CHECK_EQ(static_cast<int>(segs[i].skip), static_cast<int>(skip));
}

// Main thread.
void TestPlan() {
  RemapIndex index(1);
  std::vector<ScanSegment> segs;
  index.Enter(0);
  current = "an empty table: one main piece";
  PlanScan(0, 256, ~0u, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(1));
  Piece(segs, 0, false, 0, 256, 0, ScanSkip::kNone);
  index.Leave(0);

  // 10-11 mapped at slots 3-4, 12 mapped at slot 9, 20 MOVING at slot 5, 21 LOST at slot 6, 30 mapped at 7.
  index.Publish({{10, 3, 0}, {11, 4, 0}, {12, 9, 0}, {20, 5, kRemapMoving}, {21, 6, kRemapLost}, {30, 7, 0}});
  index.Enter(0);
  current = "main runs, spare runs split where slots stop being consecutive, MOVING and LOST skipped";
  PlanScan(8, 32, ~0u, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(9));
  Piece(segs, 0, false, 8, 2, 8 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 10, 2, kSpareData + 3 * kBs, ScanSkip::kNone);
  Piece(segs, 2, true, 12, 1, kSpareData + 9 * kBs, ScanSkip::kNone);
  Piece(segs, 3, false, 13, 7, 13 * kBs, ScanSkip::kNone);
  Piece(segs, 4, true, 20, 1, kSpareData + 5 * kBs, ScanSkip::kMoving);
  Piece(segs, 5, true, 21, 1, kSpareData + 6 * kBs, ScanSkip::kLost);
  Piece(segs, 6, false, 22, 8, 22 * kBs, ScanSkip::kNone);
  Piece(segs, 7, true, 30, 1, kSpareData + 7 * kBs, ScanSkip::kNone);
  Piece(segs, 8, false, 31, 1, 31 * kBs, ScanSkip::kNone);

  current = "a range starting inside a spare run and ending on a remapped block";
  PlanScan(11, 13, ~0u, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(2));
  Piece(segs, 0, true, 11, 1, kSpareData + 4 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 12, 1, kSpareData + 9 * kBs, ScanSkip::kNone);

  current = "narrow: one piece per block, a spare run's slots counted on";
  PlanScan(9, 12, 1, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(3));
  Piece(segs, 0, false, 9, 1, 9 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 10, 1, kSpareData + 3 * kBs, ScanSkip::kNone);
  Piece(segs, 2, true, 11, 1, kSpareData + 4 * kBs, ScanSkip::kNone);
  index.Leave(0);
}

// Main thread. A regular file of `bytes` bytes under /tmp (unlinked once open).
int TempFile(uint64_t bytes) {
  char name[] = "/tmp/scan-reader-test-XXXXXX";
  int fd = mkstemp(name);
  if (fd < 0 || unlink(name) < 0 || ftruncate(fd, static_cast<off_t>(bytes)) < 0) {
    std::perror("temp file");
    std::exit(2);
  }
  return fd;
}

// Main thread.
void TestRead() {
  // main: 16 blocks; spare: slot area from kSpareData, 8 slots. Block 3 is remapped to slot 2, block 5 MOVING,
  // block 6 LOST; the spare is too short for slot 7 (a read there fails: past the end).
  int main_fd = TempFile(16 * kBs);
  int spare_fd = TempFile(kSpareData + 7 * kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo());
  index.Publish({{3, 2, 0}, {5, 4, kRemapMoving}, {6, 5, kRemapLost}, {9, 7, 0}});
  std::vector<ScanSegment> segs;
  current = "a read: main and spare pieces read, MOVING and LOST skipped, a failed piece carries its errno";
  reader.Read(0, 12 * kBs, false, main_fd, spare_fd, &segs);
  CHECK_EQ(segs.size(), size_t(8));
  Piece(segs, 0, false, 0, 3, 0, ScanSkip::kNone);
  Piece(segs, 1, true, 3, 1, kSpareData + 2 * kBs, ScanSkip::kNone);
  Piece(segs, 2, false, 4, 1, 4 * kBs, ScanSkip::kNone);
  Piece(segs, 3, true, 5, 1, kSpareData + 4 * kBs, ScanSkip::kMoving);
  Piece(segs, 4, true, 6, 1, kSpareData + 5 * kBs, ScanSkip::kLost);
  Piece(segs, 5, false, 7, 2, 7 * kBs, ScanSkip::kNone);
  Piece(segs, 6, true, 9, 1, kSpareData + 7 * kBs, ScanSkip::kNone);
  Piece(segs, 7, false, 10, 2, 10 * kBs, ScanSkip::kNone);
  if (segs.size() == 8) {
    for (size_t i : {0, 1, 2, 3, 4, 5, 7}) CHECK_EQ(segs[i].err, 0);
    CHECK_EQ(segs[6].err, EIO);
    CHECK_EQ(segs[3].latency_us, 0u);
  }

  current = "a read of a bad fd fails its pieces with EBADF, not the call";
  reader.Read(0, 2 * kBs, false, -1, spare_fd, &segs);
  CHECK_EQ(segs.size(), size_t(1));
  if (segs.size() == 1) CHECK_EQ(segs[0].err, EBADF);

  current = "the next read plans against the table published since";
  index.Publish({});
  index.Publish({{1, 1, 0}});
  index.Reclaim();
  reader.Read(0, 2 * kBs, false, main_fd, spare_fd, &segs);
  CHECK_EQ(segs.size(), size_t(2));
  Piece(segs, 1, true, 1, 1, kSpareData + kBs, ScanSkip::kNone);

  current = "WaitIdle answers at once when no scan read runs";
  CHECK_EQ(reader.WaitIdle(std::chrono::steady_clock::now() + std::chrono::milliseconds(1)), true);
  close(main_fd);
  close(spare_fd);
}

}  // namespace

int main() {
  TestPlan();
  TestRead();
  std::printf("scan_reader_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
