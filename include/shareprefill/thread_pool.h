// A small fixed-size thread pool with a dynamically scheduled parallel_for. The calling thread
// takes part in the work; exceptions thrown by the body are rethrown on the caller.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sp {

class thread_pool {
 public:
  static constexpr int max_threads = 1024;

  // threads == 0 means std::thread::hardware_concurrency(). Throws sp::error for a count outside
  // [0, max_threads] or when a worker thread cannot be started (the started ones are joined).
  explicit thread_pool(int threads = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls body(i, worker) for every i in [0, n); items are handed out one at a time in
  // increasing i, so callers order items longest-first to avoid a tail. worker is in [0, size()).
  void parallel_for(int64_t n, const std::function<void(int64_t i, int worker)>& body);

 private:
  void worker_loop(int worker);
  void stop_workers() noexcept;
  void run_items(int worker);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int)>* body_ = nullptr;
  int64_t n_items_ = 0;
  int64_t next_item_ = 0;
  int busy_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr first_error_;
};

}  // namespace sp
