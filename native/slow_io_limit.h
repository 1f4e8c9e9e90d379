// SlowIoLimiter: bounds the slow_io events one queue reports, so that a main slow everywhere cannot flood
// the JS thread with one event per request. A fixed one-second window admits at most `per_second` events;
// the ones refused are counted, and the count is carried on the next admitted event (then reset), so the
// JS side still knows how many slow reads it did not see. Plain data: no locks, no clock of its own.
#pragma once

#include <cstdint>

// Slow reads one queue reports per second at most (the rest are counted in the next event's `dropped`).
constexpr uint32_t kSlowIoEventsPerSecond = 16;

class SlowIoLimiter {
 public:
  // Owner thread (the queue's constructor).
  explicit SlowIoLimiter(uint32_t per_second) : per_second_(per_second) {}

  // Queue thread (the only user). `now_ns`: a monotonic clock. True when an event may be pushed now; then
  // *dropped is the number of events refused since the previous admitted one (and that count starts over).
  // False: the event is refused and counted.
  bool Admit(uint64_t now_ns, uint64_t* dropped) {
    if (!started_ || now_ns - window_start_ns_ >= kWindowNs) {
      started_ = true;
      window_start_ns_ = now_ns;
      in_window_ = 0;
    }
    if (in_window_ >= per_second_) {
      refused_++;
      return false;
    }
    in_window_++;
    *dropped = refused_;
    refused_ = 0;
    return true;
  }

 private:
  static constexpr uint64_t kWindowNs = 1000000000ull;
  uint32_t per_second_;
  bool started_ = false;
  uint64_t window_start_ns_ = 0;
  uint32_t in_window_ = 0;
  uint64_t refused_ = 0;
};
