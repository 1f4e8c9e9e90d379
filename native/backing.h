// Backing devices (main and spare): probing their geometry and opening them for the data path.
#pragma once

#include <cstdint>
#include <string>

struct BackingInfo {
  std::string path;
  uint64_t size_bytes = 0;
  bool is_block_device = false;
  uint64_t rdev = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint32_t logical_block_size = 512;
  uint32_t physical_block_size = 4096;
  bool discard = false;
  // Block devices: queue/discard_max_bytes, discard_granularity and write_zeroes_max_bytes (0: none).
  uint64_t discard_max_bytes = 0;
  uint32_t discard_granularity = 0;
  uint64_t write_zeroes_max_bytes = 0;
  bool rotational = false;
};

// Any thread. Stats and queries the device read-only without claiming it. Throws SysError.
BackingInfo ProbeBacking(const std::string& path);
// Any thread. The same on an fd already open (a claim): no path is opened again; the fd stays open. Throws
// SysError naming `path`.
BackingInfo ProbeBackingFd(int fd, const std::string& path);

// Worker thread. Reads `len` bytes at `offset` with the fd's O_DIRECT semantics (offset and len must be
// multiples of the device's logical block size) into `out`, looping over short reads. Throws SysError.
void ReadDirect(int fd, uint64_t offset, uint32_t len, std::string* out, const char* what);
// Worker thread. Copies `len` bytes between two O_DIRECT fds through an aligned buffer. Throws SysError
// naming the side that failed ("read main", "write spare", ...).
void CopyDirect(int from_fd, uint64_t from_offset, int to_fd, uint64_t to_offset, uint32_t len, const char* from_name,
                const char* to_name);

// Any thread. Opens for the data path: O_RDWR | O_DIRECT, and O_EXCL on a block device so that a
// mounted or otherwise claimed device is refused (EBUSY). Throws SysError.
int OpenBacking(const std::string& path);
