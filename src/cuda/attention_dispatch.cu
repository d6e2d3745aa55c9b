// cuda_attention_block_sparse: validates the public parameters against the layer plan, fills
// the kernel's POD parameters and dispatches the runtime (kernel path, dtype, head dim) to its
// compiled instantiation. This is the one runtime -> compile-time switch of the CUDA attention.
// Path: the Hopper kernel (sm_90a) on compute capability 9.0 when the build has it, else the
// portable kernel; SP_CUDA_KERNEL=portable|hopper|auto in the environment forces either. The
// Hopper grid and mainloop: hopper_options_from_env below (measurements in docs/CUDA.md).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

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

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_params(const char* fn, const cuda_attention_params& a, const layer_plan_view& plan,
                  const attention_scratch_view& scratch) {
  check(a.type == dtype::bf16 || a.type == dtype::f16, fn, "dtype code ",
        static_cast<int>(a.type), " (bf16 or f16 expected)");
  check(a.dim == 64 || a.dim == 128, fn, "dim=", a.dim, " (64 or 128 supported)");
  check(a.n > 0 && a.heads > 0 && a.kv_heads > 0 && a.heads % a.kv_heads == 0, fn, "n=", a.n,
        " heads=", a.heads, " kv_heads=", a.kv_heads);
  check(plan.on_device && scratch.on_device, fn, "the plan and the scratch must be device views",
        " (on_device=", plan.on_device, ", ", scratch.on_device, ")");
  check(plan.block_size == cuda::mask_block, fn, "plan block_size=", plan.block_size,
        " (the CUDA kernel needs ", cuda::mask_block, ")");
  check(a.n == plan.n_tokens && a.heads == plan.heads, fn, "plan is for n=", plan.n_tokens,
        " heads=", plan.heads, ", got n=", a.n, " heads=", a.heads);
  check(plan.n_blocks == (plan.n_tokens + cuda::mask_block - 1) / cuda::mask_block &&
            plan.n_blocks < (int64_t{1} << 24),
        fn, "plan n_blocks=", plan.n_blocks, " for n_tokens=", plan.n_tokens);
  check(a.heads < (int64_t{1} << 24), fn, "heads=", a.heads);
  check(plan.row_ptr != nullptr && plan.col_idx != nullptr && plan.schedule != nullptr, fn,
        "the plan's row_ptr, col_idx and schedule must be set");
  check(scratch.item_counter != nullptr, fn, "scratch.item_counter must be set");
  const void* pointers[] = {a.q, a.k, a.v, a.out};
  const char* names[] = {"q", "k", "v", "out"};
  for (int i = 0; i < 4; ++i)
    check(pointers[i] != nullptr && aligned16(pointers[i]), fn, names[i],
          " must be a non-null 16-byte aligned device pointer");
  const int64_t strides[] = {a.q_token_stride, a.k_token_stride, a.v_token_stride,
                             a.out_token_stride};
  const int64_t minimum[] = {a.heads * a.dim, a.kv_heads * a.dim, a.kv_heads * a.dim,
                             a.heads * a.dim};
  for (int i = 0; i < 4; ++i)
    check(strides[i] >= minimum[i] && strides[i] % 8 == 0, fn, names[i], "_token_stride=",
          strides[i], " (a multiple of 8, at least ", minimum[i], ")");
  check((plan.max_pivots > 0) == (a.block_attention != nullptr), fn, "block_attention is ",
        a.block_attention ? "set" : "null", " but the plan has max_pivots=", plan.max_pivots);
  if (plan.max_pivots > 0) {
    check(plan.pivot_slot != nullptr && plan.scratch_offset != nullptr, fn,
          "the plan's pivot_slot and scratch_offset must be set when max_pivots > 0");
    check(scratch.tile_mass != nullptr && scratch.tile_capacity >= plan.scratch_tiles, fn,
          "scratch holds ", scratch.tile_capacity, " tiles, the plan needs ", plan.scratch_tiles);
  }
}

// Auto picks the Hopper kernel: it passed the CUDA tests (both dtypes, D 64/128) on the H200.
constexpr bool hopper_by_default = true;

bool device_is_hopper() {
  int device = 0, major = 0, minor = 0;
  cuda::check_cuda(cudaGetDevice(&device), "cuda_attention_path", "cudaGetDevice");
  cuda::check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
                   "cuda_attention_path", "cudaDeviceGetAttribute");
  cuda::check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
                   "cuda_attention_path", "cudaDeviceGetAttribute");
  return major == 9 && minor == 0;
}

int64_t sm_count(const char* fn) {
  int device = 0, sms = 0;
  cuda::check_cuda(cudaGetDevice(&device), fn, "cudaGetDevice");
  cuda::check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), fn,
                   "cudaDeviceGetAttribute");
  return sms;
}

// Launch choices of the Hopper kernel from the environment (read at every call):
//   SP_CUDA_HOPPER_GRID = dynamic | per_item | persistent | dynamic:<ctas> | persistent:<ctas>
//     (dynamic, the default: one CTA per SM claiming items from a counter; per_item: one CTA
//     per item; persistent: one CTA per SM over a static share; :<ctas> sets the CTA count,
//     tests use 3)
//   SP_CUDA_HOPPER_MAINLOOP = serial (default) | overlap
cuda::hopper_options hopper_options_from_env(const char* fn) {
  cuda::hopper_options options;
  const char* env = std::getenv("SP_CUDA_HOPPER_GRID");
  const std::string grid = env != nullptr && *env != 0 ? env : "dynamic";
  const std::string kind = grid.substr(0, grid.find(':'));
  check(kind == "per_item" || kind == "persistent" || kind == "dynamic", fn,
        "SP_CUDA_HOPPER_GRID=", grid,
        " (per_item, persistent, dynamic, persistent:<ctas> or dynamic:<ctas> expected)");
  options.dynamic = kind == "dynamic";
  if (kind != "per_item") {
    options.ctas = sm_count(fn);
    if (grid.size() > kind.size()) {
      char* end = nullptr;
      const long long ctas = std::strtoll(grid.c_str() + kind.size() + 1, &end, 10);
      check(ctas > 0 && ctas < (1LL << 31) && end != nullptr && *end == 0, fn,
            "SP_CUDA_HOPPER_GRID=", grid, " (a positive CTA count after ':' expected)");
      options.ctas = ctas;
    }
  } else {
    check(grid == kind, fn, "SP_CUDA_HOPPER_GRID=", grid, " (per_item takes no CTA count)");
  }
  env = std::getenv("SP_CUDA_HOPPER_MAINLOOP");
  const std::string mainloop = env != nullptr && *env != 0 ? env : "serial";
  check(mainloop == "overlap" || mainloop == "serial", fn, "SP_CUDA_HOPPER_MAINLOOP=", mainloop,
        " (overlap or serial expected)");
  options.mainloop =
      mainloop == "overlap" ? cuda::hopper_mainloop::overlap : cuda::hopper_mainloop::serial;
  return options;
}

}  // namespace

std::string cuda_attention_path() {
  const char* fn = "cuda_attention_path";
  const char* env = std::getenv("SP_CUDA_KERNEL");
  const std::string want = env != nullptr && *env != 0 ? env : "auto";
  check(want == "auto" || want == "portable" || want == "hopper", fn, "SP_CUDA_KERNEL=", want,
        " (auto, portable or hopper expected)");
  if (want == "portable") return want;
  const bool hopper = cuda::hopper_path_compiled() && device_is_hopper();
  check(want == "auto" || hopper, fn, "SP_CUDA_KERNEL=hopper but ",
        cuda::hopper_path_compiled() ? "the device is not compute capability 9.0"
                                     : "this build has no sm_90a code (CMAKE_CUDA_ARCHITECTURES)");
  return hopper && (want == "hopper" || hopper_by_default) ? "hopper" : "portable";
}

void cuda_attention_block_sparse(const cuda_attention_params& a, const layer_plan_view& plan,
                                 const attention_scratch_view& scratch) {
  const char* fn = "cuda_attention_block_sparse";
  check_params(fn, a, plan, scratch);
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  const int64_t work_items = plan.heads * plan.n_blocks;
  cuda::attention_fwd_params p;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.lse = a.lse;
  p.q_token_stride = a.q_token_stride;
  p.k_token_stride = a.k_token_stride;
  p.v_token_stride = a.v_token_stride;
  p.out_token_stride = a.out_token_stride;
  p.n = a.n;
  p.heads = static_cast<int32_t>(a.heads);
  p.group = static_cast<int32_t>(a.heads / a.kv_heads);
  p.n_blocks = static_cast<int32_t>(plan.n_blocks);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(a.dim)));
  p.row_ptr = plan.row_ptr;
  p.col_idx = plan.col_idx;
  p.work_items = plan.schedule;
  if (plan.max_pivots > 0) {
    p.pivot_slot = plan.pivot_slot;
    p.scratch_offset = plan.scratch_offset;
    p.tile_mass = scratch.tile_mass;
    p.block_attention = a.block_attention;
  }
  const bool bf16 = a.type == dtype::bf16;
  if (cuda_attention_path() == "hopper") {
    check(a.n < (int64_t{1} << 31), fn, "n=", a.n, " (the hopper path addresses tokens in int32)");
    const cuda::hopper_options options = hopper_options_from_env(fn);
    unsigned long long* counter = scratch.item_counter;
    if (a.dim == 64) {
      if (bf16) cuda::launch_hopper_fwd<__nv_bfloat16, 64>(p, work_items, options, counter, stream);
      else cuda::launch_hopper_fwd<__half, 64>(p, work_items, options, counter, stream);
    } else {
      if (bf16) cuda::launch_hopper_fwd<__nv_bfloat16, 128>(p, work_items, options, counter, stream);
      else cuda::launch_hopper_fwd<__half, 128>(p, work_items, options, counter, stream);
    }
    return;
  }
  if (a.dim == 64) {
    if (bf16) cuda::launch_attention_fwd<__nv_bfloat16, 64>(p, work_items, stream);
    else cuda::launch_attention_fwd<__half, 64>(p, work_items, stream);
  } else {
    if (bf16) cuda::launch_attention_fwd<__nv_bfloat16, 128>(p, work_items, stream);
    else cuda::launch_attention_fwd<__half, 128>(p, work_items, stream);
  }
}

}  // namespace sp
