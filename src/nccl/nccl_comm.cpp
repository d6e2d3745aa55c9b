// nccl_comm (nccl_comm.h) over the NCCL library of the nvidia-nccl-cu13 wheel.
#include "shareprefill/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "shareprefill/error.h"

namespace sp {
namespace {

void check_nccl(ncclResult_t status, const char* fn, const char* what) {
  if (status != ncclSuccess) fail(fn, what, ": ", ncclGetErrorString(status));
}

}  // namespace

struct nccl_comm::impl {
  ncclComm_t comm = nullptr;
  int ranks = 0, rank = 0;
};

bool nccl_available() {
  return true;
}

nccl_id nccl_make_id() {
  static_assert(sizeof(ncclUniqueId) == sizeof(nccl_id::bytes), "ncclUniqueId size");
  ncclUniqueId u;
  check_nccl(ncclGetUniqueId(&u), "nccl_make_id", "ncclGetUniqueId");
  nccl_id id;
  std::memcpy(id.bytes, &u, sizeof(u));
  return id;
}

nccl_comm::nccl_comm(const nccl_id& id, int ranks, int rank) : impl_(std::make_unique<impl>()) {
  const char* fn = "nccl_comm";
  check(ranks >= 1 && rank >= 0 && rank < ranks, fn, "rank ", rank, " of ", ranks);
  int devices = 0;
  check(cudaGetDeviceCount(&devices) == cudaSuccess && devices >= ranks, fn, ranks,
        " ranks need as many GPUs, this host has ", devices);
  check(cudaSetDevice(rank) == cudaSuccess, fn, "cudaSetDevice(", rank, ") failed");
  ncclUniqueId u;
  std::memcpy(&u, id.bytes, sizeof(u));
  check_nccl(ncclCommInitRank(&impl_->comm, ranks, u, rank), fn, "ncclCommInitRank");
  impl_->ranks = ranks, impl_->rank = rank;
}

nccl_comm::~nccl_comm() {
  if (impl_ && impl_->comm != nullptr) ncclCommDestroy(impl_->comm);
}
nccl_comm::nccl_comm(nccl_comm&&) noexcept = default;
nccl_comm& nccl_comm::operator=(nccl_comm&&) noexcept = default;

int nccl_comm::ranks() const {
  return impl_->ranks;
}
int nccl_comm::rank() const {
  return impl_->rank;
}

void nccl_comm::gather_segments(void* buffer, const std::vector<byte_segment>& segments,
                                void* stream) {
  const char* fn = "nccl_comm::gather_segments";
  for (const byte_segment& s : segments)
    check(s.root >= 0 && s.root < impl_->ranks && s.offset >= 0 && s.bytes >= 0, fn,
          "segment root ", s.root, " offset ", s.offset, " bytes ", s.bytes, " (", impl_->ranks,
          " ranks)");
  check_nccl(ncclGroupStart(), fn, "ncclGroupStart");
  for (const byte_segment& s : segments) {
    if (s.bytes == 0) continue;
    char* p = static_cast<char*>(buffer) + s.offset;
    check_nccl(ncclBroadcast(p, p, static_cast<size_t>(s.bytes), ncclChar, s.root, impl_->comm,
                             static_cast<cudaStream_t>(stream)),
               fn, "ncclBroadcast");
  }
  check_nccl(ncclGroupEnd(), fn, "ncclGroupEnd");
}

void nccl_comm::broadcast(void* buffer, int64_t bytes, int root, void* stream) {
  gather_segments(buffer, {{root, 0, bytes}}, stream);
}

}  // namespace sp
