// The N-API surface: probe, openBackingInfo, kernelDeviceInfo, deleteKernelDevice and the Device class.
// Types are mirrored in src/native.ts. Blocking kernel work runs in AsyncWorkers (libuv pool threads);
// N-API values are only made or read on the JS thread (constructors, OnOK, plain methods).
#include <napi.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include <unistd.h>

#include "backing.h"
#include "claim.h"
#include "control.h"
#include "device.h"
#include "events.h"
#include "peer_cred.h"
#include "sd_notify.h"
#include "stdio_redirect.h"
#include "sys_error.h"

namespace {

// The flags value updateRemapTable takes for "drop this block's entry" (REMAP_FLAG_REMOVE in src/native.ts).
constexpr uint32_t kJsRemapRemove = 0x80;

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
                        InstanceMethod("recover", &DeviceWrap::Recover), InstanceMethod("detach", &DeviceWrap::Detach),
                        InstanceMethod("info", &DeviceWrap::Info), InstanceMethod("stats", &DeviceWrap::Stats),
                        InstanceMethod("setRemapTable", &DeviceWrap::SetRemapTable),
                        InstanceMethod("updateRemapTable", &DeviceWrap::UpdateRemapTable),
                        InstanceMethod("drain", &DeviceWrap::Drain), InstanceMethod("copyRange", &DeviceWrap::CopyRange),
                        InstanceMethod("readRange", &DeviceWrap::ReadRange), InstanceMethod("flush", &DeviceWrap::Flush),
                        InstanceMethod("scanRead", &DeviceWrap::ScanRead),
                        InstanceMethod("tableGeneration", &DeviceWrap::TableGeneration),
                        InstanceMethod("setFaultParking", &DeviceWrap::SetFaultParking),
                        InstanceMethod("setSlowIoUs", &DeviceWrap::SetSlowIoUs),
                        InstanceMethod("resolveFault", &DeviceWrap::ResolveFault)});
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
    for (auto [key, fd] : {std::pair<const char*, int*>{"mainFd", &cfg.main_fd}, {"spareFd", &cfg.spare_fd}}) {
      Napi::Value v = o.Get(key);
      if (v.IsUndefined()) continue;
      if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0) {
        Napi::TypeError::New(env, std::string("Device(options): ") + key + " must be a claimed fd").ThrowAsJavaScriptException();
        return;
      }
      *fd = v.As<Napi::Number>().Int32Value();
    }
    cfg.queues = o.Get("queues").As<Napi::Number>().Uint32Value();
    cfg.depth = o.Get("depth").As<Napi::Number>().Uint32Value();
    cfg.block_size = o.Get("blockSize").As<Napi::Number>().Uint32Value();
    bool lossless = true;
    cfg.size_bytes = o.Get("sizeBytes").As<Napi::BigInt>().Uint64Value(&lossless);
    cfg.max_io_bytes = o.Get("maxIoBytes").As<Napi::Number>().Uint32Value();
    cfg.discard = o.Get("discard").As<Napi::Boolean>().Value();
    cfg.dev_id = o.Get("devId").As<Napi::Number>().Int32Value();
    Napi::Value sdo = o.Get("spareDataOffset");
    if (sdo.IsBigInt()) cfg.spare_data_offset = sdo.As<Napi::BigInt>().Uint64Value(&lossless);
    Napi::Value zc = o.Get("zeroCopy");
    cfg.zero_copy = zc.IsBoolean() && zc.As<Napi::Boolean>().Value();
    Napi::Value pf = o.Get("parkFaults");
    if (!pf.IsUndefined() && !pf.IsBoolean()) {
      Napi::TypeError::New(env, "Device(options): parkFaults must be a boolean").ThrowAsJavaScriptException();
      return;
    }
    cfg.park_faults = pf.IsBoolean() && pf.As<Napi::Boolean>().Value();
    Napi::Value su = o.Get("slowIoUs");
    if (!su.IsUndefined()) {
      if (!IsSlowIoUs(su)) {
        Napi::TypeError::New(env, "Device(options): slowIoUs must be a whole number of microseconds >= 0")
            .ThrowAsJavaScriptException();
        return;
      }
      cfg.slow_io_us = static_cast<uint64_t>(su.As<Napi::Number>().DoubleValue());
    }
    Napi::Value cb = o.Get("onEvent");
    if (!cb.IsFunction()) {
      Napi::TypeError::New(env, "Device(options): onEvent must be a function").ThrowAsJavaScriptException();
      return;
    }
    if (cfg.queues < 1 || cfg.queues > kMaxQueues || cfg.depth < 1 || cfg.depth > ublk::kMaxQueueDepth ||
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

  // JS thread. recover(): user recovery of the existing device `devId` (Device::Recover) on a pool thread.
  Napi::Value Recover(const Napi::CallbackInfo& info) {
    std::shared_ptr<Device> dev = device_;
    if (!dev) return Rejected(info.Env(), "device was shut down");
    auto* w = new PromiseWorker(
        info.Env(), [dev] { dev->Recover(); }, [this](Napi::Env env) { return InfoObject(env); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // JS thread. detach(): leaves the kernel device quiesced for a successor (Device::Detach) on a pool thread.
  Napi::Value Detach(const Napi::CallbackInfo& info) {
    std::shared_ptr<Device> dev = device_;
    if (!dev) return Rejected(info.Env(), "device was shut down");
    auto* w = new PromiseWorker(info.Env(), [dev] { dev->Detach(); }, [](Napi::Env env) { return env.Undefined(); });
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  }

  // JS thread.
  Napi::Value Info(const Napi::CallbackInfo& info) { return InfoObject(info.Env()); }

  // JS thread. drain(): resolves once every request dispatched before the call has completed.
  Napi::Value Drain(const Napi::CallbackInfo& info) {
    std::shared_ptr<Device> dev = Running(info.Env());
    auto* w = new PromiseWorker(info.Env(), [dev] { dev->Drain(30000); }, [](Napi::Env env) { return env.Undefined(); });
    w->Queue();
    return w->Promise();
  }

  // JS thread. copyRange(from, fromOffset, to, toOffset, bytes), O_DIRECT, on a pool thread.
  Napi::Value CopyRange(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Device> dev = Running(env);
    bool from_spare = Role(info[0]);
    uint64_t from_off = Offset(info[1]);
    bool to_spare = Role(info[2]);
    uint64_t to_off = Offset(info[3]);
    uint32_t bytes = Bytes(info[4]);
    auto* w = new PromiseWorker(
        env,
        [dev, from_spare, from_off, to_spare, to_off, bytes] {
          int from = dev->DupBackingFd(from_spare);
          int to = -1;
          try {
            to = dev->DupBackingFd(to_spare);
            CopyDirect(from, from_off, to, to_off, bytes, from_spare ? "spare" : "main", to_spare ? "spare" : "main");
          } catch (...) {
            close(from);
            if (to >= 0) close(to);
            throw;
          }
          close(from);
          close(to);
        },
        [](Napi::Env e) { return e.Undefined(); });
    w->Queue();
    return w->Promise();
  }

  // JS thread. readRange(from, offset, bytes) -> Buffer, O_DIRECT, on a pool thread.
  Napi::Value ReadRange(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Device> dev = Running(env);
    bool spare = Role(info[0]);
    uint64_t off = Offset(info[1]);
    uint32_t bytes = Bytes(info[2]);
    auto data = std::make_shared<std::string>();
    auto* w = new PromiseWorker(
        env,
        [dev, spare, off, bytes, data] {
          int fd = dev->DupBackingFd(spare);
          try {
            ReadDirect(fd, off, bytes, data.get(), spare ? "spare" : "main");
          } catch (...) {
            close(fd);
            throw;
          }
          close(fd);
        },
        [data](Napi::Env e) { return Napi::Buffer<char>::Copy(e, data->data(), data->size()); });
    w->Queue();
    return w->Promise();
  }

  // JS thread. scanRead(offset, bytes, narrow?) -> {offset, bytes, segments, coveredBytes, stopped,
  // generation}: the scanner's read of the exported range (Device::ScanRead, ScanReader) on a libuv pool
  // thread; the segments are made into JS values back on the JS thread. The data read is not returned.
  // Rejects with ENODEV when the device is not running (shut down included), EBUSY when a scan read runs.
  Napi::Value ScanRead(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t off = Offset(info[0]);
    uint32_t bytes = Bytes(info[1]);
    if (!info[2].IsUndefined() && !info[2].IsBoolean()) throw Napi::TypeError::New(env, "scanRead: narrow must be a boolean");
    bool narrow = info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
    std::shared_ptr<Device> dev = device_;
    if (!dev) {
      auto d = Napi::Promise::Deferred::New(env);
      d.Reject(ToJsError(env, SysError(ENODEV, "scan read", "(device not running: shut down)")).Value());
      return d.Promise();
    }
    auto res = std::make_shared<ScanResult>();
    auto* w = new PromiseWorker(
        env, [dev, off, bytes, narrow, res] { dev->ScanRead(off, bytes, narrow, res.get()); },
        [off, bytes, res](Napi::Env e) {
          Napi::Object o = Napi::Object::New(e);
          o.Set("offset", Napi::BigInt::New(e, off));
          o.Set("bytes", Napi::Number::New(e, bytes));
          const std::vector<ScanSegment>& segs = res->segments;
          Napi::Array a = Napi::Array::New(e, segs.size());
          for (size_t i = 0; i < segs.size(); i++) {
            const ScanSegment& s = segs[i];
            Napi::Object x = Napi::Object::New(e);
            x.Set("device", s.spare ? "spare" : "main");
            x.Set("block", Napi::Number::New(e, static_cast<double>(s.block)));
            x.Set("blocks", Napi::Number::New(e, s.blocks));
            if (s.skip == ScanSkip::kMoving) {
              x.Set("skipped", "moving");
            } else if (s.skip == ScanSkip::kLost) {
              x.Set("skipped", "lost");
            } else {
              x.Set("skipped", e.Null());
            }
            x.Set("latencyUs", Napi::Number::New(e, s.latency_us));
            x.Set("errno", Napi::Number::New(e, s.err));
            a.Set(static_cast<uint32_t>(i), x);
          }
          o.Set("segments", a);
          o.Set("coveredBytes", Napi::Number::New(e, res->covered_bytes));
          if (res->stopped == ScanStop::kNarrowCap) {
            o.Set("stopped", "narrow_cap");
          } else if (res->stopped == ScanStop::kFailures) {
            o.Set("stopped", "failures");
          } else {
            o.Set("stopped", e.Null());
          }
          o.Set("generation", Napi::Number::New(e, static_cast<double>(res->generation)));
          return o;
        });
    w->Queue();
    return w->Promise();
  }

  // JS thread. tableGeneration() -> number: the generation of the remap table published last (1 before any
  // publish, one more per setRemapTable/updateRemapTable), what scanRead's `generation` compares with.
  Napi::Value TableGeneration(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!device_) throw Napi::Error::New(env, "device was shut down");
    return Napi::Number::New(env, static_cast<double>(device_->RemapGeneration()));
  }

  // JS thread. flush(which): fdatasync of main or the spare, on a pool thread.
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::shared_ptr<Device> dev = Running(env);
    bool spare = Role(info[0]);
    auto* w = new PromiseWorker(
        env,
        [dev, spare] {
          int fd = dev->DupBackingFd(spare);
          int rc = fdatasync(fd);
          int err = errno;
          close(fd);
          if (rc < 0) ThrowSys(err, "fdatasync", spare ? "spare" : "main");
        },
        [](Napi::Env e) { return e.Undefined(); });
    w->Queue();
    return w->Promise();
  }

  // JS thread. Argument helpers: throw a TypeError/RangeError naming the problem.
  std::shared_ptr<Device> Running(Napi::Env env) {
    if (!device_) throw Napi::Error::New(env, "device was shut down");
    return device_;
  }
  static bool Role(const Napi::Value& v) {
    std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
    if (s != "main" && s != "spare") throw Napi::TypeError::New(v.Env(), "device must be 'main' or 'spare'");
    return s == "spare";
  }
  static uint64_t Offset(const Napi::Value& v) {
    bool lossless = true;
    if (!v.IsBigInt()) throw Napi::TypeError::New(v.Env(), "offset must be a bigint");
    uint64_t o = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless || o % 512 != 0) throw Napi::RangeError::New(v.Env(), "offset must be a non-negative multiple of 512");
    return o;
  }
  static uint32_t Bytes(const Napi::Value& v) {
    // Checked as a double: Uint32Value() would wrap 2^32 + 4096 to 4096 and truncate 4096.5 to 4096.
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
    uint32_t n = d >= 512 && d <= double(16u << 20) && d == double(uint32_t(d)) ? uint32_t(d) : 0;
    if (n == 0 || n % 512 != 0)
      throw Napi::RangeError::New(v.Env(), "bytes must be a multiple of 512 from 512 to 16 MiB");
    return n;
  }

  // JS thread. The entries of setRemapTable/updateRemapTable: (blocks: BigUint64Array, slots:
  // BigUint64Array, flags: Uint8Array), sorted by block with no duplicates, inside the device; flags are
  // LOST | MOVING, or (updates only) REMOVE alone. Throws on anything else (nothing is published).
  std::vector<RemapEntry> Entries(const Napi::CallbackInfo& info, const char* name, bool update) {
    Napi::Env env = info.Env();
    if (!device_) throw Napi::Error::New(env, "device was shut down");
    if (!info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() ||
        info[0].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
        info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(env, std::string(name) + "(blocks: BigUint64Array, slots: BigUint64Array, flags: Uint8Array)");
    auto blocks = info[0].As<Napi::TypedArrayOf<uint64_t>>();
    auto slots = info[1].As<Napi::TypedArrayOf<uint64_t>>();
    auto flags = info[2].As<Napi::TypedArrayOf<uint8_t>>();
    size_t n = blocks.ElementLength();
    if (slots.ElementLength() != n || flags.ElementLength() != n)
      throw Napi::RangeError::New(env, std::string(name) + ": blocks, slots and flags differ in length");
    uint64_t dev_blocks = device_->config().size_bytes / device_->config().block_size;
    std::vector<RemapEntry> entries(n);
    for (size_t i = 0; i < n; i++) {
      if (blocks[i] >= dev_blocks || (i > 0 && blocks[i] <= blocks[i - 1]))
        throw Napi::RangeError::New(env, std::string(name) + ": blocks must be sorted, unique and inside the device");
      uint32_t f = flags[i];
      if (update && f == kJsRemapRemove) {
        f = kRemapRemove;
      } else if ((f & ~(kRemapLost | kRemapMoving | kRemapRedirect)) != 0) {
        throw Napi::RangeError::New(env, std::string(name) + ": unknown flags " + std::to_string(f));
      }
      entries[i] = RemapEntry{blocks[i], slots[i], f};
    }
    return entries;
  }

  // JS thread. setRemapTable(blocks, slots, flags): the whole table (see Entries; a bad table is refused
  // and the old one stays).
  Napi::Value SetRemapTable(const Napi::CallbackInfo& info) {
    std::vector<RemapEntry> entries = Entries(info, "setRemapTable", false);
    device_->PublishRemap(std::move(entries));
    return info.Env().Undefined();
  }

  // JS thread. updateRemapTable(blocks, slots, flags): changes the entries of these blocks only; flags
  // 0x80 (REMOVE) drops a block's entry. A bad update is refused and the table stays as it was.
  Napi::Value UpdateRemapTable(const Napi::CallbackInfo& info) {
    std::vector<RemapEntry> delta = Entries(info, "updateRemapTable", true);
    device_->UpdateRemap(delta);
    return info.Env().Undefined();
  }

  // JS thread. setFaultParking(on): failures seen after the call are parked (io_fault) or not (io_error).
  // After the device was shut down it changes nothing.
  Napi::Value SetFaultParking(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsBoolean()) throw Napi::TypeError::New(env, "setFaultParking(on: boolean)");
    if (device_) device_->SetFaultParking(info[0].As<Napi::Boolean>().Value());
    return env.Undefined();
  }

  // JS thread. setSlowIoUs(us): successful user reads completing after the call slower than `us` µs are
  // reported as slow_io events; 0 turns the report off. After the device was shut down it changes nothing.
  Napi::Value SetSlowIoUs(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!IsSlowIoUs(info[0])) throw Napi::TypeError::New(env, "setSlowIoUs(us: whole number >= 0)");
    if (device_) device_->SetSlowIoUs(static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()));
    return env.Undefined();
  }

  // JS thread. A slow_io threshold: a whole number of µs, 0 up to 2^53 (a safe integer).
  static bool IsSlowIoUs(const Napi::Value& v) {
    if (!v.IsNumber()) return false;
    const double d = v.As<Napi::Number>().DoubleValue();
    return d >= 0 && d <= 9007199254740991.0 && d == static_cast<double>(static_cast<uint64_t>(d));
  }

  // JS thread. resolveFault(queue, tag, seq, action): hands the decision to the queue thread, which
  // applies it on its next wakeup. Arguments are checked here; whether the request is (still) faulted with
  // that seq is the queue thread's to check (a stale resolution is ignored there, as is one that arrives
  // after the device was stopped or shut down).
  Napi::Value ResolveFault(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const char* usage =
        "resolveFault(queue: number, tag: number, seq: number, action: {action: 'retry', narrow?: boolean} | "
        "{action: 'fail', errno: number} | {action: 'complete'})";
    if (!info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsObject())
      throw Napi::TypeError::New(env, usage);
    double q = info[0].As<Napi::Number>().DoubleValue();
    double tag = info[1].As<Napi::Number>().DoubleValue();
    double seq = info[2].As<Napi::Number>().DoubleValue();
    const DeviceConfig* cfg = device_ ? &device_->config() : nullptr;
    auto is_index = [](double v, double limit) { return v >= 0 && v < limit && v == static_cast<double>(uint64_t(v)); };
    if (!is_index(q, cfg ? cfg->queues : ublk::kMaxQueueDepth) || !is_index(tag, cfg ? cfg->depth : ublk::kMaxQueueDepth))
      throw Napi::RangeError::New(env, "resolveFault: queue or tag out of range");
    if (!is_index(seq, 9007199254740992.0)) throw Napi::RangeError::New(env, "resolveFault: seq must be a non-negative integer");
    Napi::Object a = info[3].As<Napi::Object>();
    Napi::Value kind = a.Get("action");
    std::string k = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "";
    FaultResolution r;
    r.tag = static_cast<uint16_t>(tag);
    r.seq = static_cast<uint64_t>(seq);
    if (k == "retry") {
      Napi::Value narrow = a.Get("narrow");
      if (!narrow.IsUndefined() && !narrow.IsBoolean())
        throw Napi::TypeError::New(env, "resolveFault: narrow must be a boolean");
      r.action = FaultResolution::Action::kRetry;
      r.narrow = narrow.IsBoolean() && narrow.As<Napi::Boolean>().Value();
    } else if (k == "fail") {
      Napi::Value err = a.Get("errno");
      if (!err.IsNumber()) throw Napi::TypeError::New(env, "resolveFault: fail needs errno: number");
      double e = err.As<Napi::Number>().DoubleValue();
      if (!is_index(e, 4096) || e < 1) throw Napi::RangeError::New(env, "resolveFault: errno must be an integer from 1 to 4095");
      r.action = FaultResolution::Action::kFail;
      r.err = static_cast<int>(e);
    } else if (k == "complete") {
      r.action = FaultResolution::Action::kComplete;
    } else {
      throw Napi::TypeError::New(env, usage);
    }
    if (device_) device_->ResolveFault(static_cast<uint32_t>(q), r);
    return env.Undefined();
  }

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
      n("mainWritesOk", c.main_writes_ok);
      n("mainWritesFailed", c.main_writes_failed);
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

// JS thread. The fields of a BackingInfo on `o` (openBackingInfo's result; claimBacking's too).
void SetBackingInfo(Napi::Env env, Napi::Object o, const BackingInfo& b) {
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
  SetBackingInfo(env, o, b);
  return o;
}

// JS thread. claimBacking(path) -> { fd, ...BackingInfo }: the exclusive open (ClaimBacking) and the geometry
// probed on its fd.
Napi::Value ClaimBackingJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "claimBacking(path): path must be a string");
  Claim c;
  try {
    c = ClaimBacking(info[0].As<Napi::String>().Utf8Value());
  } catch (const SysError& e) {
    throw ToJsError(env, e);
  }
  Napi::Object o = Napi::Object::New(env);
  SetBackingInfo(env, o, c.info);
  o.Set("fd", Napi::Number::New(env, c.fd));
  o.Set("isBlockDevice", c.is_block_device);
  o.Set("rdev", Napi::BigInt::New(env, c.rdev));
  o.Set("dev", Napi::BigInt::New(env, c.dev));
  o.Set("ino", Napi::BigInt::New(env, c.ino));
  return o;
}

// JS thread. The fd argument of the claimed-fd functions.
int ClaimedFd(const Napi::Value& v) {
  if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0) throw Napi::TypeError::New(v.Env(), "fd must be a claimed fd");
  return v.As<Napi::Number>().Int32Value();
}

// JS thread. An offset or length of claimed-fd I/O: a multiple of 512, a length from 512 to 16 MiB.
uint64_t ClaimedSpan(const Napi::Value& v, bool length) {
  bool lossless = true;
  uint64_t n = v.IsBigInt() ? v.As<Napi::BigInt>().Uint64Value(&lossless) : v.IsNumber() ? v.As<Napi::Number>().Int64Value() : 1;
  if (!lossless || n % 512 != 0 || (length && (n == 0 || n > (16u << 20))))
    throw Napi::RangeError::New(v.Env(), length ? "length must be a multiple of 512 from 512 to 16 MiB" : "offset must be a non-negative multiple of 512");
  return n;
}

// JS thread. releaseBacking(fd): closes a claim.
Napi::Value ReleaseBackingJs(const Napi::CallbackInfo& info) {
  try {
    ReleaseClaim(ClaimedFd(info[0]));
  } catch (const SysError& e) {
    throw ToJsError(info.Env(), e);
  }
  return info.Env().Undefined();
}

// JS thread. readClaimed(fd, offset, length) -> Promise<Buffer>, O_DIRECT on a pool thread.
Napi::Value ReadClaimedJs(const Napi::CallbackInfo& info) {
  int fd = ClaimedFd(info[0]);
  uint64_t off = ClaimedSpan(info[1], false);
  uint32_t len = static_cast<uint32_t>(ClaimedSpan(info[2], true));
  auto data = std::make_shared<std::string>();
  auto* w = new PromiseWorker(
      info.Env(), [fd, off, len, data] { ReadClaimed(fd, off, len, data.get()); },
      [data](Napi::Env e) { return Napi::Buffer<char>::Copy(e, data->data(), data->size()); });
  w->Queue();
  return w->Promise();
}

// JS thread. writeClaimed(fd, offset, data) -> Promise<void>, O_DIRECT on a pool thread (data copied here).
Napi::Value WriteClaimedJs(const Napi::CallbackInfo& info) {
  int fd = ClaimedFd(info[0]);
  uint64_t off = ClaimedSpan(info[1], false);
  if (!info[2].IsBuffer()) throw Napi::TypeError::New(info.Env(), "data must be a Buffer");
  auto buf = info[2].As<Napi::Buffer<char>>();
  ClaimedSpan(Napi::Number::New(info.Env(), static_cast<double>(buf.Length())), true);
  auto data = std::make_shared<std::string>(buf.Data(), buf.Length());
  auto* w = new PromiseWorker(
      info.Env(), [fd, off, data] { WriteClaimed(fd, off, *data); }, [](Napi::Env e) { return e.Undefined(); });
  w->Queue();
  return w->Promise();
}

// JS thread. syncClaimed(fd) -> Promise<void>: fdatasync on a pool thread.
Napi::Value SyncClaimedJs(const Napi::CallbackInfo& info) {
  int fd = ClaimedFd(info[0]);
  auto* w = new PromiseWorker(info.Env(), [fd] { SyncClaimed(fd); }, [](Napi::Env e) { return e.Undefined(); });
  w->Queue();
  return w->Promise();
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

// JS thread. armExitWatchdog(ms, code): a detached thread ends the process with _exit(code) after `ms`
// unless it has exited by then. For the fatal path: process.exit() joins libuv's worker threads
// (uv_library_shutdown), and one stuck in a blocking syscall (a read of a dead device) would hang it for ever.
Napi::Value ArmExitWatchdog(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "armExitWatchdog(ms, code)");
  int64_t ms = info[0].As<Napi::Number>().Int64Value();
  int code = info[1].As<Napi::Number>().Int32Value();
  if (ms < 0 || code < 0 || code > 255) throw Napi::RangeError::New(env, "armExitWatchdog: ms >= 0, code 0..255");
  std::thread([ms, code] {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    _exit(code);
  }).detach();
  return env.Undefined();
}

// JS thread. sdNotify(state): one datagram to $NOTIFY_SOCKET (sd_notify.h); true when sent, false when unset.
Napi::Value SdNotifyJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "sdNotify(state: string)");
  try {
    return Napi::Boolean::New(env, SdNotify(info[0].As<Napi::String>().Utf8Value()));
  } catch (const SysError& e) {
    throw ToJsError(env, e);
  }
}

// JS thread. redirectStdio(fd, target): fd 1 or 2 made a duplicate of fd (stdio_redirect.h).
Napi::Value RedirectStdioJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber())
    throw Napi::TypeError::New(env, "redirectStdio(fd: number, target: 1 | 2)");
  try {
    RedirectStdio(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value());
  } catch (const SysError& e) {
    throw ToJsError(env, e);
  }
  return env.Undefined();
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
  Napi::Object limits = Napi::Object::New(env);
  limits.Set("maxQueues", Napi::Number::New(env, kMaxQueues));
  limits.Set("maxDepth", Napi::Number::New(env, ublk::kMaxQueueDepth));
  exports.Set("limits", limits);
  exports.Set("claimBacking", Napi::Function::New(env, ClaimBackingJs));
  exports.Set("releaseBacking", Napi::Function::New(env, ReleaseBackingJs));
  exports.Set("readClaimed", Napi::Function::New(env, ReadClaimedJs));
  exports.Set("writeClaimed", Napi::Function::New(env, WriteClaimedJs));
  exports.Set("syncClaimed", Napi::Function::New(env, SyncClaimedJs));
  exports.Set("kernelDeviceInfo", Napi::Function::New(env, KernelDeviceInfo));
  exports.Set("deleteKernelDevice", Napi::Function::New(env, DeleteKernelDevice));
  exports.Set("armExitWatchdog", Napi::Function::New(env, ArmExitWatchdog));
  exports.Set("peerCred", Napi::Function::New(env, PeerCredJs));
  exports.Set("sdNotify", Napi::Function::New(env, SdNotifyJs));
  exports.Set("redirectStdio", Napi::Function::New(env, RedirectStdioJs));
  exports.Set("Device", DeviceWrap::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(dmremap_native, Init)
