#include "discard_worker.h"

#include <linux/fs.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "sys_error.h"

// Queue thread.
DiscardWorker::DiscardWorker(int fd, const char* name) : fd_(fd) {
  done_fd_ = eventfd(0, EFD_CLOEXEC);
  if (done_fd_ < 0) ThrowSys(errno, "eventfd", "(discard worker)");
  std::string thread_name(name);
  thread_ = std::thread([this, thread_name] {
    pthread_setname_np(pthread_self(), thread_name.substr(0, 15).c_str());
    Run();
  });
}

// Queue thread.
DiscardWorker::~DiscardWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  close(done_fd_);
}

// Queue thread.
void DiscardWorker::Submit(const Job& job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(job);
  }
  cv_.notify_one();
}

// Queue thread.
void DiscardWorker::TakeDone(std::vector<Done>* out) {
  std::lock_guard<std::mutex> lock(mu_);
  out->insert(out->end(), done_.begin(), done_.end());
  done_.clear();
}

// Worker thread.
void DiscardWorker::Run() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (stop_) return;
      job = jobs_.front();
      jobs_.pop_front();
    }
    uint64_t range[2] = {job.offset, job.len};
    int res = ioctl(fd_, BLKDISCARD, range) < 0 ? -errno : 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(Done{job.tag, job.seg, res});
    }
    uint64_t one = 1;
    ssize_t n = write(done_fd_, &one, sizeof(one));
    (void)n;  // cannot overflow: the queue thread reads the counter back to zero on every wakeup
  }
}
