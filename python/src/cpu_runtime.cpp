// The module's CPU thread pool (cpu_runtime.h), created at first use with one thread per core.
#include "cpu_runtime.h"

namespace sp_python {
namespace {

std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}

sp::thread_pool& shared_pool() {
  static sp::thread_pool pool(0);
  return pool;
}

}  // namespace

cpu_pool_lease::cpu_pool_lease() : lock_(pool_mutex()), pool_(shared_pool()) {}

}  // namespace sp_python
