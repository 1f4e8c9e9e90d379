{
  "target_defaults": {
    "defines": ["_GNU_SOURCE"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-O2"]
  },
  "targets": [
    {
      "target_name": "dmremap_native",
      "sources": [
        "native/addon.cc",
        "native/backing.cc",
        "native/claim.cc",
        "native/control.cc",
        "native/device.cc",
        "native/discard_worker.cc",
        "native/events.cc",
        "native/peer_cred.cc",
        "native/queue.cc",
        "native/remap_index.cc",
        "native/request_plan.cc",
        "native/scan_reader.cc",
        "native/sd_notify.cc",
        "native/stdio_redirect.cc",
        "native/sys_error.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I liburing | sed 's/-I//g')"
      ],
      "libraries": ["<!@(pkg-config --libs liburing)", "-lpthread"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"]
    },
    {
      "target_name": "request_plan_test",
      "type": "executable",
      "sources": ["native/test/request_plan_test.cc", "native/request_plan.cc", "native/remap_index.cc"]
    },
    {
      "target_name": "scan_reader_test",
      "type": "executable",
      "sources": ["native/test/scan_reader_test.cc", "native/scan_reader.cc", "native/remap_index.cc", "native/sys_error.cc"]
    },
    {
      "target_name": "slow_io_limit_test",
      "type": "executable",
      "sources": ["native/test/slow_io_limit_test.cc"]
    },
    {
      "target_name": "lookup_bench",
      "type": "executable",
      "sources": ["native/bench/lookup_bench.cc", "native/remap_index.cc"]
    }
  ]
}
