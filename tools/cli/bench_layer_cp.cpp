// The context-parallel simulation of `bench layer --ranks R --simulate` (bench_layer_cp.h).
#include "bench_layer_cp.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "shareprefill/context_parallel.h"
#include "shareprefill/context_parallel_device.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/cuda_copy.h"
#include "shareprefill/error.h"

namespace sp::cli {
namespace {

nlohmann::json comm_json(const context_comm& c) {
  auto max_of = [](const std::vector<int64_t>& v) { return *std::max_element(v.begin(), v.end()); };
  std::vector<int64_t> totals;
  for (size_t r = 0; r < c.kv.size(); ++r) totals.push_back(c.total(static_cast<int64_t>(r)));
  return {{"kv", max_of(c.kv)},         {"qo", max_of(c.qo)},
          {"plan", max_of(c.plan)},     {"block_attention", max_of(c.block_attention)},
          {"max_total", c.max_total()}, {"per_rank_total", totals}};
}

// Element-wise comparison of two results of the same dtype: equal bits, differing elements and
// the largest absolute difference.
struct comparison {
  bool equal_bits = true;
  int64_t differing = 0;
  double max_abs_diff = 0;
};

comparison compare_values(const std::vector<float>& a, const std::vector<float>& b) {
  comparison c;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) == 0) continue;
    ++c.differing;
    c.max_abs_diff = std::max(c.max_abs_diff, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  c.equal_bits = c.differing == 0;
  return c;
}

// Two device views of the same dtype and size, compared in their raw bits on the host (only the
// differing elements are converted: a 1M-token output is 8.6 GB per copy).
comparison compare_device(const tensor_view& a, const tensor_view& b) {
  const int64_t bytes = a.numel() * (a.type == dtype::f32 ? 4 : 2);
  std::vector<uint8_t> x(static_cast<size_t>(bytes)), y(x.size());
  cuda_copy_2d(x.data(), bytes, a.data, bytes, bytes, 1);
  cuda_copy_2d(y.data(), bytes, b.data, bytes, bytes, 1);
  auto value = [&](const std::vector<uint8_t>& v, size_t i) -> double {
    if (a.type == dtype::f32) {
      float f;
      std::memcpy(&f, v.data() + 4 * i, 4);
      return f;
    }
    uint16_t h;
    std::memcpy(&h, v.data() + 2 * i, 2);
    return a.type == dtype::bf16 ? bf16_to_fp32(h) : fp16_to_fp32(h);
  };
  comparison c;
  const size_t elem = a.type == dtype::f32 ? 4 : 2;
  for (size_t i = 0; i < x.size() / elem; ++i) {
    if (std::memcmp(x.data() + elem * i, y.data() + elem * i, elem) == 0) continue;
    ++c.differing;
    c.max_abs_diff = std::max(c.max_abs_diff, std::fabs(value(x, i) - value(y, i)));
  }
  c.equal_bits = c.differing == 0;
  return c;
}

tensor_view device_view(const device_buffer& b, dtype t, std::initializer_list<int64_t> shape) {
  tensor_view v = tensor_view::contiguous(b.data(), t, shape);
  v.on_device = true;
  return v;
}

}  // namespace

nlohmann::json cp_simulate_layer(const cp_bench_options& o, const cp_layer_input& in) {
  const char* fn = "bench layer --simulate";
  check(o.exchange == "all_gather" || o.exchange == "ring", fn, "--exchange ", o.exchange,
        " (all_gather or ring)");
  const context_kv_exchange exchange =
      o.exchange == "ring" ? context_kv_exchange::ring : context_kv_exchange::all_gather;
  const block_mask& mask = *in.mask;
  const int64_t n = mask.n_tokens, heads = mask.heads, nb = mask.n_blocks;
  const std::vector<int64_t> work = context_row_work(mask);
  const context_partition zigzag = context_partition_zigzag(work, o.ranks);
  const context_partition balanced = context_partition_balanced(work, o.ranks, o.target_imbalance);
  int64_t pivots = 0;
  for (int32_t s : in.pivot_slot) pivots += s >= 0;
  // Ring ranks cannot produce block attention: the simulation runs without it (pivots' A is
  // then not compared) and the A gather is still in the byte model (an all-gather pass needs it).
  const std::vector<int32_t> sim_slots = exchange == context_kv_exchange::ring
                                             ? std::vector<int32_t>(in.pivot_slot.size(), -1)
                                             : in.pivot_slot;
  const int64_t elem = in.q.type == dtype::f32 ? 4 : 2;
  nlohmann::json j = {{"ranks", o.ranks},
                      {"exchange", o.exchange},
                      {"target_imbalance", o.target_imbalance},
                      {"imbalance_zigzag", zigzag.imbalance()},
                      {"imbalance_balanced", balanced.imbalance()},
                      {"work_zigzag", zigzag.work},
                      {"work_balanced", balanced.work},
                      {"moved_blocks", balanced.moved_blocks(zigzag)},
                      {"n_blocks", nb},
                      {"pivots", pivots},
                      {"plan_bytes", context_plan_bytes(mask)}};
  std::vector<int64_t> rank_plan;
  for (int64_t r = 0; r < o.ranks; ++r)
    rank_plan.push_back(context_plan_bytes(mask, context_rank_rows(balanced, r)));
  j["plan_rank_bytes"] = rank_plan;
  j["comm_bytes_zigzag"] =
      comm_json(context_comm_bytes(mask, in.kv_heads, in.dim, 2, pivots, zigzag, zigzag));
  j["comm_bytes_balanced"] =
      comm_json(context_comm_bytes(mask, in.kv_heads, in.dim, 2, pivots, zigzag, balanced));

  comparison cmp, cmp_a;
  if (in.q.on_device) {
    cuda_context_simulation sim(mask, sim_slots, balanced, exchange, in.dim, in.q.type);
    j["plan_bytes_uploaded"] = sim.plan_bytes_uploaded();
    int32_t max_slot = -1;
    for (int32_t s : sim_slots) max_slot = std::max(max_slot, s);
    device_buffer out(static_cast<size_t>(n * heads * in.dim * elem));
    device_buffer a(max_slot >= 0 ? static_cast<size_t>((max_slot + 1) * nb * nb * 4) : 0);
    out.fill_bytes(0xff);
    if (max_slot >= 0) a.fill_bytes(0xff);
    const tensor_view out_view = device_view(out, in.q.type, {n, heads, in.dim});
    const tensor_view a_view =
        max_slot >= 0 ? device_view(a, dtype::f32, {max_slot + 1, nb, nb}) : tensor_view{};
    std::vector<double> rank_ms;
    for (int64_t r = 0; r < o.ranks; ++r) {
      rank_ms.push_back(cuda_time_ms([&] { sim.run_rank(r, in.q, in.k, in.v, {}, nullptr); }, 1,
                                     std::max(1, in.repeats)));
      sim.gather_rank(r, out_view, {}, a_view, nullptr);
    }
    cuda_synchronize();
    const double most = *std::max_element(rank_ms.begin(), rank_ms.end());
    const double mean =
        std::accumulate(rank_ms.begin(), rank_ms.end(), 0.0) / static_cast<double>(o.ranks);
    j["rank_ms"] = rank_ms;
    j["max_rank_ms"] = most;
    j["rank_time_imbalance"] = mean > 0 ? most / mean : 1.0;
    cmp = compare_device(out_view, in.out);
    for (int32_t slot : sim_slots) {
      if (slot < 0) continue;
      auto slot_view = [&](const tensor_view& x) {
        tensor_view v = tensor_view::contiguous(static_cast<float*>(x.data) + slot * nb * nb,
                                                dtype::f32, {nb * nb});
        v.on_device = true;
        return v;
      };
      const comparison c = compare_device(slot_view(a_view), slot_view(in.block_attention));
      cmp_a.differing += c.differing;
      cmp_a.max_abs_diff = std::max(cmp_a.max_abs_diff, c.max_abs_diff);
    }
    cmp_a.equal_bits = cmp_a.differing == 0;
  } else {
    thread_pool pool(in.threads);
    std::vector<float> out(static_cast<size_t>(n * heads * in.dim));
    const auto t0 = std::chrono::steady_clock::now();
    context_parallel_attention(tensor_view::contiguous(out.data(), dtype::f32, {n, heads, in.dim}),
                               {}, nullptr, in.q, in.k, in.v, mask, balanced, exchange, pool);
    j["all_ranks_ms"] =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    cmp = compare_values(
        out, std::vector<float>(in.out.as<const float>(), in.out.as<const float>() + out.size()));
  }
  j["equal_bits"] = cmp.equal_bits;
  j["differing"] = cmp.differing;
  j["max_abs_diff"] = cmp.max_abs_diff;
  if (pivots > 0 && in.q.on_device && exchange == context_kv_exchange::all_gather) {
    j["block_attention_equal_bits"] = cmp_a.equal_bits;
    j["block_attention_max_abs_diff"] = cmp_a.max_abs_diff;
  }
  return j;
}

}  // namespace sp::cli
