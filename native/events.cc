#include "events.h"

#include "ublk_abi.h"

// JS thread.
const char* OpName(uint8_t op) {
  switch (op) {
    case ublk::kOpRead: return "read";
    case ublk::kOpWrite: return "write";
    case ublk::kOpFlush: return "flush";
    case ublk::kOpDiscard: return "discard";
    case ublk::kOpWriteZeroes: return "write_zeroes";
    default: return "unknown";
  }
}

// JS thread.
EventSink* EventSink::Create(Napi::Env env, Napi::Function callback) {
  auto* sink = new EventSink();
  sink->tsfn_ = Napi::ThreadSafeFunction::New(env, callback, "dmremap-events", 0, 1,
                                              [sink](Napi::Env) { delete sink; });
  sink->tsfn_.Unref(env);  // a device does not by itself keep the process alive
  return sink;
}

// Any thread.
void EventSink::Push(Event ev) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  pending_.push_back(std::move(ev));
  if (scheduled_) return;
  scheduled_ = true;
  tsfn_.NonBlockingCall([this](Napi::Env env, Napi::Function cb) { Drain(env, cb); });
}

// JS thread.
void EventSink::Drain(Napi::Env env, Napi::Function callback) {
  std::vector<Event> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(pending_);
    scheduled_ = false;
  }
  if (env == nullptr || callback.IsEmpty()) return;  // environment is being torn down
  // A throwing handler must not cost the other events their delivery: remember the first error, go on,
  // and raise it once the batch is delivered.
  Napi::Error first_error;
  for (const Event& ev : batch) {
    Napi::HandleScope scope(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("queue", Napi::Number::New(env, ev.queue));
    switch (ev.type) {
      case Event::Type::kQueueStarted:
        o.Set("type", "queue_started");
        o.Set("tid", Napi::Number::New(env, ev.tid));
        break;
      case Event::Type::kQueueStopped:
        o.Set("type", "queue_stopped");
        o.Set("reason", ev.reason);
        break;
      case Event::Type::kIoError:
        o.Set("type", "io_error");
        o.Set("op", OpName(ev.op));
        o.Set("device", ev.spare ? "spare" : "main");
        o.Set("sector", Napi::BigInt::New(env, ev.sector));
        o.Set("sectors", Napi::Number::New(env, ev.sectors));
        o.Set("errno", Napi::Number::New(env, ev.err));
        o.Set("latencyUs", static_cast<double>(ev.latency_us));
        break;
      case Event::Type::kIoFault: {
        o.Set("type", "io_fault");
        o.Set("tag", Napi::Number::New(env, ev.tag));
        o.Set("seq", static_cast<double>(ev.seq));
        o.Set("op", OpName(ev.op));
        o.Set("kind", ev.fault_kind == Event::FaultKind::kError ? "error" : "lost_written");
        o.Set("block", static_cast<double>(ev.block));
        o.Set("blocks", Napi::Number::New(env, ev.blocks));
        o.Set("attempt", Napi::Number::New(env, ev.attempt));
        o.Set("latencyUs", static_cast<double>(ev.latency_us));
        Napi::Array failed = Napi::Array::New(env, ev.failed.size());
        for (uint32_t i = 0; i < ev.failed.size(); i++) {
          const FaultRange& r = ev.failed[i];
          Napi::Object f = Napi::Object::New(env);
          f.Set("device", r.spare ? "spare" : "main");
          f.Set("block", static_cast<double>(r.block));
          f.Set("blocks", Napi::Number::New(env, r.blocks));
          f.Set("errno", Napi::Number::New(env, r.err));
          failed.Set(i, f);
        }
        o.Set("failed", failed);
        Napi::Array written = Napi::Array::New(env, ev.written.size());
        for (uint32_t i = 0; i < ev.written.size(); i++) {
          Napi::Object w = Napi::Object::New(env);
          w.Set("block", static_cast<double>(ev.written[i].block));
          w.Set("blocks", Napi::Number::New(env, ev.written[i].blocks));
          w.Set("slot", static_cast<double>(ev.written[i].slot));
          written.Set(i, w);
        }
        o.Set("written", written);
        break;
      }
      case Event::Type::kFaultCleared:
        o.Set("type", "fault_cleared");
        o.Set("tag", Napi::Number::New(env, ev.tag));
        o.Set("seq", static_cast<double>(ev.seq));
        o.Set("attempts", Napi::Number::New(env, ev.attempts));
        break;
      case Event::Type::kSlowIo:
        o.Set("type", "slow_io");
        o.Set("block", static_cast<double>(ev.block));
        o.Set("blocks", Napi::Number::New(env, ev.blocks));
        o.Set("latencyUs", static_cast<double>(ev.latency_us));
        o.Set("inflight", Napi::Number::New(env, ev.inflight));
        o.Set("dropped", static_cast<double>(ev.dropped));
        break;
    }
    try {
      callback.Call({o});
    } catch (const Napi::Error& e) {
      if (first_error.IsEmpty()) first_error = e;
    }
  }
  if (!first_error.IsEmpty()) first_error.ThrowAsJavaScriptException();
}

// JS thread.
void EventSink::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  tsfn_.Release();
}
