#include "backing.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "sys_error.h"

namespace {
// Any thread. Reads one integer from a sysfs attribute of a block device; fallback if unreadable.
uint64_t SysfsQueueValue(dev_t rdev, const char* attr, uint64_t fallback) {
  std::string p = "/sys/dev/block/" + std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev)) +
                  "/queue/" + attr;
  std::ifstream f(p);
  uint64_t v = 0;
  if (f >> v) return v;
  return fallback;
}
}  // namespace

// Any thread.
BackingInfo ProbeBacking(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowSys(errno, "open", path);
  try {
    BackingInfo info = ProbeBackingFd(fd, path);
    close(fd);
    return info;
  } catch (const SysError&) {
    close(fd);
    throw;
  }
}

// Any thread.
BackingInfo ProbeBackingFd(int fd, const std::string& path) {
  BackingInfo info;
  info.path = path;
  struct stat st {};
  if (fstat(fd, &st) < 0) ThrowSys(errno, "fstat", path);
  info.dev = st.st_dev;
  info.ino = st.st_ino;
  if (S_ISBLK(st.st_mode)) {
    info.is_block_device = true;
    info.rdev = st.st_rdev;
    uint64_t size = 0;
    int lbs = 0;
    unsigned int pbs = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0 || ioctl(fd, BLKSSZGET, &lbs) < 0 || ioctl(fd, BLKPBSZGET, &pbs) < 0) {
      ThrowSys(errno, "ioctl", path);
    }
    info.size_bytes = size;
    info.logical_block_size = static_cast<uint32_t>(lbs);
    info.physical_block_size = pbs;
    info.discard_max_bytes = SysfsQueueValue(st.st_rdev, "discard_max_bytes", 0);
    info.discard_granularity = static_cast<uint32_t>(SysfsQueueValue(st.st_rdev, "discard_granularity", 0));
    info.write_zeroes_max_bytes = SysfsQueueValue(st.st_rdev, "write_zeroes_max_bytes", 0);
    info.discard = info.discard_max_bytes > 0;
    info.rotational = SysfsQueueValue(st.st_rdev, "rotational", 0) != 0;
  } else if (S_ISREG(st.st_mode)) {
    info.size_bytes = static_cast<uint64_t>(st.st_size);
    info.logical_block_size = 512;
    info.physical_block_size = 4096;
    info.discard = true;  // fallocate(PUNCH_HOLE) on the file
  } else {
    ThrowSys(ENOTBLK, "open", path + " (not a block device or regular file)");
  }
  return info;
}

namespace {
struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) {
    if (posix_memalign(&p, 4096, n ? n : 4096) != 0) ThrowSys(ENOMEM, "posix_memalign");
  }
  ~AlignedBuffer() { free(p); }
  void* p = nullptr;
};

// Worker thread.
void PreadAll(int fd, char* buf, uint32_t len, uint64_t offset, const std::string& what) {
  uint32_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowSys(errno, "read " + what, "at byte " + std::to_string(offset + done));
    if (n == 0) ThrowSys(EIO, "read " + what, "past the end at byte " + std::to_string(offset + done));
    done += static_cast<uint32_t>(n);
  }
}

// Worker thread.
void PwriteAll(int fd, const char* buf, uint32_t len, uint64_t offset, const std::string& what) {
  uint32_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowSys(errno, "write " + what, "at byte " + std::to_string(offset + done));
    if (n == 0) ThrowSys(EIO, "write " + what, "past the end at byte " + std::to_string(offset + done));
    done += static_cast<uint32_t>(n);
  }
}
}  // namespace

// Worker thread.
void ReadDirect(int fd, uint64_t offset, uint32_t len, std::string* out, const char* what) {
  AlignedBuffer buf(len);
  PreadAll(fd, static_cast<char*>(buf.p), len, offset, what);
  out->assign(static_cast<char*>(buf.p), len);
}

// Worker thread.
void CopyDirect(int from_fd, uint64_t from_offset, int to_fd, uint64_t to_offset, uint32_t len, const char* from_name,
                const char* to_name) {
  AlignedBuffer buf(len);
  PreadAll(from_fd, static_cast<char*>(buf.p), len, from_offset, from_name);
  PwriteAll(to_fd, static_cast<const char*>(buf.p), len, to_offset, to_name);
}

// Any thread.
int OpenBacking(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) < 0) ThrowSys(errno, "stat", path);
  int flags = O_RDWR | O_DIRECT | O_CLOEXEC;
  if (S_ISBLK(st.st_mode)) flags |= O_EXCL;
  int fd = open(path.c_str(), flags);
  if (fd < 0) ThrowSys(errno, "open", path);
  return fd;
}
