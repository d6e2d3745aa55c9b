// cuda_attention_block_sparse and cuda_attention_varlen: validate the tensor views against the
// plan at the API boundary, fill the kernel's POD parameters (attention_params.h, the counterpart
// of FA3's Flash_fwd_params) and dispatch the runtime (kernel, dtype, head dim) to its compiled
// instantiation. This is the one runtime -> compile-time switch of the CUDA attention.
// Kernel choice (cuda_attention_options): the Hopper kernel (sm_90a) on compute capability 9.0
// when the build has it, else the portable kernel; the Hopper grid is one CTA per SM unless the
// options give a CTA count (measurements in docs/CUDA.md).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "attention_params.h"
#include "cuda_check.h"
#include "hopper_params.h"
#include "shareprefill/cuda_attention.h"

namespace sp::cuda {

template <class T, int D>
void launch_attention_fwd(const attention_fwd_params& p, int64_t work_items, cudaStream_t stream);

}  // namespace sp::cuda

namespace sp {

namespace {

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// A [N, heads, dim] device view of 16-bit values with heads contiguous in a token: returns its
// token stride (elements).
int64_t token_stride_of(const char* fn, const char* name, const tensor_view& t, int64_t n,
                        int64_t heads, int64_t dim, dtype type) {
  check(!t.empty() && t.on_device, fn, name, " must be a device view (on_device; ",
        t.empty() ? "it is empty" : "it is in host memory: the CPU call is attention_block_sparse",
        ")");
  check(t.type == type, fn, name, " has dtype code ", static_cast<int>(t.type), ", expected ",
        static_cast<int>(type), " (q's; bf16 or f16)");
  check(t.rank == 3 && t.shape[0] == n && t.shape[1] == heads && t.shape[2] == dim, fn, name,
        " has rank ", t.rank, " shape [", t.shape[0], ", ", t.shape[1], ", ", t.shape[2],
        "], expected [", n, ", ", heads, ", ", dim, "]");
  check(t.stride[2] == 1 && t.stride[1] == dim, fn, name, " strides [", t.stride[0], ", ",
        t.stride[1], ", ", t.stride[2], "]: heads must be contiguous within a token (stride ", dim,
        ", 1)");
  check(t.stride[0] >= heads * dim && t.stride[0] % 8 == 0, fn, name, " token stride ", t.stride[0],
        " (a multiple of 8, at least ", heads * dim, ")");
  check(aligned16(t.data), fn, name, " must be 16-byte aligned");
  return t.stride[0];
}

// An optional contiguous f32 device view of the given shape; null when empty.
float* f32_output_of(const char* fn, const char* name, const tensor_view& t,
                     std::initializer_list<int64_t> shape) {
  if (t.empty()) return nullptr;
  check(t.on_device, fn, name, " must be a device view (on_device)");
  bool same = t.type == dtype::f32 && t.rank == static_cast<int>(shape.size());
  int d = 0;
  for (int64_t extent : shape) same = same && t.shape[d++] == extent;
  int64_t expected_stride = 1;
  for (int i = t.rank - 1; same && i >= 0; --i) {
    same = t.stride[i] == expected_stride;
    expected_stride *= t.shape[i];
  }
  std::string want;
  for (int64_t extent : shape) want += (want.empty() ? "" : ", ") + std::to_string(extent);
  check(same, fn, name, " must be a contiguous f32 view of shape [", want, "]");
  return static_cast<float*>(t.data);
}

void check_plan(const char* fn, const layer_plan_view& plan, const attention_scratch_view& scratch,
                int64_t n_q, int64_t heads) {
  check(plan.on_device && scratch.on_device, fn, "the plan and the scratch must be device views",
        " (on_device=", plan.on_device, ", ", scratch.on_device, ")");
  check(plan.block_size == cuda::mask_block, fn, "plan block_size=", plan.block_size,
        " (the CUDA kernel needs ", cuda::mask_block, ")");
  check(plan.query_offset >= 0 && plan.query_offset < plan.n_tokens &&
            plan.query_offset % cuda::mask_block == 0,
        fn, "plan query_offset=", plan.query_offset, " (a multiple of ", cuda::mask_block,
        " below n_tokens=", plan.n_tokens, ")");
  check(n_q == plan.n_tokens - plan.query_offset && heads == plan.heads, fn,
        "plan is for n=", plan.n_tokens, " query_offset=", plan.query_offset, " heads=", plan.heads,
        ", q has ", n_q, " tokens (expected ", plan.n_tokens - plan.query_offset, ") and ", heads,
        " heads");
  check(plan.n_blocks == (plan.n_tokens + cuda::mask_block - 1) / cuda::mask_block &&
            plan.n_blocks < (int64_t{1} << 24) && heads < (int64_t{1} << 24),
        fn, "plan n_blocks=", plan.n_blocks, " for n_tokens=", plan.n_tokens, " heads=", heads);
  check(plan.row_ptr != nullptr && plan.col_idx != nullptr && plan.schedule != nullptr, fn,
        "the plan's row_ptr, col_idx and schedule must be set");
  check(scratch.item_counter != nullptr, fn, "scratch.item_counter must be set");
  check(plan.walk_head_count >= 0 && plan.walk_head_count <= heads &&
            (plan.walk_head_count == 0 || plan.walk_heads != nullptr),
        fn, "plan walk_head_count=", plan.walk_head_count, " for ", heads,
        " heads (walk_heads must be set when it is positive)");
  if (plan.max_pivots > 0) {
    check(plan.pivot_slot != nullptr && plan.scratch_offset != nullptr, fn,
          "the plan's pivot_slot and scratch_offset must be set when max_pivots > 0");
    check(scratch.tile_mass != nullptr && scratch.tile_capacity >= plan.scratch_tiles, fn,
          "scratch holds ", scratch.tile_capacity, " tiles, the plan needs ", plan.scratch_tiles);
  }
}

// Auto picks the Hopper kernel: it passed the CUDA tests (both dtypes, D 64/128) on the H200.
constexpr bool hopper_by_default = true;

int device_attribute(const char* fn, cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  cuda::check_cuda(cudaGetDevice(&device), fn, "cudaGetDevice");
  cuda::check_cuda(cudaDeviceGetAttribute(&value, attribute, device), fn, "cudaDeviceGetAttribute");
  return value;
}

bool device_is_hopper(const char* fn) {
  return device_attribute(fn, cudaDevAttrComputeCapabilityMajor) == 9 &&
         device_attribute(fn, cudaDevAttrComputeCapabilityMinor) == 0;
}

// The checks on q and k shared by both entry points; returns q's head dim.
int64_t check_qk(const char* fn, const tensor_view& q, const tensor_view& k) {
  check(!q.empty() && q.rank == 3 && !k.empty() && k.rank == 3, fn,
        "q and k must be rank-3 views ([N, H, D] and [N, Hkv, D])");
  const int64_t n = q.shape[0], heads = q.shape[1], dim = q.shape[2], kv_heads = k.shape[1];
  check(q.type == dtype::bf16 || q.type == dtype::f16, fn, "q has dtype code ",
        static_cast<int>(q.type), " (bf16 or f16 expected)");
  check(dim == 64 || dim == 128, fn, "dim=", dim, " (64 or 128 supported)");
  check(n > 0 && heads > 0 && kv_heads > 0 && heads % kv_heads == 0, fn, "n=", n, " heads=", heads,
        " kv_heads=", kv_heads, " (positive, heads divisible by kv_heads)");
  return dim;
}

// causal: the Hopper kernel's walk of the full causal mask (D = 64; p.items its 192-row items).
template <class T>
void launch(cuda_kernel kernel, bool causal, const cuda::attention_fwd_params& p, int64_t dim,
            int64_t work_items, const cuda::hopper_options& hopper,
            unsigned long long* item_counter, cudaStream_t stream) {
  using cuda::hopper_causal_consumers;
  using cuda::hopper_plan_consumers;
  if (kernel == cuda_kernel::hopper) {
    if (causal)
      cuda::launch_hopper_fwd<T, 64, hopper_causal_consumers>(p, work_items, hopper, item_counter,
                                                              stream);
    else if (dim == 64)
      cuda::launch_hopper_fwd<T, 64, hopper_plan_consumers>(p, work_items, hopper, item_counter,
                                                            stream);
    else
      cuda::launch_hopper_fwd<T, 128, hopper_plan_consumers>(p, work_items, hopper, item_counter,
                                                             stream);
  } else {
    if (dim == 64)
      cuda::launch_attention_fwd<T, 64>(p, work_items, stream);
    else
      cuda::launch_attention_fwd<T, 128>(p, work_items, stream);
  }
}

}  // namespace

cuda_kernel cuda_attention_kernel(const cuda_attention_options& options) {
  const char* fn = "cuda_attention_kernel";
  check(options.kernel == cuda_kernel::automatic || options.kernel == cuda_kernel::portable ||
            options.kernel == cuda_kernel::hopper,
        fn, "kernel code ", static_cast<int>(options.kernel));
  if (options.kernel == cuda_kernel::portable) return cuda_kernel::portable;
  const bool hopper = cuda::hopper_path_compiled() && device_is_hopper(fn);
  check(options.kernel == cuda_kernel::automatic || hopper, fn, "kernel hopper requested but ",
        cuda::hopper_path_compiled() ? "the device is not compute capability 9.0"
                                     : "this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES)");
  return hopper && (options.kernel == cuda_kernel::hopper || hopper_by_default)
             ? cuda_kernel::hopper
             : cuda_kernel::portable;
}

namespace {

// The rule of cuda_attention_walks_causal for the kernel the options already selected.
bool walks_causal(const cuda_attention_options& options, int64_t dim, cuda_kernel kernel) {
  return options.causal_kernel && dim == 64 && kernel == cuda_kernel::hopper;
}

}  // namespace

bool cuda_attention_walks_causal(const cuda_attention_options& options, int64_t dim) {
  return walks_causal(options, dim, cuda_attention_kernel(options));
}

namespace {

// Launches p (its tensors, sizes and plan arrays filled) on the kernel the options select.
// Where the Hopper kernel walks causally (walks_causal): a full causal plan without pivot heads
// (full_causal) is walked whole; a plan with walk_head_count walked heads runs its schedule's
// items before theirs, then the walk over walk_heads: [walk_head_count] (device); with
// walk_count (device, [1]) walk_head_count is a bound and the kernel reads the count.
void launch_checked(const char* fn, cuda::attention_fwd_params& p, const tensor_view& q,
                    const cuda_attention_options& options, unsigned long long* item_counter,
                    void* stream, bool full_causal = false, int64_t walk_head_count = 0,
                    const int32_t* walk_heads = nullptr, const int32_t* walk_count = nullptr) {
  const int64_t dim = q.shape[2];
  const cuda_kernel kernel = cuda_attention_kernel(options);
  const bool walk = walks_causal(options, dim, kernel);
  check(options.ctas >= 0 && options.ctas < (int64_t{1} << 31), fn, "ctas=", options.ctas);
  check(kernel != cuda_kernel::hopper || (p.n < (int64_t{1} << 31) && p.n_q < (int64_t{1} << 31)),
        fn, "n=", p.n, " (the hopper kernel addresses tokens in int32)");
  check(p.items < (int64_t{1} << 31), fn, p.items, " work items (at most 2^31 - 1)");
  p.heads = static_cast<int32_t>(q.shape[1]);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(dim)));
  cuda::hopper_options hopper;
  if (kernel == cuda_kernel::hopper)
    hopper.ctas =
        options.ctas > 0 ? options.ctas : device_attribute(fn, cudaDevAttrMultiProcessorCount);
  const auto s = static_cast<cudaStream_t>(stream);
  const auto run = [&](const cuda::attention_fwd_params& params, bool causal) {
    if (params.items == 0) return;
    if (q.type == dtype::bf16)
      launch<__nv_bfloat16>(kernel, causal, params, dim, params.items, hopper, item_counter, s);
    else
      launch<__half>(kernel, causal, params, dim, params.items, hopper, item_counter, s);
  };
  constexpr int64_t walk_rows = 64 * cuda::hopper_causal_consumers;
  const int64_t walk_blocks = (p.n_q + walk_rows - 1) / walk_rows;
  if (walk && full_causal) {
    p.items = p.heads * walk_blocks;
    run(p, true);
  } else if (walk && walk_head_count > 0) {
    cuda::attention_fwd_params walked = p;
    if (walk_count != nullptr)
      p.walk_count = walk_count;  // the kernel subtracts
    else
      p.items -= walk_head_count * (p.items / p.heads);  // the schedule's items before theirs
    run(p, false);
    walked.walk_heads = walk_heads;
    walked.walk_head_count = static_cast<int32_t>(walk_head_count);
    walked.walk_count = walk_count;
    walked.items = walk_head_count * walk_blocks;
    run(walked, true);
  } else {
    run(p, false);
  }
}

}  // namespace

void cuda_attention_block_sparse(const tensor_view& out, const tensor_view& lse,
                                 const tensor_view& block_attention, const tensor_view& q,
                                 const tensor_view& k, const tensor_view& v,
                                 const layer_plan_view& plan, const attention_scratch_view& scratch,
                                 const cuda_attention_options& options, void* stream) {
  const char* fn = "cuda_attention_block_sparse";
  const int64_t dim = check_qk(fn, q, k);
  const int64_t n_q = q.shape[0], heads = q.shape[1], kv_heads = k.shape[1];
  check_plan(fn, plan, scratch, n_q, heads);
  const int64_t n = plan.n_tokens;
  cuda::attention_fwd_params p;
  p.q_token_stride = token_stride_of(fn, "q", q, n_q, heads, dim, q.type);
  p.k_token_stride = token_stride_of(fn, "k", k, n, kv_heads, dim, q.type);
  p.v_token_stride = token_stride_of(fn, "v", v, n, kv_heads, dim, q.type);
  p.out_token_stride = token_stride_of(fn, "out", out, n_q, heads, dim, q.type);
  p.lse = f32_output_of(fn, "lse", lse, {heads, n_q});
  float* a = f32_output_of(fn, "block_attention", block_attention,
                           {plan.max_pivots, plan.n_blocks, plan.n_blocks});
  check((plan.max_pivots > 0) == (a != nullptr), fn, "block_attention is ",
        a != nullptr ? "set" : "empty", " but the plan has max_pivots=", plan.max_pivots);

  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.n = n;
  p.n_q = n_q;
  p.q_offset = plan.query_offset;
  p.items = layer_plan_work_items(plan);
  p.group = static_cast<int32_t>(heads / kv_heads);
  p.n_blocks = static_cast<int32_t>(plan.n_blocks);
  p.row_ptr = plan.row_ptr;
  p.col_idx = plan.col_idx;
  p.work_items = plan.schedule;
  p.enabled = plan.run_if;
  if (plan.max_pivots > 0) {
    p.pivot_slot = plan.pivot_slot;
    p.scratch_offset = plan.scratch_offset;
    p.tile_mass = scratch.tile_mass;
    p.block_attention = a;
  }
  launch_checked(fn, p, q, options, scratch.item_counter, stream, plan.full_causal && a == nullptr,
                 plan.walk_head_count, plan.walk_heads, plan.walk_count);
}

void cuda_attention_varlen(const tensor_view& out, const tensor_view& lse, const tensor_view& q,
                           const tensor_view& k, const tensor_view& v,
                           const device_varlen_plan& plan, const cuda_attention_options& options,
                           void* stream) {
  const char* fn = "cuda_attention_varlen";
  const int64_t dim = check_qk(fn, q, k);
  const int64_t n = q.shape[0], heads = q.shape[1], kv_heads = k.shape[1];
  check(n == plan.total_tokens() && heads == plan.heads(), fn, "q has ", n, " tokens and ", heads,
        " heads, the plan's cu_seqlens end at ", plan.total_tokens(), " with ", plan.heads(),
        " heads");
  cuda::attention_fwd_params p;
  p.q_token_stride = token_stride_of(fn, "q", q, n, heads, dim, q.type);
  p.k_token_stride = token_stride_of(fn, "k", k, n, kv_heads, dim, q.type);
  p.v_token_stride = token_stride_of(fn, "v", v, n, kv_heads, dim, q.type);
  p.out_token_stride = token_stride_of(fn, "out", out, n, heads, dim, q.type);
  p.lse = f32_output_of(fn, "lse", lse, {heads, n});
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.n = n;
  p.n_q = n;
  p.items = plan.work_items();
  p.group = static_cast<int32_t>(heads / kv_heads);
  p.row_ptr = plan.row_ptr();
  p.col_idx = plan.col_idx();
  p.work_items = plan.schedule();
  p.sequences = plan.sequence_info();
  p.item_sequence = plan.item_sequence();
  launch_checked(fn, p, q, options, plan.item_counter(), stream);
}

}  // namespace sp
