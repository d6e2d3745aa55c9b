// `shareprefill bench layer --chunk C`: one-shot against chunked prefill per mode (see
// bench_layer_chunk.h).
#include "bench_layer_chunk.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "shareprefill/block_mask.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/error.h"
#include "shareprefill/prefill_layer.h"

namespace sp::cli {
namespace {

using clock_type = std::chrono::steady_clock;

// Tokens [t0, t1) of a [N, ...] view.
tensor_view token_rows(const tensor_view& x, int64_t t0, int64_t t1) {
  tensor_view r = x;
  r.data = static_cast<char*>(x.data) + t0 * x.stride[0] * static_cast<int64_t>(dtype_size(x.type));
  r.shape[0] = t1 - t0;
  return r;
}

// A layer's output as fp32 (CUDA: bf16 downloaded from device_out).
std::vector<float> output_values(const tensor_view& out, const device_buffer* device_out) {
  std::vector<float> v(static_cast<size_t>(out.numel()));
  if (!out.on_device) {
    std::copy(out.as<float>(), out.as<float>() + v.size(), v.begin());
    return v;
  }
  std::vector<uint16_t> raw(v.size());
  device_out->download(raw.data(), raw.size() * 2);
  for (size_t i = 0; i < raw.size(); ++i) v[i] = bf16_to_fp32(raw[i]);
  return v;
}

// Visited and causal tiles of the rows a (chunk) plan computes.
struct tile_count {
  double visited = 0, causal = 0;
  void add(const block_mask& m, int64_t first_row) {
    for (int64_t h = 0; h < m.heads; ++h)
      for (int64_t r = first_row; r < m.n_blocks; ++r) {
        visited += static_cast<double>(m.row_end(h, r) - m.row_begin(h, r));
        causal += static_cast<double>(r + 1);
      }
  }
  double density() const { return causal > 0 ? visited / causal : 0.0; }
};

struct mode_run {
  std::vector<double> total_ms;  // per timed prompt
  tile_count tiles;              // of the untimed prompt
  double err2 = 0, ref2 = 0;     // against dense, all layers and rows
  double rel_err() const { return ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0; }
};

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x.empty() ? 0.0 : x[x.size() / 2];
}

// Runs `mode` over the prompt `repeats + 1` times in chunks of `chunk` tokens (n: one-shot).
// The first prompt is untimed: it counts the tiles and, with `reference`, the error of every
// layer's output against it; without, it stores the outputs into `outputs` (the dense run).
mode_run run_mode(const chunk_bench_input& in, plan_mode mode, int64_t chunk,
                  const std::vector<std::vector<float>>* reference,
                  std::vector<std::vector<float>>* outputs) {
  const char* fn = "bench layer --chunk";
  planner_params params;
  params.mode = mode;
  const cluster_map* map = mode == plan_mode::shareprefill ? in.map : nullptr;
  check(mode != plan_mode::shareprefill || map != nullptr, fn,
        "shareprefill mode with --inputs needs --clusters");
  const int64_t layers = static_cast<int64_t>(in.layers.size());
  std::optional<planner> host;
  std::optional<device_planner> device;
  prefill_layer_params p;
  p.pool = in.pool;
  if (in.on_device)
    device.emplace(params, layers, in.heads, map);
  else
    host.emplace(params, layers, in.heads, map);
  p.host = host ? &*host : nullptr;
  p.device = device ? &*device : nullptr;
  int64_t ws_bytes = 0;
  for (int64_t s = 0; s < in.n; s += chunk)
    ws_bytes = std::max(
        ws_bytes, prefill_layer_workspace_bytes(
                      {std::min(in.n, s + chunk), in.heads, in.kv_heads, in.dim}, p, in.on_device));
  const int64_t st_bytes = in.on_device ? device->state_bytes(in.n) : 0;
  device_buffer ws, st;
  if (in.on_device) {
    ws = device_buffer(static_cast<size_t>(ws_bytes));
    st = device_buffer(static_cast<size_t>(st_bytes));
  }
  mode_run result;
  for (int prompt = 0; prompt <= in.repeats; ++prompt) {
    if (in.on_device) cuda_synchronize();
    const auto t0 = clock_type::now();
    prefill_layer_state state;
    for (int64_t s = 0; s < in.n; s += chunk) {
      const int64_t e = std::min(in.n, s + chunk);
      if (s > 0 && in.carried)
        prefill_layer_begin_chunk(state, p, e, nullptr);
      else  // the state memory holds the whole prompt, as begin_chunk needs
        prefill_layer_begin(state, p, e, in.on_device, st.data(), st_bytes, nullptr);
      p.query_offset = s;
      for (int64_t l = 0; l < layers; ++l) {
        const chunk_layer_views& x = in.layers[static_cast<size_t>(l)];
        p.layer = l;
        const prefill_layer_result r =
            prefill_layer(token_rows(x.q, s, e), token_rows(x.k, 0, e), token_rows(x.v, 0, e),
                          token_rows(x.out, s, e), state, p, ws.data(), ws_bytes, nullptr);
        if (prompt == 0)
          result.tiles.add(
              in.on_device ? device_planner::download_mask(r.device_plan.plan) : r.host.plan.mask,
              s / 128);
      }
      // Fresh: the state memory is cleared for the next chunk, so its errors are read first (a
      // sync). Carried: the errors stay, and begin_chunk waits for the device anyway.
      if (in.on_device) device_plan_check(state.device, nullptr);
    }
    if (in.on_device) cuda_synchronize();
    const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
    if (prompt > 0) {
      result.total_ms.push_back(ms);
      continue;
    }
    for (int64_t l = 0; l < layers; ++l) {
      const chunk_layer_views& x = in.layers[static_cast<size_t>(l)];
      std::vector<float> out = output_values(x.out, x.device_out);
      if (reference == nullptr) {
        outputs->push_back(std::move(out));
        continue;
      }
      const std::vector<float>& ref = (*reference)[static_cast<size_t>(l)];
      for (size_t i = 0; i < out.size(); ++i) {
        const double d = static_cast<double>(out[i]) - ref[i];
        result.err2 += d * d;
        result.ref2 += static_cast<double>(ref[i]) * ref[i];
      }
    }
  }
  return result;
}

}  // namespace

void run_chunk_bench(const chunk_bench_input& in, const std::vector<std::string>& modes,
                     json_lines& json, FILE* text) {
  const char* fn = "bench layer --chunk";
  check(in.chunk > 0 && in.chunk % 128 == 0, fn, "--chunk ", in.chunk,
        " (a positive multiple of the block size 128)");
  std::vector<std::vector<float>> dense;
  run_mode(in, plan_mode::dense, in.n, nullptr, &dense);
  std::fprintf(text, "%-13s %12s %12s %7s %10s %10s %8s %8s\n", "mode", "one-shot ms", "chunked ms",
               "ratio", "err one", "err chunk", "dens one", "dens chk");
  for (const std::string& name : modes) {
    const plan_mode mode = plan_mode_from_name(name);
    const mode_run one = run_mode(in, mode, in.n, &dense, nullptr);
    const mode_run chunked = run_mode(in, mode, in.chunk, &dense, nullptr);
    const double t_one = median(one.total_ms), t_chunk = median(chunked.total_ms);
    const double e_one = one.rel_err(), e_chunk = chunked.rel_err();
    nlohmann::json row = {{"bench", "layer_chunk"},
                          {"device", in.device},
                          {"kernel", in.kernel},
                          {"inputs", in.inputs},
                          {"mode", name},
                          {"n", in.n},
                          {"chunk", in.chunk},
                          {"chunk_state", in.carried ? "carried" : "fresh"},
                          {"heads", in.heads},
                          {"kv_heads", in.kv_heads},
                          {"dim", in.dim},
                          {"layers", static_cast<int64_t>(in.layers.size())},
                          {"repeats", in.repeats},
                          {"total_ms_one_shot", t_one},
                          {"total_ms_chunked", t_chunk},
                          {"time_ratio", t_chunk / t_one},
                          {"rel_err_one_shot", e_one},
                          {"rel_err_chunked", e_chunk},
                          {"density_one_shot", one.tiles.density()},
                          {"density_chunked", chunked.tiles.density()}};
    row["err_ratio"] = e_one > 0 ? nlohmann::json(e_chunk / e_one) : nlohmann::json(nullptr);
    json.write(row);
    std::fprintf(text, "%-13s %12.3f %12.3f %7.3f %10.3e %10.3e %8.4f %8.4f\n", name.c_str(), t_one,
                 t_chunk, t_chunk / t_one, e_one, e_chunk, one.tiles.density(),
                 chunked.tiles.density());
    std::fflush(text);
  }
}

}  // namespace sp::cli
