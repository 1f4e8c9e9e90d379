// The ublk userspace ABI, as this project uses it.
//
// Written from Documentation/block/ublk.rst and include/uapi/linux/ublk_cmd.h so that the addon builds
// against any kernel headers (bookworm's linux-libc-dev 6.1 lacks most of what newer kernels offer).
// Struct layouts are part of the kernel ABI and are checked with static_asserts below.
#pragma once

#include <linux/ioctl.h>
#include <cstdint>

namespace ublk {

// Legacy control opcodes (refused by kernels built without CONFIG_BLKDEV_UBLK_LEGACY_OPCODES).
constexpr uint32_t kCmdGetQueueAffinity = 0x01;
constexpr uint32_t kCmdGetDevInfo = 0x02;
constexpr uint32_t kCmdAddDev = 0x04;
constexpr uint32_t kCmdDelDev = 0x05;
constexpr uint32_t kCmdStartDev = 0x06;
constexpr uint32_t kCmdStopDev = 0x07;
constexpr uint32_t kCmdSetParams = 0x08;
constexpr uint32_t kCmdGetParams = 0x09;
constexpr uint32_t kCmdStartUserRecovery = 0x10;
constexpr uint32_t kCmdEndUserRecovery = 0x11;
constexpr uint32_t kCmdGetFeatures = 0x13;  // only exists in ioctl-encoded form

// Legacy I/O opcodes.
constexpr uint32_t kIoFetchReq = 0x20;
constexpr uint32_t kIoCommitAndFetchReq = 0x21;

struct CtrlCmd {  // struct ublksrv_ctrl_cmd, carried in a 128-byte SQE's command area
  uint32_t dev_id;
  uint16_t queue_id;
  uint16_t len;
  uint64_t addr;
  uint64_t data[1];
  uint16_t dev_path_len;
  uint16_t pad;
  uint32_t reserved;
};
static_assert(sizeof(CtrlCmd) == 32, "ublksrv_ctrl_cmd is 32 bytes");

struct IoCmd {  // struct ublksrv_io_cmd, carried in a 64-byte SQE's 16-byte command area
  uint16_t q_id;
  uint16_t tag;
  int32_t result;
  uint64_t addr;
};
static_assert(sizeof(IoCmd) == 16, "ublksrv_io_cmd is 16 bytes");

// The ioctl-encoded forms: _IOR/_IOWR('u', nr, struct).
constexpr uint32_t EncodeCtrl(uint32_t nr, bool write) {
  return write ? _IOWR('u', nr, CtrlCmd) : _IOR('u', nr, CtrlCmd);
}
constexpr uint32_t EncodeIo(uint32_t nr) { return _IOWR('u', nr, IoCmd); }

struct DevInfo {  // struct ublksrv_ctrl_dev_info
  uint16_t nr_hw_queues;
  uint16_t queue_depth;
  uint16_t state;
  uint16_t pad0;
  uint32_t max_io_buf_bytes;
  uint32_t dev_id;
  int32_t ublksrv_pid;
  uint32_t pad1;
  uint64_t flags;
  uint64_t ublksrv_flags;
  uint32_t owner_uid;
  uint32_t owner_gid;
  uint64_t reserved1;
  uint64_t reserved2;
};
static_assert(sizeof(DevInfo) == 64, "ublksrv_ctrl_dev_info is 64 bytes");

struct IoDesc {  // struct ublksrv_io_desc, one per tag in the mmap'ed array
  uint32_t op_flags;  // op: bits 0-7, flags: bits 8-31
  uint32_t nr_sectors;
  uint64_t start_sector;
  uint64_t addr;
};
static_assert(sizeof(IoDesc) == 24, "ublksrv_io_desc is 24 bytes");

struct ParamBasic {
  uint32_t attrs;
  uint8_t logical_bs_shift;
  uint8_t physical_bs_shift;
  uint8_t io_opt_shift;
  uint8_t io_min_shift;
  uint32_t max_sectors;
  uint32_t chunk_sectors;
  uint64_t dev_sectors;
  uint64_t virt_boundary_mask;
};
static_assert(sizeof(ParamBasic) == 32, "ublk_param_basic is 32 bytes");

struct ParamDiscard {
  uint32_t discard_alignment;
  uint32_t discard_granularity;
  uint32_t max_discard_sectors;
  uint32_t max_write_zeroes_sectors;
  uint16_t max_discard_segments;
  uint16_t reserved0;
};
static_assert(sizeof(ParamDiscard) == 20, "ublk_param_discard is 20 bytes");

struct ParamDevt {
  uint32_t char_major;
  uint32_t char_minor;
  uint32_t disk_major;
  uint32_t disk_minor;
};

// The prefix of struct ublk_params this project sends: len and types say how much the kernel reads.
struct Params {
  uint32_t len;
  uint32_t types;
  ParamBasic basic;
  ParamDiscard discard;
  ParamDevt devt;
};
static_assert(__builtin_offsetof(Params, basic) == 8, "basic at offset 8");
static_assert(__builtin_offsetof(Params, discard) == 40, "discard at offset 40");
static_assert(__builtin_offsetof(Params, devt) == 60, "devt at offset 60");

constexpr uint32_t kParamTypeBasic = 1u << 0;
constexpr uint32_t kParamTypeDiscard = 1u << 1;
constexpr uint32_t kParamTypeDevt = 1u << 2;

constexpr uint32_t kAttrReadOnly = 1u << 0;
constexpr uint32_t kAttrRotational = 1u << 1;
constexpr uint32_t kAttrVolatileCache = 1u << 2;
constexpr uint32_t kAttrFua = 1u << 3;

// Feature flags (UBLK_F_*).
constexpr uint64_t kFSupportZeroCopy = 1ull << 0;
constexpr uint64_t kFNeedGetData = 1ull << 2;
constexpr uint64_t kFUserRecovery = 1ull << 3;
constexpr uint64_t kFUserRecoveryReissue = 1ull << 4;
constexpr uint64_t kFUnprivilegedDev = 1ull << 5;
constexpr uint64_t kFCmdIoctlEncode = 1ull << 6;
constexpr uint64_t kFUserCopy = 1ull << 7;
constexpr uint64_t kFZoned = 1ull << 8;
constexpr uint64_t kFUserRecoveryFailIo = 1ull << 9;
constexpr uint64_t kFUpdateSize = 1ull << 10;
constexpr uint64_t kFAutoBufReg = 1ull << 11;
constexpr uint64_t kFQuiesce = 1ull << 12;
constexpr uint64_t kFPerIoDaemon = 1ull << 13;

// Device states (GET_DEV_INFO).
constexpr uint16_t kStateDead = 0;
constexpr uint16_t kStateLive = 1;
constexpr uint16_t kStateQuiesced = 2;
constexpr uint16_t kStateFailIo = 3;

// I/O operations in IoDesc.op_flags & 0xff, and flags in op_flags >> 8 (as bits of op_flags).
constexpr uint8_t kOpRead = 0;
constexpr uint8_t kOpWrite = 1;
constexpr uint8_t kOpFlush = 2;
constexpr uint8_t kOpDiscard = 3;
constexpr uint8_t kOpWriteSame = 4;
constexpr uint8_t kOpWriteZeroes = 5;
constexpr uint32_t kIoFFua = 1u << 13;
constexpr uint32_t kIoFNoUnmap = 1u << 15;

// FETCH/COMMIT completion results.
constexpr int kIoResOk = 0;
constexpr int kIoResNeedGetData = 1;
// UBLK_IO_RES_ABORT is -ENODEV: the queue is going away, do not fetch again.

constexpr uint32_t kMaxQueueDepth = 4096;
constexpr uint32_t kMaxQueues = 4096;

// Byte offset of queue q's descriptor array in the /dev/ublkcN mmap space.
inline uint64_t DescMmapOffset(uint32_t q, uint64_t page_size) {
  uint64_t per_queue = (uint64_t(kMaxQueueDepth) * sizeof(IoDesc) + page_size - 1) / page_size * page_size;
  return uint64_t(q) * per_queue;
}

}  // namespace ublk
