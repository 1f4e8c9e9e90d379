// The N-API surface: probe, openBackingInfo, kernelDeviceInfo, deleteKernelDevice and the Device class.
// Types are mirrored in src/native.ts. Blocking kernel work runs in AsyncWorkers (libuv pool threads);
// N-API values are only made or read on the JS thread (constructors, OnOK, plain methods).
#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <set>

#include "backing.h"
#include "control.h"
#include "device.h"
#include "events.h"
#include "sys_error.h"

namespace {

// JS thread.
Napi::Error ToJsError(Napi::Env env, const SysError& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", e.code());
  err.Set("errno", Napi::Number::New(env, e.err()));
  err.Set("command", e.command());
  return err;
}

// JS thread.
const char* StateName(uint16_t s) {
  switch (s) {
    case ublk::kStateDead: return "dead";
    case ublk::kStateLive: return "live";
    case ublk::kStateQuiesced: return "quiesced";
    case ublk::kStateFailIo: return "fail_io";
    default: return "unknown";
  }
}

// Runs `work` on a libuv pool thread and settles a promise on the JS thread with `done`'s value.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  // JS thread.
  PromiseWorker(Napi::Env env, Work work, Done done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        done_(std::move(done)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  // Pool thread: no N-API here.
  void Execute() override {
    try {
      work_();
    } catch (const SysError& e) {
      error_ = std::make_unique<SysError>(e);
    } catch (const std::exception& e) {
      error_ = std::make_unique<SysError>(0, "internal", e.what());
    }
  }
  // JS thread.
  void OnOK() override {
    if (error_) {
      deferred_.Reject(ToJsError(Env(), *error_).Value());
      return;
    }
    deferred_.Resolve(done_(Env()));
  }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  std::unique_ptr<SysError> error_;
};

// Devices still alive in this environment, stopped by the env cleanup hook. JS thread only.
struct AddonData {
  std::set<class DeviceWrap*> devices;
};

class DeviceWrap : public Napi::ObjectWrap<DeviceWrap> {
 public:
  // JS thread.
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Device",
                       {InstanceMethod("start", &DeviceWrap::Start), InstanceMethod("stop", &DeviceWrap::Stop),
                        InstanceMethod("info", &DeviceWrap::Info), InstanceMethod("stats", &DeviceWrap::Stats)});
  }

  // JS thread.
  explicit DeviceWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) {
      Napi::TypeError::New(env, "Device(options): options object required").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    DeviceConfig cfg;
    cfg.main_path = o.Get("mainPath").As<Napi::String>().Utf8Value();
    cfg.spare_path = o.Get("sparePath").As<Napi::String>().Utf8Value();
    cfg.queues = o.Get("queues").As<Napi::Number>().Uint32Value();
    cfg.depth = o.Get("depth").As<Napi::Number>().Uint32Value();
    cfg.block_size = o.Get("blockSize").As<Napi::Number>().Uint32Value();
    bool lossless = true;
    cfg.size_bytes = o.Get("sizeBytes").As<Napi::BigInt>().Uint64Value(&lossless);
    cfg.max_io_bytes = o.Get("maxIoBytes").As<Napi::Number>().Uint32Value();
    cfg.discard = o.Get("discard").As<Napi::Boolean>().Value();
    cfg.dev_id = o.Get("devId").As<Napi::Number>().Int32Value();
    Napi::Value zc = o.Get("zeroCopy");
    cfg.zero_copy = zc.IsBoolean() && zc.As<Napi::Boolean>().Value();
    Napi::Value cb = o.Get("onEvent");
    if (!cb.IsFunction()) {
      Napi::TypeError::New(env, "Device(options): onEvent must be a function").ThrowAsJavaScriptException();
      return;
    }
    if (cfg.queues < 1 || cfg.queues > 16 || cfg.depth < 1 || cfg.depth > ublk::kMaxQueueDepth ||
        (cfg.block_size != 512 && cfg.block_size != 4096) || cfg.max_io_bytes < 4096 ||
        cfg.max_io_bytes % 4096 != 0 || cfg.size_bytes == 0 || cfg.size_bytes % cfg.block_size != 0) {
      Napi::RangeError::New(env, "Device(options): queues, depth, blockSize, maxIoBytes or sizeBytes out of range")
          .ThrowAsJavaScriptException();
      return;
    }
    events_ = EventSink::Create(env, cb.As<Napi::Function>());
    device_ = std::make_shared<Device>(std::move(cfg), events_);
    env.GetInstanceData<AddonData>()->devices.insert(this);
  }

  // JS thread (GC finalizer).
  ~DeviceWrap() override { Shutdown(Env()); }

  // JS thread, also from the env cleanup hook: stop synchronously and release the event sink.
  void Shutdown(Napi::Env env) {
    if (!device_) return;
    try {
      device_->Stop();
    } catch (const SysError&) {
      // Best effort at teardown: Stop released what it could.
    }
    device_.reset();
    if (events_) events_->Close();
    events_ = nullptr;
    if (AddonData* data = env.GetInstanceData<AddonData>()) data->devices.erase(this);
  }

 private:
  // JS thread.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    std::shared_ptr<Device> dev = device_;
    if (!dev) return Rejected(info.Env(), "device was shut down");
    auto* w = new PromiseWorker(
        info.Env(), [dev] { dev->Start(); }, [this](Napi::Env env) { return InfoObject(env); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // JS thread.
  Napi::Value Stop(const Napi::CallbackInfo& info) {
    std::shared_ptr<Device> dev = device_;
    if (!dev) {
      auto d = Napi::Promise::Deferred::New(info.Env());
      d.Resolve(info.Env().Undefined());
      return d.Promise();
    }
    auto* w = new PromiseWorker(info.Env(), [dev] { dev->Stop(); }, [](Napi::Env env) { return env.Undefined(); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // JS thread.
  Napi::Value Info(const Napi::CallbackInfo& info) { return InfoObject(info.Env()); }

  // JS thread. Reads the queue threads' counters (relaxed atomics; each value is exact, the set is not
  // one instant).
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array out = Napi::Array::New(env);
    if (!device_) return out;
    const auto& all = device_->counters();
    for (size_t q = 0; q < all.size(); q++) {
      const QueueCounters& c = *all[q];
      Napi::Object o = Napi::Object::New(env);
      auto n = [&](const char* k, const std::atomic<uint64_t>& v) {
        o.Set(k, static_cast<double>(v.load(std::memory_order_relaxed)));
      };
      o.Set("queue", static_cast<double>(q));
      n("reads", c.reads);
      n("writes", c.writes);
      n("flushes", c.flushes);
      n("discards", c.discards);
      n("readBytes", c.read_bytes);
      n("writeBytes", c.write_bytes);
      n("errors", c.errors);
      n("inflight", c.inflight);
      Napi::Array h = Napi::Array::New(env, kLatencyBuckets);
      for (int i = 0; i < kLatencyBuckets; i++)
        h.Set(i, static_cast<double>(c.latency_log2_us[i].load(std::memory_order_relaxed)));
      o.Set("latencyLog2Us", h);
      out.Set(static_cast<uint32_t>(q), o);
    }
    return out;
  }

  // JS thread.
  Napi::Value InfoObject(Napi::Env env) {
    Napi::Object o = Napi::Object::New(env);
    DeviceState st = device_ ? device_->state() : last_state_;
    if (device_) last_state_ = st;
    o.Set("devId", Napi::Number::New(env, st.dev_id));
    o.Set("blockPath", st.dev_id >= 0 ? "/dev/ublkb" + std::to_string(st.dev_id) : "");
    o.Set("charPath", st.dev_id >= 0 ? "/dev/ublkc" + std::to_string(st.dev_id) : "");
    o.Set("queues", Napi::Number::New(env, device_ ? device_->config().queues : 0));
    o.Set("depth", Napi::Number::New(env, device_ ? device_->config().depth : 0));
    o.Set("flags", Napi::BigInt::New(env, st.flags));
    o.Set("state", st.live ? "live" : (st.stopped ? "stopped" : "dead"));
    o.Set("fixedBuffers", st.fixed_buffers);
    o.Set("zeroCopy", st.zero_copy);
    return o;
  }

  // JS thread.
  static Napi::Value Rejected(Napi::Env env, const char* msg) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(Napi::Error::New(env, msg).Value());
    return d.Promise();
  }

  std::shared_ptr<Device> device_;
  EventSink* events_ = nullptr;
  DeviceState last_state_;
};

// JS thread.
Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  int err = 0;
  bool available = ControlAvailable(&err);
  uint64_t features = 0;
  bool known = false;
  bool encoded = false;
  if (available) {
    try {
      Control ctrl;
      features = ctrl.features();
      known = ctrl.features_known();
      encoded = ctrl.encoded();
    } catch (const SysError& e) {
      available = false;
      err = e.err();
    }
  }
  o.Set("controlAvailable", available);
  o.Set("controlErrno", Napi::Number::New(env, err));
  o.Set("features", Napi::BigInt::New(env, features));
  o.Set("featuresKnown", known);
  o.Set("opcodeEncoding", encoded ? "ioctl" : "legacy");
  return o;
}

// JS thread.
Napi::Value OpenBackingInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "openBackingInfo(path): path must be a string");
  BackingInfo b;
  try {
    b = ProbeBacking(info[0].As<Napi::String>().Utf8Value());
  } catch (const SysError& e) {
    throw ToJsError(env, e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", b.path);
  o.Set("sizeBytes", Napi::BigInt::New(env, b.size_bytes));
  o.Set("isBlockDevice", b.is_block_device);
  o.Set("rdev", Napi::BigInt::New(env, b.rdev));
  o.Set("dev", Napi::BigInt::New(env, b.dev));
  o.Set("ino", Napi::BigInt::New(env, b.ino));
  o.Set("logicalBlockSize", Napi::Number::New(env, b.logical_block_size));
  o.Set("physicalBlockSize", Napi::Number::New(env, b.physical_block_size));
  o.Set("discard", b.discard);
  o.Set("rotational", b.rotational);
  return o;
}

// JS thread.
Napi::Value KernelDeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  auto result = std::make_shared<ublk::DevInfo>();
  auto* w = new PromiseWorker(
      env, [id, result] { *result = Control().GetDevInfo(id); },
      [result](Napi::Env e) {
        Napi::Object o = Napi::Object::New(e);
        o.Set("devId", Napi::Number::New(e, result->dev_id));
        o.Set("state", StateName(result->state));
        o.Set("pid", Napi::Number::New(e, result->ublksrv_pid));
        o.Set("queues", Napi::Number::New(e, result->nr_hw_queues));
        o.Set("depth", Napi::Number::New(e, result->queue_depth));
        o.Set("flags", Napi::BigInt::New(e, result->flags));
        return o;
      });
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// JS thread. Removes a device whose server is gone: STOP_DEV (harmless if already stopped), DEL_DEV.
Napi::Value DeleteKernelDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  auto* w = new PromiseWorker(
      env,
      [id] {
        Control ctrl;
        try {
          ctrl.StopDev(id);
        } catch (const SysError&) {
          // A dead device may refuse STOP_DEV; DEL_DEV below is what must succeed.
        }
        ctrl.DelDev(id);
      },
      [](Napi::Env e) { return e.Undefined(); });
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// JS thread, at environment teardown: no device outlives its environment.
void Cleanup(void* arg) {
  auto* data = static_cast<AddonData*>(arg);
  std::set<DeviceWrap*> devices = data->devices;
  for (DeviceWrap* d : devices) d->Shutdown(d->Env());
  data->devices.clear();
}

// JS thread.
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, Cleanup, data);
  exports.Set("probe", Napi::Function::New(env, Probe));
  exports.Set("openBackingInfo", Napi::Function::New(env, OpenBackingInfo));
  exports.Set("kernelDeviceInfo", Napi::Function::New(env, KernelDeviceInfo));
  exports.Set("deleteKernelDevice", Napi::Function::New(env, DeleteKernelDevice));
  exports.Set("Device", DeviceWrap::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(dmremap_native, Init)
