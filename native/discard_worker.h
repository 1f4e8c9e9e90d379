// DiscardWorker: runs BLKDISCARD ioctls for one queue on a thread of its own, so that a large discard
// (up to the discard limit per piece) does not stall the queue thread. The ioctl is synchronous and
// cannot be cancelled; the queue thread hands over pieces and collects the results after the worker
// wrote its eventfd, which the queue thread keeps a read on in its ring.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

class DiscardWorker {
 public:
  struct Job {
    uint16_t tag = 0;
    uint32_t seg = 0;
    uint64_t offset = 0;  // bytes on main
    uint64_t len = 0;
  };
  struct Done {
    uint16_t tag = 0;
    uint32_t seg = 0;
    int res = 0;  // 0 or a negative errno
  };

  // Queue thread. `fd` is main (a block device); `name` names the thread (15 characters at most).
  // Throws SysError when the eventfd cannot be made.
  DiscardWorker(int fd, const char* name);
  // Queue thread. Stops and joins the thread; the job it runs finishes first (an ioctl cannot be
  // interrupted). Jobs not started are dropped: the queue thread only destroys an idle worker.
  ~DiscardWorker();
  DiscardWorker(const DiscardWorker&) = delete;
  DiscardWorker& operator=(const DiscardWorker&) = delete;

  // Queue thread. Eventfd written after each finished job.
  int done_fd() const { return done_fd_; }
  // Queue thread. Queues one piece.
  void Submit(const Job& job);
  // Queue thread. Moves the finished jobs' results into `out` (appended).
  void TakeDone(std::vector<Done>* out);

 private:
  // Worker thread.
  void Run();

  int fd_;
  int done_fd_ = -1;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::vector<Done> done_;
  bool stop_ = false;
  std::thread thread_;
};
