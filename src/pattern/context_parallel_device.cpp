// Context-parallel ranks simulated on one GPU (context_parallel_device.h): per-rank sub-plans
// uploaded once, the unchanged CUDA kernel per rank (per ring step), LSE merges, row scatter.
#include "shareprefill/context_parallel_device.h"

#include <algorithm>

#include "shareprefill/cuda_copy.h"
#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp {

struct cuda_context_simulation::impl {
  context_partition partition;
  context_kv_exchange exchange = context_kv_exchange::all_gather;
  int64_t n = 0, heads = 0, dim = 0, nb = 0, block_size = 128;
  dtype type = dtype::bf16;
  std::vector<int32_t> pivot_heads;                   // ascending; sub-plan slot i = pivot_heads[i]
  std::vector<int32_t> pivot_slot;                    // [H] the caller's slots
  std::vector<std::vector<device_layer_plan>> plans;  // [rank][ring step] (all_gather: one)
  int64_t plan_bytes = 0;
  // The rank's results (shared by the ranks) and the ring's partial and fp32 accumulator.
  device_buffer out, lse, a, part_out, part_lse, acc, acc_lse;

  int64_t elem() const { return type == dtype::f32 ? 4 : 2; }
  tensor_view o_view(const device_buffer& b, dtype t) const {
    tensor_view v = tensor_view::contiguous(b.data(), t, {n, heads, dim});
    v.on_device = true;
    return v;
  }
  tensor_view l_view(const device_buffer& b) const {
    tensor_view v = tensor_view::contiguous(b.data(), dtype::f32, {heads, n});
    v.on_device = true;
    return v;
  }
};

cuda_context_simulation::cuda_context_simulation(const block_mask& mask,
                                                 const std::vector<int32_t>& pivot_slot,
                                                 const context_partition& partition,
                                                 context_kv_exchange exchange, int64_t dim,
                                                 dtype type)
    : impl_(std::make_unique<impl>()) {
  const char* fn = "cuda_context_simulation";
  check(partition.n_blocks() == mask.n_blocks && partition.ranks >= 1, fn, "the partition has ",
        partition.n_blocks(), " blocks for ", partition.ranks, " ranks, the mask ", mask.n_blocks,
        " blocks");
  check(static_cast<int64_t>(pivot_slot.size()) == mask.heads, fn, "pivot_slot has ",
        pivot_slot.size(), " entries, the mask ", mask.heads, " heads");
  check(type == dtype::bf16 || type == dtype::f16, fn, "q must be bf16 or f16, got ",
        dtype_name(type));
  check(dim == 64 || dim == 128, fn, "dim=", dim, " (64 or 128)");
  impl& s = *impl_;
  s.partition = partition, s.exchange = exchange, s.type = type, s.dim = dim;
  s.n = mask.n_tokens, s.heads = mask.heads, s.nb = mask.n_blocks, s.block_size = mask.block_size;
  s.pivot_slot = pivot_slot;
  for (int32_t h = 0; h < mask.heads; ++h)
    if (pivot_slot[static_cast<size_t>(h)] >= 0) s.pivot_heads.push_back(h);
  check(exchange == context_kv_exchange::all_gather || s.pivot_heads.empty(), fn,
        "the ring exchange cannot produce block attention (a pivot row needs all its keys); "
        "give every head pivot_slot -1");
  for (int64_t r = 0; r < partition.ranks; ++r) {
    const std::vector<uint8_t> rows = context_rank_rows(partition, r);
    std::vector<device_layer_plan> steps;
    const int64_t n_steps = exchange == context_kv_exchange::ring ? partition.ranks : 1;
    for (int64_t step = 0; step < n_steps; ++step) {
      const std::vector<uint8_t> cols =
          exchange == context_kv_exchange::ring
              ? context_rank_rows(partition, (r - step + partition.ranks) % partition.ranks)
              : std::vector<uint8_t>{};
      const block_mask sub = block_mask_restrict(mask, rows, cols);
      s.plan_bytes += context_plan_bytes(sub, rows);
      steps.emplace_back(sub, s.pivot_heads);
    }
    s.plans.push_back(std::move(steps));
  }
  const size_t out_bytes = static_cast<size_t>(s.n * s.heads * s.dim * s.elem());
  const size_t lse_bytes = static_cast<size_t>(s.heads * s.n * 4);
  s.out = device_buffer(out_bytes);
  s.lse = device_buffer(lse_bytes);
  if (!s.pivot_heads.empty())
    s.a = device_buffer(s.pivot_heads.size() * static_cast<size_t>(s.nb * s.nb * 4));
  if (exchange == context_kv_exchange::ring && partition.ranks > 1) {
    s.part_out = device_buffer(out_bytes);
    s.part_lse = device_buffer(lse_bytes);
    if (partition.ranks > 2) {
      s.acc = device_buffer(static_cast<size_t>(s.n * s.heads * s.dim * 4));
      s.acc_lse = device_buffer(lse_bytes);
    }
  }
}

cuda_context_simulation::~cuda_context_simulation() = default;
cuda_context_simulation::cuda_context_simulation(cuda_context_simulation&&) noexcept = default;
cuda_context_simulation& cuda_context_simulation::operator=(cuda_context_simulation&&) noexcept =
    default;

int64_t cuda_context_simulation::ranks() const {
  return impl_->partition.ranks;
}
int64_t cuda_context_simulation::plan_bytes_uploaded() const {
  return impl_->plan_bytes;
}

void cuda_context_simulation::run_rank(int64_t rank, const tensor_view& q, const tensor_view& k,
                                       const tensor_view& v, const cuda_attention_options& options,
                                       void* stream) {
  const impl& s = *impl_;
  check(rank >= 0 && rank < s.partition.ranks, "cuda_context_simulation::run_rank", "rank ", rank,
        " of ", s.partition.ranks);
  check(q.type == s.type && q.rank == 3 && q.shape[0] == s.n && q.shape[1] == s.heads,
        "cuda_context_simulation::run_rank", "q must be [", s.n, ", ", s.heads, ", ", s.dim,
        "] of ", dtype_name(s.type));
  const std::vector<device_layer_plan>& steps = s.plans[static_cast<size_t>(rank)];
  const tensor_view out = s.o_view(s.out, s.type), lse = s.l_view(s.lse);
  tensor_view a;
  if (!s.pivot_heads.empty()) {
    a = tensor_view::contiguous(s.a.data(), dtype::f32,
                                {static_cast<int64_t>(s.pivot_heads.size()), s.nb, s.nb});
    a.on_device = true;
  }
  // Step 0 straight into the rank's result; step 1 merges it with the partial into the fp32
  // accumulator (or, with two ranks, into the result); later steps merge into the accumulator,
  // the last one writing the result in q's dtype.
  cuda_attention_block_sparse(out, lse, a, q, k, v, steps[0].plan(), steps[0].scratch(), options,
                              stream);
  const int64_t last = static_cast<int64_t>(steps.size()) - 1;
  for (int64_t step = 1; step <= last; ++step) {
    const tensor_view po = s.o_view(s.part_out, s.type), pl = s.l_view(s.part_lse);
    const device_layer_plan& p = steps[static_cast<size_t>(step)];
    cuda_attention_block_sparse(po, pl, {}, q, k, v, p.plan(), p.scratch(), options, stream);
    const bool from_result = step == 1, into_result = step == last;
    const tensor_view acc = into_result ? out : s.o_view(s.acc, dtype::f32);
    const tensor_view acc_lse = into_result ? lse : s.l_view(s.acc_lse);
    const tensor_view prev = from_result ? out : s.o_view(s.acc, dtype::f32);
    const tensor_view prev_lse = from_result ? lse : s.l_view(s.acc_lse);
    cuda_merge_attention_states(acc, acc_lse, prev, prev_lse, po, pl, stream);
  }
}

void cuda_context_simulation::gather_rank(int64_t rank, const tensor_view& out,
                                          const tensor_view& lse,
                                          const tensor_view& block_attention, void* stream) const {
  const char* fn = "cuda_context_simulation::gather_rank";
  const impl& s = *impl_;
  check(rank >= 0 && rank < s.partition.ranks, fn, "rank ", rank, " of ", s.partition.ranks);
  check(out.on_device && out.type == s.type && out.rank == 3 && out.is_contiguous() &&
            out.shape[0] == s.n && out.shape[1] == s.heads && out.shape[2] == s.dim,
        fn, "out must be a contiguous device [", s.n, ", ", s.heads, ", ", s.dim, "] view of ",
        dtype_name(s.type));
  check(lse.empty() || (lse.on_device && lse.type == dtype::f32 && lse.is_contiguous() &&
                        lse.rank == 2 && lse.shape[0] == s.heads && lse.shape[1] == s.n),
        fn, "lse must be empty or a contiguous device f32 [", s.heads, ", ", s.n, "] view");
  int32_t max_slot = -1;
  for (int32_t slot : s.pivot_slot) max_slot = std::max(max_slot, slot);
  check(block_attention.empty() == s.pivot_heads.empty(), fn, "block_attention is ",
        block_attention.empty() ? "empty" : "set", " but the plan has ", s.pivot_heads.size(),
        " pivot heads");
  check(block_attention.empty() ||
            (block_attention.on_device && block_attention.type == dtype::f32 &&
             block_attention.is_contiguous() && block_attention.rank == 3 &&
             block_attention.shape[0] > max_slot && block_attention.shape[1] == s.nb &&
             block_attention.shape[2] == s.nb),
        fn, "block_attention must be a contiguous device f32 [> ", max_slot, ", ", s.nb, ", ", s.nb,
        "] view");
  const int64_t row = s.heads * s.dim * s.elem();
  for (const block_run& run : context_rank_runs(s.partition, rank)) {
    const int64_t t0 = run.begin * s.block_size, t1 = std::min(run.end * s.block_size, s.n);
    cuda_copy_2d(static_cast<char*>(out.data) + t0 * row, row,
                 static_cast<const char*>(s.out.data()) + t0 * row, row, (t1 - t0) * row, 1,
                 stream);
    if (!lse.empty())
      cuda_copy_2d(static_cast<float*>(lse.data) + t0, s.n * 4,
                   static_cast<const float*>(s.lse.data()) + t0, s.n * 4, (t1 - t0) * 4, s.heads,
                   stream);
    for (size_t i = 0; i < s.pivot_heads.size() && !block_attention.empty(); ++i) {
      const int64_t slot = s.pivot_slot[static_cast<size_t>(s.pivot_heads[i])];
      cuda_copy_2d(static_cast<float*>(block_attention.data) + (slot * s.nb + run.begin) * s.nb,
                   s.nb * 4,
                   static_cast<const float*>(s.a.data()) +
                       (static_cast<int64_t>(i) * s.nb + run.begin) * s.nb,
                   s.nb * 4, s.nb * 4, run.end - run.begin, stream);
    }
  }
}

std::vector<int32_t> download_pivot_slots(const layer_plan_view& plan) {
  check(plan.on_device && plan.heads > 0, "download_pivot_slots", "a device plan is needed");
  std::vector<int32_t> slots(static_cast<size_t>(plan.heads), -1);
  if (plan.max_pivots == 0 || plan.pivot_slot == nullptr) return slots;
  cuda_copy_2d(slots.data(), plan.heads * 4, plan.pivot_slot, plan.heads * 4, plan.heads * 4, 1,
               nullptr);
  cuda_synchronize();
  return slots;
}

}  // namespace sp
