// The CPU resources the bindings share: one thread pool for the whole module (the CPU kernels
// and the planner parallelise over it), used by one caller at a time.
#pragma once

#include <mutex>

#include "shareprefill/thread_pool.h"

namespace sp_python {

// Locks the module's pool for the lifetime of the object; call with the GIL released.
class cpu_pool_lease {
 public:
  cpu_pool_lease();
  sp::thread_pool& pool() const { return pool_; }

 private:
  std::unique_lock<std::mutex> lock_;
  sp::thread_pool& pool_;
};

}  // namespace sp_python
