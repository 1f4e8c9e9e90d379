// Unit tests of the slow_io event limiter (native/slow_io_limit.h), run on the host. Built by `npm run build`
// as build/Release/slow_io_limit_test and run by test/unit/native-slow-io-limit.test.ts; exits non-zero
// when a check fails, naming it on stderr.
#include <cstdint>
#include <cstdio>

#include "../slow_io_limit.h"

namespace {

int failures = 0;
int checks = 0;

// Main thread (the only one).
void Check(bool ok, const char* what, int line) {
  checks++;
  if (ok) return;
  failures++;
  std::fprintf(stderr, "slow_io_limit_test.cc:%d: %s\n", line, what);
}
#define CHECK(x) Check((x), #x, __LINE__)

constexpr uint64_t kSec = 1000000000ull;

// Main thread.
void AdmitsUpToTheLimitPerSecond() {
  SlowIoLimiter l(3);
  uint64_t dropped = 99;
  const uint64_t t0 = 5 * kSec;
  CHECK(l.Admit(t0, &dropped));
  CHECK(dropped == 0);
  CHECK(l.Admit(t0 + 1, &dropped));
  CHECK(l.Admit(t0 + 2, &dropped));
  // The 4th and 5th in the same second are refused and counted.
  dropped = 99;
  CHECK(!l.Admit(t0 + 3, &dropped));
  CHECK(!l.Admit(t0 + kSec - 1, &dropped));
  CHECK(dropped == 99);  // untouched when refused
  // The next window admits again and carries the count of the refused ones, once.
  CHECK(l.Admit(t0 + kSec, &dropped));
  CHECK(dropped == 2);
  CHECK(l.Admit(t0 + kSec + 1, &dropped));
  CHECK(dropped == 0);
}

// Main thread.
void FloodIsBounded() {
  SlowIoLimiter l(kSlowIoEventsPerSecond);
  uint64_t dropped = 0, admitted = 0, carried = 0;
  // 100000 slow reads spread over 10 seconds: at most 16 events per second get through.
  for (uint64_t i = 0; i < 100000; i++) {
    if (l.Admit(i * (10 * kSec / 100000), &dropped)) {
      admitted++;
      carried += dropped;
    }
  }
  CHECK(admitted == 10 * kSlowIoEventsPerSecond);
  // Every refused event is carried by a later admitted one, except those after the last admitted.
  CHECK(carried + admitted <= 100000);
  CHECK(carried >= 100000 - admitted - 100000 / 10);
}

// Main thread.
void FirstCallAtTimeZero() {
  SlowIoLimiter l(1);
  uint64_t dropped = 7;
  CHECK(l.Admit(0, &dropped));
  CHECK(dropped == 0);
  CHECK(!l.Admit(1, &dropped));
}

}  // namespace

// Main thread.
int main() {
  AdmitsUpToTheLimitPerSecond();
  FloodIsBounded();
  FirstCallAtTimeZero();
  std::printf("slow_io_limit_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
