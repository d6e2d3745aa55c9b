// The NCCL communicator of context parallelism (issue 19): one process per GPU of one host, NCCL
// from its PyPI wheel (nvidia-nccl-cu13; CMake option SP_NCCL, OFF by default). No NCCL or CUDA
// types appear here; builds without SP_NCCL get stubs that throw "[fn] built without NCCL".
//
// Usage (the parent makes the id before it starts the rank processes, which inherit it):
//   const sp::nccl_id id = sp::nccl_make_id();            // parent, before fork()
//   sp::nccl_comm comm(id, ranks, rank);                   // child `rank`: binds GPU `rank`
//   comm.gather_segments(k_buffer, segments, stream);      // all-gather of K rows, token order
//   comm.broadcast(plan_array, bytes, planner_rank, stream);
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace sp {

// True when this build has NCCL (SP_NCCL=ON).
bool nccl_available();

struct nccl_id {
  char bytes[128] = {};  // ncclUniqueId
};
nccl_id nccl_make_id();

// bytes at byte `offset` of a buffer, valid on rank `root` before a gather.
struct byte_segment {
  int32_t root = 0;
  int64_t offset = 0, bytes = 0;
};

class nccl_comm {
 public:
  // Sets the calling process's device to `rank` and joins the communicator (blocks until all
  // ranks joined).
  nccl_comm(const nccl_id& id, int ranks, int rank);
  ~nccl_comm();
  nccl_comm(nccl_comm&&) noexcept;
  nccl_comm& operator=(nccl_comm&&) noexcept;

  int ranks() const;
  int rank() const;

  // In place on every rank: after the call each segment of `buffer` (device memory, the same
  // layout on every rank) holds its root's bytes. One grouped ncclBroadcast per segment, so the
  // segments may be any disjoint ranges (zigzag chunks land in token order, unlike
  // ncclAllGather's rank-major layout). Asynchronous on `stream` (a cudaStream_t).
  void gather_segments(void* buffer, const std::vector<byte_segment>& segments, void* stream);
  // `bytes` of `buffer` from `root` to every rank (ncclBroadcast in place), asynchronous.
  void broadcast(void* buffer, int64_t bytes, int root, void* stream);

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace sp
