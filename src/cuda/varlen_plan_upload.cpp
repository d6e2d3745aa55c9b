// device_varlen_plan: a varlen batch's host plan (varlen_plan_build) copied into one device
// buffer: the sequences, the concatenated CSR, the schedule, each item's sequence and the work
// counter of the Hopper kernel's dynamic grid.
#include <cuda_runtime.h>

#include <cstring>

#include "cuda_check.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"

namespace sp {

namespace {

int64_t aligned(int64_t bytes) {
  return (bytes + 255) / 256 * 256;
}

enum array_index {
  sequences_at,
  row_ptr_at,
  col_idx_at,
  schedule_at,
  item_sequence_at,
  counter_at
};

}  // namespace

device_varlen_plan::device_varlen_plan(const std::vector<int32_t>& cu_seqlens,
                                       const std::vector<block_mask>& masks, void* stream,
                                       int64_t tie_band) {
  const char* fn = "device_varlen_plan";
  const varlen_plan plan = varlen_plan_build(cu_seqlens, masks, tie_band);
  check(plan.block_size == 128, fn, "block_size=", plan.block_size, " (the CUDA kernel needs 128)");
  sequences_ = static_cast<int64_t>(plan.sequences.size());
  total_tokens_ = plan.total_tokens;
  heads_ = plan.heads;
  work_items_ = plan.work_items();
  const int64_t bytes[6] = {sequences_ * static_cast<int64_t>(sizeof(varlen_sequence)),
                            static_cast<int64_t>(plan.row_ptr.size() * sizeof(int64_t)),
                            static_cast<int64_t>(plan.col_idx.size() * sizeof(int32_t)),
                            static_cast<int64_t>(plan.schedule.size() * sizeof(int32_t)),
                            static_cast<int64_t>(plan.item_sequence.size() * sizeof(int32_t)),
                            static_cast<int64_t>(sizeof(unsigned long long))};
  const void* sources[5] = {plan.sequences.data(), plan.row_ptr.data(), plan.col_idx.data(),
                            plan.schedule.data(), plan.item_sequence.data()};
  int64_t total = 0;
  for (int i = 0; i < 6; ++i) {
    offsets_[i] = total;
    total += aligned(std::max<int64_t>(bytes[i], 1));
  }
  host_.assign(static_cast<size_t>(total), std::byte{0});
  for (int i = 0; i < 5; ++i)
    if (bytes[i] > 0)
      std::memcpy(host_.data() + offsets_[i], sources[i], static_cast<size_t>(bytes[i]));
  buffer_ = device_buffer(static_cast<size_t>(total));
  cuda::check_cuda(cudaMemcpyAsync(buffer_.data(), host_.data(), static_cast<size_t>(total),
                                   cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)),
                   fn, "plan upload");
}

template <class T>
static T* at(const device_buffer& b, int64_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(b.data()) + offset);
}

const varlen_sequence* device_varlen_plan::sequence_info() const {
  return at<const varlen_sequence>(buffer_, offsets_[sequences_at]);
}
const int64_t* device_varlen_plan::row_ptr() const {
  return at<const int64_t>(buffer_, offsets_[row_ptr_at]);
}
const int32_t* device_varlen_plan::col_idx() const {
  return at<const int32_t>(buffer_, offsets_[col_idx_at]);
}
const int32_t* device_varlen_plan::schedule() const {
  return at<const int32_t>(buffer_, offsets_[schedule_at]);
}
const int32_t* device_varlen_plan::item_sequence() const {
  return at<const int32_t>(buffer_, offsets_[item_sequence_at]);
}
unsigned long long* device_varlen_plan::item_counter() const {
  return at<unsigned long long>(buffer_, offsets_[counter_at]);
}

}  // namespace sp
