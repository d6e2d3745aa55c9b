// cuda_gemm: bf16 GEMMs y = x @ w^T through cuBLASLt with fp32 accumulation. Row-major
// y[m, n] = x[m, k] @ w[n, k]^T is the column-major product y^T = op_T(w) @ x, so w is the
// transposed A operand (k x n, ld k), x the plain B operand (k x m, ld k) and y the n x m result
// (ld n). For m = 1 the swapped orientation y = op_T(x) @ w (x the 1 x k A operand, w the k x n
// B operand, y 1 x n with ld 1: the same bytes) is a second family of candidates for tune().
// The matmul descriptor, layouts and the algorithm cuBLASLt's heuristic picks are made once per
// (shape, output type, accumulate, pointer alignment) and cached; tune() replaces a shape's
// algorithm by the fastest of several, timed in CUDA graphs once per process and device (later
// objects reuse the choice). The workspace is allocated in the constructor. Calls are asynchronous on the caller's stream.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "cuda_check.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_graph.h"
#include "shareprefill/cuda_model_ops.h"

namespace sp {
namespace {

void check_lt(cublasStatus_t status, const char* fn, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail(fn, what, ": ", cublasLtGetStatusString(status), " (cublasStatus ",
         static_cast<int>(status), ")");
}

// Largest power of two (up to 256) dividing the address: cuBLASLt picks algorithms by it.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align >>= 1;
  return align;
}

template <class T>
T algo_attribute(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  T value{};
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &value, sizeof(value), &written);
  return value;
}

}  // namespace

struct cuda_gemm::impl {
  // (m, n, k, y is f32, accumulate, alignments of x, w, y)
  using key = std::tuple<int64_t, int64_t, int64_t, bool, bool, uint32_t, uint32_t, uint32_t>;
  struct plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool swapped = false;  // A = x, B = w (m = 1 only); else A = w, B = x
  };

  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::map<key, plan> plans;        // the heuristic's first algorithm
  std::map<key, plan> tuned;        // tune()'s choice, used before `plans`
  std::map<key, gemm_tuning> reports;

  static void destroy(plan& p) {
    if (p.a != nullptr) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b != nullptr) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c != nullptr) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc != nullptr) cublasLtMatmulDescDestroy(p.desc);
    p = plan{};
  }

  void forget_tuning() {
    for (auto& kv : tuned) destroy(kv.second);
    tuned.clear();
    reports.clear();
  }

  ~impl() {
    forget_tuning();
    for (auto& kv : plans) destroy(kv.second);
    if (workspace != nullptr) cudaFree(workspace);
    if (handle != nullptr) cublasLtDestroy(handle);
  }

  const plan& plan_for(const key& k) {
    const auto chosen = tuned.find(k);
    if (chosen != tuned.end()) return chosen->second;
    const auto found = plans.find(k);
    if (found != plans.end()) return found->second;
    plan slot;
    try {
      make_layouts(slot, k, false);
      const std::vector<cublasLtMatmulAlgo_t> algos = candidates(slot, k, 1);
      check(!algos.empty(), "cuda_gemm::linear", "cuBLASLt has no algorithm for m=",
            std::get<0>(k), " n=", std::get<1>(k), " k=", std::get<2>(k), " (",
            std::get<3>(k) ? "f32" : "bf16", " output", std::get<4>(k) ? ", accumulate" : "", ")");
      slot.algo = algos.front();
    } catch (...) {
      destroy(slot);
      throw;
    }
    return plans.emplace(k, slot).first->second;
  }

  // The descriptor and layouts of one orientation (swapped: m = 1 only).
  void make_layouts(plan& slot, const key& k, bool swapped) {
    const char* fn = "cuda_gemm";
    const auto [m, n, kk, y_f32, accumulate, align_x, align_w, align_y] = k;
    slot.swapped = swapped;
    check_lt(cublasLtMatmulDescCreate(&slot.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), fn,
             "cublasLtMatmulDescCreate");
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(slot.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                            sizeof(trans_a)),
             fn, "TRANSA");
    check_lt(cublasLtMatmulDescSetAttribute(slot.desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                            sizeof(trans_b)),
             fn, "TRANSB");
    const cudaDataType_t y_type = y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
    // w: k x n (ld k) and x: k x m (ld k) in both orientations; y: n x m (ld n) or 1 x n (ld 1).
    check_lt(cublasLtMatrixLayoutCreate(swapped ? &slot.b : &slot.a, CUDA_R_16BF, u(kk), u(n), kk),
             fn, "layout of w");
    check_lt(cublasLtMatrixLayoutCreate(swapped ? &slot.a : &slot.b, CUDA_R_16BF, u(kk), u(m), kk),
             fn, "layout of x");
    check_lt(swapped ? cublasLtMatrixLayoutCreate(&slot.c, y_type, 1, u(n), 1)
                     : cublasLtMatrixLayoutCreate(&slot.c, y_type, u(n), u(m), n),
             fn, "layout of y");
  }

  // Up to `count` algorithms of cuBLASLt's heuristic for the plan's layouts, best first.
  std::vector<cublasLtMatmulAlgo_t> candidates(const plan& slot, const key& k, int count) {
    const char* fn = "cuda_gemm";
    const auto [m, n, kk, y_f32, accumulate, align_x, align_w, align_y] = k;
    const uint32_t align_a = slot.swapped ? align_x : align_w;
    const uint32_t align_b = slot.swapped ? align_w : align_x;
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), fn, "cublasLtMatmulPreferenceCreate");
    const uint64_t ws = workspace_bytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof(ws));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                         &align_a, sizeof(align_a));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                         &align_b, sizeof(align_b));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                         &align_y, sizeof(align_y));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                         &align_y, sizeof(align_y));
    std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(count));
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        handle, slot.desc, slot.a, slot.b, slot.c, slot.c, pref, count, results.data(), &found);
    cublasLtMatmulPreferenceDestroy(pref);
    std::vector<cublasLtMatmulAlgo_t> algos;
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) return algos;  // none for this orientation
    check_lt(status, fn, "cublasLtMatmulAlgoGetHeuristic");
    for (int i = 0; i < found; ++i)
      if (results[static_cast<size_t>(i)].state == CUBLAS_STATUS_SUCCESS)
        algos.push_back(results[static_cast<size_t>(i)].algo);
    return algos;
  }

  cublasStatus_t run(const plan& p, void* y, const uint16_t* x, const uint16_t* w, bool accumulate,
                     cudaStream_t stream) const {
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    const void* a = p.swapped ? static_cast<const void*>(x) : w;
    const void* b = p.swapped ? static_cast<const void*>(w) : x;
    return cublasLtMatmul(handle, p.desc, &alpha, a, p.a, b, p.b, &beta, y, p.c, y, p.c, &p.algo,
                          workspace, workspace_bytes, stream);
  }
};

cuda_gemm::cuda_gemm(size_t workspace_bytes) : impl_(std::make_unique<impl>()) {
  const char* fn = "cuda_gemm";
  check_lt(cublasLtCreate(&impl_->handle), fn, "cublasLtCreate");
  impl_->workspace_bytes = workspace_bytes;
  if (workspace_bytes > 0)
    cuda::check_cuda(cudaMalloc(&impl_->workspace, workspace_bytes), fn,
                     str("cudaMalloc of the ", workspace_bytes, "-byte workspace").c_str());
}

cuda_gemm::~cuda_gemm() = default;

namespace {

// The validated cache key of one call.
cuda_gemm::impl::key key_of(const char* fn, const void* y, dtype y_type, const uint16_t* x,
                            const uint16_t* w, int64_t m, int64_t n, int64_t k, bool accumulate) {
  check(y_type == dtype::bf16 || y_type == dtype::f32, fn, "output dtype ", dtype_name(y_type),
        " (bf16 or f32 expected)");
  check(!accumulate || y_type == dtype::f32, fn, "accumulate needs an f32 output");
  check(m > 0 && n > 0 && k > 0, fn, "empty or negative shape m=", m, " n=", n, " k=", k);
  check(y != nullptr && x != nullptr && w != nullptr, fn, "null pointer");
  const uint32_t ax = alignment_of(x), aw = alignment_of(w), ay = alignment_of(y);
  check(ax >= 16 && aw >= 16 && ay >= 16, fn, "pointers must be 16-byte aligned (x: ", ax,
        ", w: ", aw, ", y: ", ay, ")");
  return {m, n, k, y_type == dtype::f32, accumulate, ax, aw, ay};
}

}  // namespace

void cuda_gemm::linear(void* y, dtype y_type, const uint16_t* x, const uint16_t* w, int64_t m,
                       int64_t n, int64_t k, bool accumulate, void* stream) {
  const char* fn = "cuda_gemm::linear";
  const impl::plan& p = impl_->plan_for(key_of(fn, y, y_type, x, w, m, n, k, accumulate));
  check_lt(impl_->run(p, y, x, w, accumulate, static_cast<cudaStream_t>(stream)), fn,
           "cublasLtMatmul");
}

namespace {

// tune()'s choices, shared by every cuda_gemm of the process: the first object to tune a shape on
// a device times it, later ones (another session) reuse its algorithm, so that two sessions
// compute the same bits.
struct tuned_choice {
  bool swapped = false;
  cublasLtMatmulAlgo_t algo{};
  gemm_tuning report;
};
std::mutex tuned_mutex;
std::map<std::pair<int, cuda_gemm::impl::key>, tuned_choice> tuned_choices;

}  // namespace

gemm_tuning cuda_gemm::tune(const void* y, dtype y_type, const uint16_t* x, const uint16_t* w,
                            int64_t m, int64_t n, int64_t k, bool accumulate, int candidates) {
  const char* fn = "cuda_gemm::tune";
  check(candidates >= 1 && candidates <= 64, fn, "candidates=", candidates, " outside [1, 64]");
  const impl::key key = key_of(fn, y, y_type, x, w, m, n, k, accumulate);
  impl& s = *impl_;
  const auto known = s.reports.find(key);
  if (known != s.reports.end()) return known->second;
  int device = 0;
  cuda::check_cuda(cudaGetDevice(&device), fn, "cudaGetDevice");
  const std::lock_guard<std::mutex> lock(tuned_mutex);
  const auto decided = tuned_choices.find({device, key});
  if (decided != tuned_choices.end()) {
    impl::plan p;
    try {
      s.make_layouts(p, key, decided->second.swapped);
    } catch (...) {
      impl::destroy(p);
      throw;
    }
    p.algo = decided->second.algo;
    s.tuned[key] = p;
    return s.reports[key] = decided->second.report;
  }
  const impl::plan& heuristic = s.plan_for(key);

  // Candidates: the heuristic's first (timed first), then its `candidates` best, then (m = 1)
  // the swapped orientation's. Each holds its own descriptor and layouts.
  struct owned_plans {  // destroys what it still holds
    std::vector<impl::plan> list;
    ~owned_plans() {
      for (impl::plan& p : list) impl::destroy(p);
    }
  } tried;
  const auto add = [&](bool swapped, const cublasLtMatmulAlgo_t& algo) {
    tried.list.emplace_back();
    s.make_layouts(tried.list.back(), key, swapped);
    tried.list.back().algo = algo;
  };
  add(heuristic.swapped, heuristic.algo);
  for (const bool swapped : {false, true}) {
    if (swapped && m != 1) break;
    std::vector<cublasLtMatmulAlgo_t> algos;
    try {
      owned_plans query;
      query.list.emplace_back();
      s.make_layouts(query.list.back(), key, swapped);
      algos = s.candidates(query.list.back(), key, candidates);
    } catch (const error&) {
      if (!swapped) throw;
      continue;  // cuBLASLt refuses the swapped layouts: the usual orientation's candidates only
    }
    for (const cublasLtMatmulAlgo_t& algo : algos) add(swapped, algo);
  }

  // Timing buffers of the caller's alignment or better (cudaMalloc: 256 bytes): copies of w
  // spanning twice the L2 cache, so that each timed call reads its weights from memory as a
  // decode step does; one x and one y.
  int l2_bytes = 0;
  cuda::check_cuda(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device), fn,
                   "L2 size");
  const size_t w_bytes = (static_cast<size_t>(n * k) * 2 + 255) / 256 * 256;
  const int copies = static_cast<int>(
      std::clamp<size_t>((2 * static_cast<size_t>(l2_bytes) + w_bytes - 1) / w_bytes, 2, 128));
  const int calls = std::max(copies, 16);
  device_buffer w_copies(w_bytes * static_cast<size_t>(copies));
  device_buffer x_copy(static_cast<size_t>(m * k) * 2);
  device_buffer y_copy(static_cast<size_t>(m * n) * (y_type == dtype::f32 ? 4 : 2));
  w_copies.fill_bytes(0x3c);  // bf16 0x3c3c = 0.0115
  x_copy.fill_bytes(0x3c);
  y_copy.fill_bytes(0);

  gemm_tuning report;
  report.m = m;
  report.n = n;
  report.k = k;
  report.y_f32 = y_type == dtype::f32;
  report.accumulate = accumulate;
  report.candidates = static_cast<int>(tried.list.size());
  double best_us = 0.0;
  int best = -1;
  cuda_stream stream;
  for (size_t i = 0; i < tried.list.size(); ++i) {
    const impl::plan& p = tried.list[i];
    cuda_graph graph;
    try {
      graph = cuda_graph::capture(stream.get(), [&] {
        for (int c = 0; c < calls; ++c) {
          const auto* wc = static_cast<const uint16_t*>(w_copies.data()) +
                           static_cast<size_t>(c % copies) * (w_bytes / 2);
          check_lt(s.run(p, y_copy.data(), static_cast<const uint16_t*>(x_copy.data()), wc,
                         accumulate, static_cast<cudaStream_t>(stream.get())),
                   fn, "cublasLtMatmul");
        }
      });
    } catch (const error&) {
      if (i == 0) throw;  // the heuristic's own choice must run
      continue;  // a candidate the capture refused is not chosen
    }
    const double us = 1e3 * cuda_time_ms([&] { graph.launch(nullptr); }, 1, 5) / calls;
    if (i == 0) report.heuristic_us = us;
    if (best < 0 || us < best_us) {
      best_us = us;
      best = static_cast<int>(i);
    }
  }
  const impl::plan chosen = tried.list[static_cast<size_t>(best)];
  tried.list.erase(tried.list.begin() + best);  // kept in `tuned`, not destroyed
  report.chosen_us = best_us;
  report.chosen = best;
  report.swapped = chosen.swapped;
  report.algo_id = algo_attribute<int>(chosen.algo, CUBLASLT_ALGO_CONFIG_ID);
  report.split_k = static_cast<int>(algo_attribute<uint32_t>(chosen.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM));
  s.tuned[key] = chosen;
  s.reports[key] = report;
  tuned_choices[{device, key}] = tuned_choice{chosen.swapped, chosen.algo, report};
  return report;
}

void cuda_gemm::forget_tuning() { impl_->forget_tuning(); }

}  // namespace sp
