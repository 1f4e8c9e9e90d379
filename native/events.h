// EventSink: carries events from the queue threads to a JS callback through a ThreadSafeFunction.
// Queue threads only append plain C++ structs under a mutex; N-API values are made on the JS thread.
#pragma once

#include <napi.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "request_plan.h"

struct Event {
  enum class Type { kQueueStarted, kQueueStopped, kIoError, kIoFault, kFaultCleared, kSlowIo };
  enum class FaultKind : uint8_t { kError, kLostWritten };
  Type type = Type::kIoError;
  uint32_t queue = 0;
  int tid = 0;
  std::string reason;
  uint8_t op = 0;      // ublk::kOp*
  bool spare = false;  // failed on the spare rather than main
  uint64_t sector = 0;
  uint32_t sectors = 0;
  int err = 0;  // positive errno
  uint64_t latency_us = 0;
  // io_fault and fault_cleared.
  uint32_t tag = 0;
  uint64_t seq = 0;
  FaultKind fault_kind = FaultKind::kError;
  uint64_t block = 0;  // the request: first block and length in blocks (io_fault, slow_io)
  uint32_t blocks = 0;
  // slow_io: the queue's requests in flight at the completion (this one included), and the slow reads
  // this queue did not report since its previous slow_io (SlowIoLimiter).
  uint32_t inflight = 0;
  uint64_t dropped = 0;
  uint32_t attempt = 0;
  uint32_t attempts = 0;  // fault_cleared: submissions made, the successful one included
  std::vector<FaultRange> failed;
  std::vector<WrittenRange> written;  // lost_written: where each LOST block's data went
};

class EventSink {
 public:
  // JS thread. `callback` receives one plain object per event.
  static EventSink* Create(Napi::Env env, Napi::Function callback);

  // Any thread. Never blocks on JS; never drops an event while the sink is open.
  void Push(Event ev);
  // JS thread. No Push may follow. The sink deletes itself once the queued calls have run.
  void Close();

 private:
  EventSink() = default;
  // JS thread: drains the pending events into the callback.
  void Drain(Napi::Env env, Napi::Function callback);

  std::mutex mu_;
  std::vector<Event> pending_;
  bool scheduled_ = false;
  bool closed_ = false;
  Napi::ThreadSafeFunction tsfn_;
};

// JS thread. Name of an I/O op as the TypeScript side spells it.
const char* OpName(uint8_t op);
