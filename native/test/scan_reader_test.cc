// Unit tests of the scanner's planning and reads (native/scan_reader.*), run on the host: no kernel, no ublk.
// The reads go to regular files (opened without O_DIRECT: the logic under test is the plan, the skips, the
// per-piece errors, a move going on beside a blocked piece, the busy refusal, the cancel and the call's bounds, not the page
// cache). A test pread (ScanReader's injected PreadFn) blocks, slows or fails chosen pieces. Built by
// `npm run build` as build/Release/scan_reader_test and run by test/unit/native-scan-reader.test.ts; exits
// non-zero when a check fails, naming it on stderr.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "../remap_index.h"
#include "../scan_reader.h"
#include "../sys_error.h"

// Allocation failure on demand (the planning's allocation throwing bad_alloc): any thread, while set.
std::atomic<bool> g_fail_new{false};

void* operator new(std::size_t n) {
  if (g_fail_new.load()) throw std::bad_alloc();
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

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
  PlanScan(0, 256, ~0u, 0, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(1));
  Piece(segs, 0, false, 0, 256, 0, ScanSkip::kNone);
  index.Leave(0);

  // 10-11 mapped at slots 3-4, 12 mapped at slot 9, 20 MOVING at slot 5, 21 LOST at slot 6, 30 mapped at 7.
  index.Publish({{10, 3, 0}, {11, 4, 0}, {12, 9, 0}, {20, 5, kRemapMoving}, {21, 6, kRemapLost}, {30, 7, 0}});
  index.Enter(0);
  current = "main runs, spare runs split where slots stop being consecutive, MOVING and LOST skipped";
  PlanScan(8, 32, ~0u, 0, Geo(), index.Current(), &segs);
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

  current = "a REDIRECT block (a failed write's reserved slot) is skipped as MOVING: read again later";
  index.Leave(0);
  index.Update({{25, 8, kRemapRedirect}});
  index.Enter(0);
  PlanScan(24, 27, ~0u, 0, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(3));
  Piece(segs, 0, false, 24, 1, 24 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 25, 1, kSpareData + 8 * kBs, ScanSkip::kMoving);
  Piece(segs, 2, false, 26, 1, 26 * kBs, ScanSkip::kNone);
  index.Leave(0);
  index.Update({{25, 0, kRemapRemove}});
  index.Enter(0);

  current = "a range starting inside a spare run and ending on a remapped block";
  PlanScan(11, 13, ~0u, 0, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(2));
  Piece(segs, 0, true, 11, 1, kSpareData + 4 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 12, 1, kSpareData + 9 * kBs, ScanSkip::kNone);

  current = "narrow: one piece per block, a spare run's slots counted on";
  PlanScan(9, 12, 1, 0, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(3));
  Piece(segs, 0, false, 9, 1, 9 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 10, 1, kSpareData + 3 * kBs, ScanSkip::kNone);
  Piece(segs, 2, true, 11, 1, kSpareData + 4 * kBs, ScanSkip::kNone);

  current = "aligned: no piece crosses a multiple of align_blocks (8), main and spare runs alike, max_blocks still holds";
  PlanScan(6, 32, 5, 8, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(13));
  Piece(segs, 0, false, 6, 2, 6 * kBs, ScanSkip::kNone);
  Piece(segs, 1, false, 8, 2, 8 * kBs, ScanSkip::kNone);
  Piece(segs, 2, true, 10, 2, kSpareData + 3 * kBs, ScanSkip::kNone);
  Piece(segs, 3, true, 12, 1, kSpareData + 9 * kBs, ScanSkip::kNone);
  Piece(segs, 4, false, 13, 3, 13 * kBs, ScanSkip::kNone);
  Piece(segs, 5, false, 16, 4, 16 * kBs, ScanSkip::kNone);
  Piece(segs, 6, true, 20, 1, kSpareData + 5 * kBs, ScanSkip::kMoving);
  Piece(segs, 7, true, 21, 1, kSpareData + 6 * kBs, ScanSkip::kLost);
  Piece(segs, 8, false, 22, 2, 22 * kBs, ScanSkip::kNone);
  Piece(segs, 9, false, 24, 5, 24 * kBs, ScanSkip::kNone);
  Piece(segs, 10, false, 29, 1, 29 * kBs, ScanSkip::kNone);
  Piece(segs, 11, true, 30, 1, kSpareData + 7 * kBs, ScanSkip::kNone);
  Piece(segs, 12, false, 31, 1, 31 * kBs, ScanSkip::kNone);
  index.Leave(0);
}

// Main thread. From the review of a8bf37c: a spare run of consecutive slots that crosses a multiple of
// align_blocks is split there, and each part reads the slots of its own blocks (the slot arithmetic of a
// split spare run), with max_blocks splitting too; a MOVING run crossing it is skipped in two pieces.
void TestAlignedSpareRun() {
  RemapIndex index(1);
  std::vector<ScanSegment> segs;
  // 13..19 at slots 40..46 (one run); 30..33 MOVING at slots 50..53.
  index.Publish({{13, 40, 0}, {14, 41, 0}, {15, 42, 0}, {16, 43, 0}, {17, 44, 0}, {18, 45, 0}, {19, 46, 0},
                 {30, 50, kRemapMoving}, {31, 51, kRemapMoving}, {32, 52, kRemapMoving}, {33, 53, kRemapMoving}});
  index.Enter(0);
  current = "a spare run across an align boundary: split there and by max_blocks, each part at its own slots";
  PlanScan(12, 36, 2, 8, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(13));
  Piece(segs, 0, false, 12, 1, 12 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 13, 2, kSpareData + 40 * kBs, ScanSkip::kNone);
  Piece(segs, 2, true, 15, 1, kSpareData + 42 * kBs, ScanSkip::kNone);
  Piece(segs, 3, true, 16, 2, kSpareData + 43 * kBs, ScanSkip::kNone);
  Piece(segs, 4, true, 18, 2, kSpareData + 45 * kBs, ScanSkip::kNone);
  Piece(segs, 5, false, 20, 2, 20 * kBs, ScanSkip::kNone);
  Piece(segs, 6, false, 22, 2, 22 * kBs, ScanSkip::kNone);
  Piece(segs, 7, false, 24, 2, 24 * kBs, ScanSkip::kNone);
  Piece(segs, 8, false, 26, 2, 26 * kBs, ScanSkip::kNone);
  Piece(segs, 9, false, 28, 2, 28 * kBs, ScanSkip::kNone);
  Piece(segs, 10, true, 30, 2, kSpareData + 50 * kBs, ScanSkip::kMoving);
  Piece(segs, 11, true, 32, 2, kSpareData + 52 * kBs, ScanSkip::kMoving);
  Piece(segs, 12, false, 34, 2, 34 * kBs, ScanSkip::kNone);

  current = "the same run with no max_blocks: split only at the boundary";
  PlanScan(13, 20, ~0u, 8, Geo(), index.Current(), &segs);
  CHECK_EQ(segs.size(), size_t(2));
  Piece(segs, 0, true, 13, 3, kSpareData + 40 * kBs, ScanSkip::kNone);
  Piece(segs, 1, true, 16, 4, kSpareData + 43 * kBs, ScanSkip::kNone);

  current = "kScanAlignBytes in 512-byte and 4 KiB blocks is whole blocks";
  CHECK_EQ(kScanAlignBytes % 512, 0u);
  CHECK_EQ((kScanAlignBytes >> 9) << 9, kScanAlignBytes);
  CHECK_EQ((kScanAlignBytes >> 12) << 12, kScanAlignBytes);
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

// Main thread. Dups of `main_fd` and `spare_fd`, as Device::ScanRead hands them to a Read (-1 stays -1).
std::function<ScanFds()> Dups(int main_fd, int spare_fd, std::atomic<int>* opened = nullptr) {
  return [=] {
    if (opened) opened->fetch_add(1);
    ScanFds f;
    f.main = main_fd >= 0 ? dup(main_fd) : -1;
    f.spare = spare_fd >= 0 ? dup(spare_fd) : -1;
    return f;
  };
}

// Main thread.
void TestRead() {
  // main: 16 blocks; spare: slot area from kSpareData, 8 slots. Block 3 is remapped to slot 2, block 5 MOVING,
  // block 6 LOST; the spare is too short for slot 7 (a read there fails: past the end).
  int main_fd = TempFile(16 * kBs);
  int spare_fd = TempFile(kSpareData + 7 * kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo(), 64 * kBs);
  index.Publish({{3, 2, 0}, {5, 4, kRemapMoving}, {6, 5, kRemapLost}, {9, 7, 0}});
  ScanResult r;
  current = "a read: main and spare pieces read, MOVING and LOST skipped, a failed piece carries its errno";
  reader.Read(0, 12 * kBs, false, Dups(main_fd, spare_fd), &r);
  const std::vector<ScanSegment>& segs = r.segments;
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
  CHECK_EQ(r.covered_bytes, uint32_t(12 * kBs));
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kNone));

  current = "every piece and the result carry the generation of the table they were planned against";
  CHECK_EQ(index.Generation(), uint64_t(2));
  CHECK_EQ(r.generation, uint64_t(2));
  for (const ScanSegment& s : segs) CHECK_EQ(s.generation, uint64_t(2));

  current = "a read of a bad fd fails its pieces with EBADF, not the call";
  reader.Read(0, 2 * kBs, false, Dups(-1, spare_fd), &r);
  CHECK_EQ(r.segments.size(), size_t(1));
  if (r.segments.size() == 1) CHECK_EQ(r.segments[0].err, EBADF);

  current = "the next read plans against the table published since";
  index.Publish({});
  index.Publish({{1, 1, 0}});
  index.Reclaim();
  reader.Read(0, 2 * kBs, false, Dups(main_fd, spare_fd), &r);
  CHECK_EQ(r.segments.size(), size_t(2));
  Piece(r.segments, 1, true, 1, 1, kSpareData + kBs, ScanSkip::kNone);
  CHECK_EQ(r.generation, uint64_t(4));

  current = "a piece is at most max_piece_bytes: a long main run is read in pieces of that size";
  ScanReader small(&index, 1, Geo(), 4 * kBs);
  index.Publish({});
  small.Read(0, 10 * kBs, false, Dups(main_fd, spare_fd), &r);
  CHECK_EQ(r.segments.size(), size_t(3));
  Piece(r.segments, 0, false, 0, 4, 0, ScanSkip::kNone);
  Piece(r.segments, 1, false, 4, 4, 4 * kBs, ScanSkip::kNone);
  Piece(r.segments, 2, false, 8, 2, 8 * kBs, ScanSkip::kNone);
  close(main_fd);
  close(spare_fd);
}

// The test pread: counts calls; the call numbered `block_call` (1-based) waits until released; reads of
// blocks in [fail_first, fail_end) fail with EIO.
struct TestPread {
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0;
  int block_call = 0;
  bool blocked = false;
  bool released = false;
  uint64_t fail_first = 0;
  uint64_t fail_end = 0;

  void Reset() {
    std::lock_guard<std::mutex> l(mu);
    calls = block_call = 0;
    blocked = released = false;
    fail_first = fail_end = 0;
  }
  // Main thread: waits until the blocking call has started.
  void WaitBlocked() {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [this] { return blocked; });
  }
  // Any thread.
  void Release() {
    std::lock_guard<std::mutex> l(mu);
    released = true;
    cv.notify_all();
  }
  int Calls() {
    std::lock_guard<std::mutex> l(mu);
    return calls;
  }
};
TestPread g_pread;

// The Read's thread.
ssize_t InjectedPread(int fd, void* buf, size_t count, off_t offset) {
  {
    std::unique_lock<std::mutex> l(g_pread.mu);
    const int n = ++g_pread.calls;
    if (n == g_pread.block_call) {
      g_pread.blocked = true;
      g_pread.cv.notify_all();
      g_pread.cv.wait(l, [] { return g_pread.released; });
    }
    const uint64_t block = static_cast<uint64_t>(offset) >> kShift;
    if (block < g_pread.fail_end && block + (count >> kShift) > g_pread.fail_first) {
      errno = EIO;
      return -1;
    }
  }
  return pread(fd, buf, count, offset);
}

using Clock = std::chrono::steady_clock;
int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Main thread. A move (publish MOVING, drain, copy, publish the result) goes on while a scan piece is blocked
// in its read: nothing of the move waits for the scanner (Device::Drain waits for user requests only, and
// the piece holds no table while it reads). The piece's result names the generation it was planned
// against, older than the table's once the move published, and the pieces after it read the new table.
void TestMoveDuringPiece() {
  int main_fd = TempFile(16 * kBs);
  int spare_fd = TempFile(kSpareData + kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo(), 64 * kBs, InjectedPread);
  g_pread.Reset();
  g_pread.block_call = 2;  // block 1's read: blocked until released, like a read in a drive's error recovery
  ScanResult r;
  std::atomic<bool> read_done{false};
  std::thread a([&] {
    reader.Read(0, 8 * kBs, true, Dups(main_fd, spare_fd), &r);
    read_done.store(true);
  });
  g_pread.WaitBlocked();
  current = "a move's publishes return while the piece is blocked, and the tables they retire are freed";
  auto t0 = Clock::now();
  index.Publish({{5, 0, kRemapMoving}});  // the move's MOVING publish (then its drain, then its copy)
  index.Publish({{5, 0, 0}});             // the move's result: block 5 in slot 0
  index.Reclaim();
  CHECK_EQ(index.RetiredCount(), size_t(0));
  CHECK_EQ(MsSince(t0) < 200, true);
  CHECK_EQ(read_done.load(), false);
  CHECK_EQ(g_pread.Calls(), 2);
  g_pread.Release();
  a.join();
  current = "the piece in flight carries the older generation, and so does the result; later pieces read the new table";
  CHECK_EQ(index.Generation(), uint64_t(3));
  CHECK_EQ(r.generation, uint64_t(1));
  CHECK_EQ(r.segments.size(), size_t(8));
  if (r.segments.size() == 8) {
    Piece(r.segments, 1, false, 1, 1, kBs, ScanSkip::kNone);
    CHECK_EQ(r.segments[0].generation, uint64_t(1));
    CHECK_EQ(r.segments[1].generation, uint64_t(1));
    for (size_t i = 2; i < 8; i++) CHECK_EQ(r.segments[i].generation, uint64_t(3));
    Piece(r.segments, 5, true, 5, 1, kSpareData, ScanSkip::kNone);
    for (const ScanSegment& s : r.segments) CHECK_EQ(s.err, 0);
  }
  CHECK_EQ(g_pread.Calls(), 8);
  close(main_fd);
  close(spare_fd);
}

// Main thread. A second Read while one runs is refused at once (no pool thread waits); Cancel stops the
// running one before its next piece and returns once it has returned and closed its fds.
void TestBusyAndCancel() {
  int main_fd = TempFile(16 * kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo(), 64 * kBs, InjectedPread);
  g_pread.Reset();
  g_pread.block_call = 2;
  ScanResult r;
  std::atomic<int> opened{0};
  ScanFds used;
  int err = 0;
  std::thread a([&] {
    try {
      reader.Read(0, 8 * kBs, true,
                  [&] {
                    used = Dups(main_fd, main_fd)();
                    return used;
                  },
                  &r);
    } catch (const SysError& e) {
      err = e.err();
    }
  });
  g_pread.WaitBlocked();

  current = "a second read while one runs is refused with EBUSY at once, and opens no fd";
  ScanResult r2;
  int err2 = 0;
  auto t0 = Clock::now();
  try {
    reader.Read(0, kBs, false, Dups(main_fd, main_fd, &opened), &r2);
  } catch (const SysError& e) {
    err2 = e.err();
  }
  CHECK_EQ(err2, EBUSY);
  CHECK_EQ(MsSince(t0) < 50, true);
  CHECK_EQ(opened.load(), 0);

  current = "a cancel waits for the piece in flight (bounded)";
  CHECK_EQ(reader.Cancel(Clock::now() + std::chrono::milliseconds(30)), false);
  current = "a cancel returns once the read has returned: no further pread, the read fails ENODEV, its fds closed";
  std::thread releaser([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    g_pread.Release();
  });
  t0 = Clock::now();
  CHECK_EQ(reader.Cancel(Clock::now() + std::chrono::seconds(5)), true);
  CHECK_EQ(MsSince(t0) >= 40, true);
  CHECK_EQ(g_pread.Calls(), 2);
  CHECK_EQ(fcntl(used.main, F_GETFD) == -1 && errno == EBADF, true);
  CHECK_EQ(fcntl(used.spare, F_GETFD) == -1 && errno == EBADF, true);
  releaser.join();
  a.join();
  CHECK_EQ(err, ENODEV);

  current = "a cancelled reader refuses a read with ENODEV, and takes them again once reopened";
  err2 = 0;
  try {
    reader.Read(0, kBs, false, Dups(main_fd, main_fd, &opened), &r2);
  } catch (const SysError& e) {
    err2 = e.err();
  }
  CHECK_EQ(err2, ENODEV);
  CHECK_EQ(opened.load(), 0);
  reader.Reopen();
  g_pread.Reset();
  reader.Read(0, kBs, false, Dups(main_fd, main_fd, &opened), &r2);
  CHECK_EQ(r2.segments.size(), size_t(1));
  CHECK_EQ(opened.load(), 1);
  close(main_fd);
}

// Main thread. A call is bounded: a narrow one covers kScanNarrowMaxBytes at most, any one stops after
// kScanMaxFailures failed reads; the result says how far it got.
void TestBounds() {
  const uint64_t blocks = 2 * (kScanNarrowMaxBytes >> kShift);
  int main_fd = TempFile(blocks * kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo(), 64 * kBs, InjectedPread);
  ScanResult r;

  current = "a narrow call over more than the cap reads the cap and says so";
  g_pread.Reset();
  reader.Read(0, static_cast<uint32_t>(blocks * kBs), true, Dups(main_fd, -1), &r);
  CHECK_EQ(r.segments.size(), size_t(kScanNarrowMaxBytes >> kShift));
  CHECK_EQ(r.covered_bytes, kScanNarrowMaxBytes);
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kNarrowCap));

  current = "a narrow call over 64 failing blocks stops after the failure budget, its pieces covering what it read";
  g_pread.Reset();
  g_pread.fail_first = 8;
  g_pread.fail_end = 72;
  reader.Read(0, 80 * kBs, true, Dups(main_fd, -1), &r);
  CHECK_EQ(r.segments.size(), size_t(8 + kScanMaxFailures));
  CHECK_EQ(r.covered_bytes, uint32_t((8 + kScanMaxFailures) * kBs));
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kFailures));
  CHECK_EQ(g_pread.Calls(), int(8 + kScanMaxFailures));
  for (size_t i = 0; i < r.segments.size(); i++) {
    CHECK_EQ(r.segments[i].block, uint64_t(i));
    CHECK_EQ(r.segments[i].err, i < 8 ? 0 : EIO);
  }

  current = "a call whose last piece is the budget's last failure ends normally";
  g_pread.Reset();
  g_pread.fail_first = 0;
  g_pread.fail_end = kScanMaxFailures;
  reader.Read(0, kScanMaxFailures * kBs, true, Dups(main_fd, -1), &r);
  CHECK_EQ(r.covered_bytes, uint32_t(kScanMaxFailures * kBs));
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kNone));
  close(main_fd);
}

// Main thread. A wide call over more than one chunk (a run) ends with the chunk of its first failed read;
// a call inside one chunk reads on to its end (up to the failure budget).
void TestRunStopsAtFailedChunk() {
  const uint64_t align = kScanAlignBytes >> kShift;
  int main_fd = TempFile(3 * align * kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo(), 64 * kBs, InjectedPread);
  ScanResult r;

  current = "a run over three chunks failing in the second stops at the end of the second";
  g_pread.Reset();
  g_pread.fail_first = align + 44;
  g_pread.fail_end = align + 45;
  reader.Read(0, static_cast<uint32_t>(3 * align * kBs), false, Dups(main_fd, -1), &r);
  CHECK_EQ(r.covered_bytes, uint32_t(2 * align * kBs));
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kFailures));
  CHECK_EQ(r.segments.size(), size_t(2 * align / 64));
  CHECK_EQ(g_pread.Calls(), int(2 * align / 64));
  if (r.segments.size() > 4) CHECK_EQ(r.segments[4].err, EIO);

  current = "a run failing in its last chunk covers the whole range and says nothing stopped it";
  g_pread.Reset();
  g_pread.fail_first = 2 * align + 1;
  g_pread.fail_end = 2 * align + 2;
  reader.Read(align * kBs, static_cast<uint32_t>(2 * align * kBs), false, Dups(main_fd, -1), &r);
  CHECK_EQ(r.covered_bytes, uint32_t(2 * align * kBs));
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kNone));

  current = "a call inside one chunk reads on past a failed piece";
  g_pread.Reset();
  g_pread.fail_first = 10;
  g_pread.fail_end = 11;
  reader.Read(0, static_cast<uint32_t>(align * kBs), false, Dups(main_fd, -1), &r);
  CHECK_EQ(r.covered_bytes, uint32_t(align * kBs));
  CHECK_EQ(static_cast<int>(r.stopped), static_cast<int>(ScanStop::kNone));
  CHECK_EQ(g_pread.Calls(), int(align / 64));
  close(main_fd);
}

// Main thread. An allocation that fails while planning leaves the scanner's reader slot idle: snapshots
// retired afterwards are still freed.
void TestPlanThrowLeavesSlot() {
  int main_fd = TempFile(16 * kBs);
  RemapIndex index(2);
  ScanReader reader(&index, 1, Geo(), 64 * kBs);
  index.Publish({{3, 2, 0}});
  ScanResult r;
  auto fds = Dups(main_fd, main_fd);
  current = "a read whose planning throws bad_alloc";
  bool threw = false;
  g_fail_new.store(true);
  try {
    reader.Read(0, 8 * kBs, false, fds, &r);
  } catch (const std::bad_alloc&) {
    threw = true;
  }
  g_fail_new.store(false);
  CHECK_EQ(threw, true);
  current = "after it, publishes retire and free the old tables (the slot is not left entered)";
  index.Publish({});
  index.Publish({{4, 1, 0}});
  index.Reclaim();
  CHECK_EQ(index.RetiredCount(), size_t(0));
  current = "and the reader reads again";
  reader.Read(0, 8 * kBs, false, fds, &r);
  CHECK_EQ(r.segments.size(), size_t(3));
  close(main_fd);
}

}  // namespace

int main() {
  TestPlan();
  TestAlignedSpareRun();
  TestRead();
  TestMoveDuringPiece();
  TestBusyAndCancel();
  TestBounds();
  TestRunStopsAtFailedChunk();
  TestPlanThrowLeavesSlot();
  std::printf("scan_reader_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
