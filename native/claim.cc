#include "claim.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "sys_error.h"

namespace {
// Any thread. A 4 KiB-aligned heap buffer, as O_DIRECT needs.
struct Aligned {
  explicit Aligned(size_t n) {
    if (posix_memalign(&p, 4096, n ? n : 4096) != 0) ThrowSys(ENOMEM, "posix_memalign");
  }
  ~Aligned() { free(p); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  void* p = nullptr;
};
}  // namespace

// Any thread.
Claim ClaimBacking(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) < 0) ThrowSys(errno, "stat", path);
  bool blk = S_ISBLK(st.st_mode);
  if (!blk && !S_ISREG(st.st_mode)) ThrowSys(ENOTBLK, "open", path + " (not a block device or regular file)");
  int fd = open(path.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC | (blk ? O_EXCL : 0));
  if (fd < 0) ThrowSys(errno, "open", path);
  struct stat fst {};
  if (fstat(fd, &fst) < 0) {
    int e = errno;
    close(fd);
    ThrowSys(e, "fstat", path);
  }
  if (S_ISBLK(fst.st_mode) != blk) {  // replaced between stat and open
    close(fd);
    ThrowSys(EAGAIN, "open", path + " (changed while being opened)");
  }
  if (!blk && flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    close(fd);
    ThrowSys(e == EWOULDBLOCK ? EBUSY : e, "flock", path);
  }
  Claim c;
  try {
    c.info = ProbeBackingFd(fd, path);
  } catch (const SysError&) {
    close(fd);
    throw;
  }
  c.fd = fd;
  c.is_block_device = blk;
  c.rdev = blk ? fst.st_rdev : 0;
  c.dev = fst.st_dev;
  c.ino = fst.st_ino;
  return c;
}

// Any thread.
void ReleaseClaim(int fd) {
  if (close(fd) < 0 && errno != EINTR) ThrowSys(errno, "close", "claimed fd " + std::to_string(fd));
}

// Any thread.
int DupClaim(int fd, const char* what) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0) ThrowSys(errno, "dup", what);
  return d;
}

// Worker thread.
void ReadClaimed(int fd, uint64_t offset, uint32_t len, std::string* out) {
  Aligned buf(len);
  char* p = static_cast<char*>(buf.p);
  uint32_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, p + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowSys(errno, "read", "at byte " + std::to_string(offset + done));
    if (n == 0) {
      memset(p + done, 0, len - done);  // past the end
      break;
    }
    done += static_cast<uint32_t>(n);
  }
  out->assign(p, len);
}

// Worker thread.
void WriteClaimed(int fd, uint64_t offset, const std::string& data) {
  Aligned buf(data.size());
  memcpy(buf.p, data.data(), data.size());
  const char* p = static_cast<const char*>(buf.p);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, p + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ThrowSys(errno, "write", "at byte " + std::to_string(offset + done));
    if (n == 0) ThrowSys(ENOSPC, "write", "past the end at byte " + std::to_string(offset + done));
    done += static_cast<size_t>(n);
  }
}

// Worker thread.
void SyncClaimed(int fd) {
  if (fdatasync(fd) < 0) ThrowSys(errno, "fdatasync");
}
