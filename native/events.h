// EventSink: carries events from the queue threads to a JS callback through a ThreadSafeFunction.
// Queue threads only append plain C++ structs under a mutex; N-API values are made on the JS thread.
#pragma once

#include <napi.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

struct Event {
  enum class Type { kQueueStarted, kQueueStopped, kIoError };
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
