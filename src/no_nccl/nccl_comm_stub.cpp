// Builds without NCCL (SP_NCCL=OFF, the default): the communicator exists so callers compile
// everywhere; every call but nccl_available throws.
#include "shareprefill/error.h"
#include "shareprefill/nccl_comm.h"

namespace sp {

struct nccl_comm::impl {};

bool nccl_available() {
  return false;
}

nccl_id nccl_make_id() {
  fail("nccl_make_id", "built without NCCL (configure with -DSP_NCCL=ON)");
}

nccl_comm::nccl_comm(const nccl_id&, int, int) {
  fail("nccl_comm", "built without NCCL (configure with -DSP_NCCL=ON)");
}
nccl_comm::~nccl_comm() = default;
nccl_comm::nccl_comm(nccl_comm&&) noexcept = default;
nccl_comm& nccl_comm::operator=(nccl_comm&&) noexcept = default;
int nccl_comm::ranks() const {
  return 0;
}
int nccl_comm::rank() const {
  return 0;
}
void nccl_comm::gather_segments(void*, const std::vector<byte_segment>&, void*) {
  fail("nccl_comm::gather_segments", "built without NCCL");
}
void nccl_comm::broadcast(void*, int64_t, int, void*) {
  fail("nccl_comm::broadcast", "built without NCCL");
}

}  // namespace sp
