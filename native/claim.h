// Claims of the backing devices (main and spare): one exclusive open per device, made before anything
// reads or writes it and kept for the daemon's life. The data path (Device, by a dup of the fd) and the
// remap metadata I/O (ReadClaimed / WriteClaimed / SyncClaimed) share it.
#pragma once

#include <cstdint>
#include <string>

#include "backing.h"

struct Claim {
  int fd = -1;
  bool is_block_device = false;
  uint64_t rdev = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
  // The geometry, probed on `fd` (ProbeBackingFd): the path is opened once, by the claim.
  BackingInfo info;
};

// Any thread (the JS thread). Opens `path` O_RDWR | O_DIRECT | O_CLOEXEC: a block device with O_EXCL (a
// mounted device, or one another driver or program holds exclusively, fails with EBUSY), a regular file
// under flock(LOCK_EX | LOCK_NB) (a file another claim holds fails with EBUSY). Anything else fails with
// ENOTBLK. Probes the geometry on the claimed fd. Reads and writes no data. Throws SysError.
Claim ClaimBacking(const std::string& path);

// Any thread. Closes a claim's fd (the claim ends once every dup of it is closed too). Throws SysError.
void ReleaseClaim(int fd);

// Any thread. A dup of a claim's fd (close-on-exec) for a holder with its own lifetime. Throws SysError.
int DupClaim(int fd, const char* what);

// Worker thread. Reads `len` bytes at `offset` (multiples of the device's logical block size) through an
// aligned buffer into `out`; bytes past the end of the device or file read as zeros. Throws SysError.
void ReadClaimed(int fd, uint64_t offset, uint32_t len, std::string* out);

// Worker thread. Writes `data` at `offset` (offset and length multiples of the logical block size)
// through an aligned buffer. Throws SysError.
void WriteClaimed(int fd, uint64_t offset, const std::string& data);

// Worker thread. fdatasync: every completed write on the device is durable (its volatile cache flushed).
void SyncClaimed(int fd);
