// Fixed-size thread pool; parallel_for hands out items one at a time under a mutex (items are
// coarse: a head's query block of attention, ~0.1-10 ms each).
#include "shareprefill/thread_pool.h"

#include <system_error>

#include "shareprefill/error.h"

namespace sp {

thread_pool::thread_pool(int threads) {
  check(threads >= 0 && threads <= max_threads, "thread_pool",
        "thread count must be in [0, ", max_threads, "] (0 = one per core), got ", threads);
  if (threads == 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  workers_.reserve(static_cast<size_t>(threads - 1));
  try {
    for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  } catch (const std::system_error& e) {
    // The workers started so far wait on wake_: stop and join them before the members go.
    const size_t started = workers_.size();
    stop_workers();
    fail("thread_pool", "cannot start worker thread ", started + 1, " of ", threads - 1, ": ",
         e.what());
  }
}

thread_pool::~thread_pool() { stop_workers(); }

void thread_pool::stop_workers() noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void thread_pool::run_items(int worker) {
  for (;;) {
    int64_t i;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (next_item_ >= n_items_) return;
      i = next_item_++;
    }
    try {
      (*body_)(i, worker);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_error_) first_error_ = std::current_exception();
      next_item_ = n_items_;  // stop handing out work
    }
  }
}

void thread_pool::worker_loop(int worker) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      ++busy_;
    }
    run_items(worker);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --busy_;
    }
    done_.notify_all();
  }
}

void thread_pool::parallel_for(int64_t n, const std::function<void(int64_t, int)>& body) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) body(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    n_items_ = n;
    next_item_ = 0;
    first_error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_items(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    // Workers that have not woken yet find no items left and leave at once.
    done_.wait(lock, [&] { return busy_ == 0 && next_item_ >= n_items_; });
    error = first_error_;
    first_error_ = nullptr;
    body_ = nullptr;
    n_items_ = 0;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace sp
