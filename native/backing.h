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
  bool rotational = false;
};

// Any thread. Stats and queries the device read-only without claiming it. Throws SysError.
BackingInfo ProbeBacking(const std::string& path);

// Any thread. Opens for the data path: O_RDWR | O_DIRECT, and O_EXCL on a block device so that a
// mounted or otherwise claimed device is refused (EBUSY). Throws SysError.
int OpenBacking(const std::string& path);
