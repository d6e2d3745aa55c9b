// `shareprefill bench layer`: whole SharePrefill layers (plan + attention + publish, through
// prefill_layer) over L consecutive layers of the synthetic structured generator (--synthetic,
// the default) or of captured activations (--inputs FILE: layer{L}.q/k/v [N, heads, dim], bf16
// or f32; `bench prefill --save-inputs` writes them from the model; --clusters MAP then gives the
// sparse modes the map's dense layers, dense heads, per-head gammas and its thresholds for N, as
// the model's runs take them), for every mode, on the CPU or the GPU. A table, and with --json
// [FILE] one JSON line per mode and layer plus one per mode with the totals: mode, n, heads,
// kv_heads, dim, layers, plan_ms, attention_ms, total_ms, dense_ms (our kernel on every causal
// tile, same inputs, same run), density, rel_err (vs that dense output, all heads and rows), kinds,
// peak_bytes (workspace + state + the layer's q, k, v and out). Times: wall clock with a device
// synchronisation after each phase (so launch overheads count), the median over --repeats prompts
// after one untimed prompt, which also gives rel_err and density.
// --ranks R --simulate (issue 19, bench_layer_cp.h): after each layer's one-call attention in the
// untimed prompt, the layer's plan split over R context-parallel ranks run one after another on
// this device; one extra JSON line per mode and layer ("bench": "layer_cp"). Its table's "sim ms"
// is the slowest simulated rank's kernel time on the GPU, all ranks together on the CPU.
// --ranks R alone: R processes, one per GPU, over NCCL (builds with SP_NCCL; cp_run_nccl).
// --chunk C (issue 16, bench_layer_chunk.h): every mode one-shot against a chunked prefill in
// chunks of C tokens, one JSON row per mode ("bench": "layer_chunk") instead of the above;
// --chunk-state carried carries one sharing state through the chunks (default fresh: a new one
// per chunk), on either device.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "bench_layer_chunk.h"
#include "bench_layer_cp.h"
#include "command.h"
#include "json_output.h"
#include "option_checks.h"
#include "shareprefill/context_parallel_device.h"
#include "shareprefill/cuda_attention.h"
#include "shareprefill/dense_layer_choice.h"
#include "shareprefill/error.h"
#include "shareprefill/length_thresholds.h"
#include "shareprefill/nccl_comm.h"
#include "shareprefill/prefill_layer.h"
#include "shareprefill/safetensors.h"
#include "shareprefill/synthetic.h"

namespace sp::cli {
namespace {

struct layer_bench_options {
  std::string device = "cuda", inputs, clusters;
  bool synthetic = false;
  std::vector<std::string> modes{"dense", "vslash", "flexprefill", "shareprefill"};
  int64_t n = 32768, heads = 32, kv_heads = 8, dim = 128, layers = 4;
  int64_t chunk = 0;  // --chunk: one-shot vs chunked prefill (0: off)
  std::string chunk_state = "fresh";  // --chunk-state: fresh or carried
  uint64_t seed = 1;
  int repeats = 3, threads = 0;
  json_option json;
  cp_bench_options cp;
  std::vector<int64_t> ranks{1};  // --ranks: a list with --simulate, one value over NCCL
  bool ranks_valid() const { return !ranks.empty() && (cp.simulate || ranks.size() == 1); }
};

using clock_type = std::chrono::steady_clock;
double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// One layer's inputs as bf16 bits (both devices read the same values).
struct layer_data {
  std::vector<uint16_t> q, k, v;
};

std::vector<uint16_t> to_bf16(const tensor_view& x) {
  std::vector<uint16_t> out(static_cast<size_t>(x.numel()));
  for (int64_t i = 0; i < x.numel(); ++i) out[static_cast<size_t>(i)] = fp32_to_bf16(load_as_fp32(x, i));
  return out;
}

struct inputs {
  int64_t n = 0, heads = 0, kv_heads = 0, dim = 0;
  std::vector<layer_data> layers;
  cluster_map map;
  bool has_map = false;
};

inputs load_inputs(const layer_bench_options& o) {
  const char* fn = "bench layer";
  inputs in;
  if (o.inputs.empty()) {
    synthetic_params p;
    p.n_tokens = o.n, p.layers = o.layers, p.heads = o.heads, p.kv_heads = o.kv_heads;
    p.dim = o.dim, p.seed = o.seed;
    p.validate();
    in.n = o.n, in.heads = o.heads, in.kv_heads = o.kv_heads, in.dim = o.dim;
    std::vector<std::future<layer_data>> jobs;
    for (int64_t l = 0; l < o.layers; ++l)
      jobs.push_back(std::async(std::launch::async, [p, l] {
        const synthetic_layer s = synthetic_generate_layer(p, l);
        layer_data d;
        const int64_t n = p.n_tokens, dim = p.dim;
        d.q = to_bf16(tensor_view::contiguous(s.q.data(), dtype::f32, {n, p.heads, dim}));
        d.k = to_bf16(tensor_view::contiguous(s.k.data(), dtype::f32, {n, p.kv_heads, dim}));
        d.v = to_bf16(tensor_view::contiguous(s.v.data(), dtype::f32, {n, p.kv_heads, dim}));
        return d;
      }));
    for (auto& j : jobs) in.layers.push_back(j.get());
    in.map = synthetic_cluster_map(p);
    in.has_map = true;
  } else {
    const safetensors_file file = safetensors_load(o.inputs);
    const tensor_view& q0 = file.get("layer0.q");
    const tensor_view& k0 = file.get("layer0.k");
    check(q0.rank == 3 && k0.rank == 3, fn, o.inputs, ": layer0.q and layer0.k must be [N, heads, dim]");
    in.n = q0.shape[0], in.heads = q0.shape[1], in.dim = q0.shape[2], in.kv_heads = k0.shape[1];
    for (int64_t l = 0; l < o.layers && file.has("layer" + std::to_string(l) + ".q"); ++l) {
      const std::string p = "layer" + std::to_string(l) + ".";
      layer_data d;
      const std::pair<const char*, std::vector<uint16_t>*> parts[] = {{"q", &d.q}, {"k", &d.k}, {"v", &d.v}};
      for (const auto& [name, dst] : parts) {
        const tensor_view& t = file.get(p + name);
        const int64_t want = name[0] == 'q' ? in.heads : in.kv_heads;
        check(t.rank == 3 && t.shape[0] == in.n && t.shape[1] == want && t.shape[2] == in.dim, fn,
              o.inputs, ": tensor ", p, name, " must be [", in.n, ", ", want, ", ", in.dim, "]");
        *dst = to_bf16(t);
      }
      in.layers.push_back(std::move(d));
    }
    check(!in.layers.empty(), fn, o.inputs, ": no layer0.q");
    if (!o.clusters.empty()) {
      in.map = cluster_map_load(o.clusters);
      in.has_map = true;
    }
  }
  return in;
}

// The planner parameters a model run takes from a cluster map at a prompt of n tokens: its dense
// layers, dense heads and per-head gammas, and its thresholds entry for n.
planner_params map_settings(const cluster_map& map, int64_t n, int64_t layers, int64_t heads) {
  planner_params p;
  const dense_layers_resolution d = resolve_dense_layers("", &map, layers, heads);
  p.dense_layers = d.layers;
  p.dense_heads = d.heads;
  p.head_gammas = d.head_gammas;
  if (!map.thresholds.empty()) p = with_thresholds(p, *thresholds_for_length(map.thresholds, n));
  p.validate();
  return p;
}

// The buffers of one layer on the device of the run (device memory or host vectors).
struct layer_buffers {
  bool on_device = false;
  device_buffer dq, dk, dv, dout;
  std::vector<float> host_q, host_k, host_v, host_out;
  tensor_view q, k, v, out;
};

tensor_view view_of(const void* data, dtype t, int64_t n, int64_t h, int64_t d, bool on_device) {
  tensor_view x = tensor_view::contiguous(data, t, {n, h, d});
  x.on_device = on_device;
  return x;
}

std::unique_ptr<layer_buffers> make_buffers(const inputs& in, const layer_data& d, bool on_device) {
  auto b = std::make_unique<layer_buffers>();
  b->on_device = on_device;
  if (on_device) {
    b->dq = device_buffer(d.q.size() * 2);
    b->dk = device_buffer(d.k.size() * 2);
    b->dv = device_buffer(d.v.size() * 2);
    b->dout = device_buffer(d.q.size() * 2);
    b->dq.upload(d.q.data(), b->dq.size());
    b->dk.upload(d.k.data(), b->dk.size());
    b->dv.upload(d.v.data(), b->dv.size());
    b->q = view_of(b->dq.data(), dtype::bf16, in.n, in.heads, in.dim, true);
    b->k = view_of(b->dk.data(), dtype::bf16, in.n, in.kv_heads, in.dim, true);
    b->v = view_of(b->dv.data(), dtype::bf16, in.n, in.kv_heads, in.dim, true);
    b->out = view_of(b->dout.data(), dtype::bf16, in.n, in.heads, in.dim, true);
    return b;
  }
  for (auto [dst, src] : {std::pair{&b->host_q, &d.q}, std::pair{&b->host_k, &d.k}, std::pair{&b->host_v, &d.v}}) {
    dst->resize(src->size());
    for (size_t i = 0; i < src->size(); ++i) (*dst)[i] = bf16_to_fp32((*src)[i]);
  }
  b->host_out.resize(b->host_q.size());
  b->q = view_of(b->host_q.data(), dtype::f32, in.n, in.heads, in.dim, false);
  b->k = view_of(b->host_k.data(), dtype::f32, in.n, in.kv_heads, in.dim, false);
  b->v = view_of(b->host_v.data(), dtype::f32, in.n, in.kv_heads, in.dim, false);
  b->out = view_of(b->host_out.data(), dtype::f32, in.n, in.heads, in.dim, false);
  return b;
}

std::vector<float> output_of(const layer_buffers& b) {
  if (!b.on_device) return b.host_out;
  std::vector<uint16_t> raw(b.dout.size() / 2);
  b.dout.download(raw.data(), b.dout.size());
  std::vector<float> out(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) out[i] = bf16_to_fp32(raw[i]);
  return out;
}

struct layer_numbers {
  std::vector<double> plan_ms, attention_ms;  // per timed prompt
  double density = 0, rel_err = 0;
  int64_t kinds[head_kind_count] = {};
  std::vector<nlohmann::json> cp;  // --simulate: the context-parallel rows, one per rank count
};

// One simulation per rank count of --ranks.
void simulate_ranks(const layer_bench_options& o, const cp_layer_input& in,
                    std::vector<nlohmann::json>& rows) {
  for (int64_t ranks : o.ranks) {
    cp_bench_options c = o.cp;
    c.ranks = ranks;
    rows.push_back(cp_simulate_layer(c, in));
  }
}

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x.empty() ? 0.0 : x[x.size() / 2];
}

void run(const layer_bench_options& o) {
  const char* fn = "bench layer";
  const bool on_device = o.device == "cuda";
  check(!on_device || cuda_device_available(), fn, "--device cuda: no usable CUDA device");
  check(o.repeats > 0, fn, "--repeats must be positive, got ", o.repeats);
  const inputs in = load_inputs(o);
  const int64_t layers = static_cast<int64_t>(in.layers.size());
  const layer_shape shape{in.n, in.heads, in.kv_heads, in.dim};
  const int64_t nb = (in.n + 127) / 128;
  thread_pool pool(o.threads);
  std::vector<std::unique_ptr<layer_buffers>> buffers;
  for (const layer_data& d : in.layers) buffers.push_back(make_buffers(in, d, on_device));
  auto sync = [&] {
    if (on_device) cuda_synchronize();
  };
  const std::string kernel = on_device ? cuda_kernel_name(cuda_attention_kernel()) : "cpu";
  if (o.chunk > 0) {
    chunk_bench_input ci;
    ci.n = in.n, ci.heads = in.heads, ci.kv_heads = in.kv_heads, ci.dim = in.dim;
    ci.chunk = o.chunk, ci.on_device = on_device, ci.repeats = o.repeats, ci.pool = &pool;
    ci.carried = o.chunk_state == "carried";
    ci.map = in.has_map ? &in.map : nullptr;
    ci.device = o.device, ci.kernel = kernel;
    ci.inputs = o.inputs.empty() ? "synthetic" : o.inputs;
    for (const auto& b : buffers)
      ci.layers.push_back({b->q, b->k, b->v, b->out, on_device ? &b->dout : nullptr});
    json_lines json(o.json);
    run_chunk_bench(ci, o.modes, json, o.json.text_stream());
    return;
  }

  // Runs one mode over all layers: an untimed prompt (outputs, density, kinds; with `simulate`
  // the context-parallel rows), then `repeats` timed prompts.
  auto run_mode = [&](plan_mode mode, std::vector<layer_numbers>& numbers, int64_t& peak,
                      std::vector<std::vector<float>>* outputs, bool simulate) {
    planner_params params;
    if (mode != plan_mode::dense && !o.clusters.empty())
      params = map_settings(in.map, in.n, layers, in.heads);
    params.mode = mode;
    const cluster_map* map = mode == plan_mode::shareprefill ? &in.map : nullptr;
    check(map == nullptr || in.has_map, fn, "shareprefill mode with --inputs needs --clusters");
    std::optional<planner> host;
    std::optional<device_planner> device;
    prefill_layer_params p;
    p.pool = &pool;
    if (on_device) device.emplace(params, layers, in.heads, map);
    else host.emplace(params, layers, in.heads, map);
    p.host = host ? &*host : nullptr;
    p.device = device ? &*device : nullptr;
    const int64_t ws_bytes = prefill_layer_workspace_bytes(shape, p, on_device);
    const int64_t st_bytes = on_device ? device->state_bytes(in.n) : 0;
    device_buffer ws, st;
    if (on_device) {
      ws = device_buffer(static_cast<size_t>(ws_bytes));
      st = device_buffer(static_cast<size_t>(st_bytes));
    }
    const int64_t tensors = (2 * in.heads + 2 * in.kv_heads) * in.n * in.dim * (on_device ? 2 : 4);
    peak = ws_bytes + st_bytes + tensors;
    numbers.assign(static_cast<size_t>(layers), layer_numbers{});
    prefill_layer_state state;
    for (int prompt = 0; prompt <= o.repeats; ++prompt) {
      prefill_layer_begin(state, p, in.n, on_device, st.data(), st_bytes, nullptr);
      for (int64_t l = 0; l < layers; ++l) {
        layer_buffers& b = *buffers[static_cast<size_t>(l)];
        layer_numbers& r = numbers[static_cast<size_t>(l)];
        p.layer = l;
        double plan_ms = 0, attention_ms = 0;
        if (on_device) {
          const device_planner& dp = *device;
          sync();
          auto t0 = clock_type::now();
          const device_plan_output out = dp.plan(l, b.q, b.k, state.device, ws.data(), ws_bytes, nullptr);
          sync();
          plan_ms = ms_since(t0);
          t0 = clock_type::now();
          cuda_attention_block_sparse(b.out, {}, out.block_attention, b.q, b.k, b.v, out.plan,
                                      out.scratch, p.attention, nullptr);
          sync();
          attention_ms = ms_since(t0);
          t0 = clock_type::now();
          dp.publish(l, out, state.device, nullptr);
          sync();
          plan_ms += ms_since(t0);
          if (prompt == 0) {
            const block_mask mask = device_planner::download_mask(out.plan);
            r.density = mask.density();
            for (head_kind k : device_planner::download_kinds(out.plan)) ++r.kinds[static_cast<int>(k)];
            if (simulate) {
              cp_layer_input ci{&mask, download_pivot_slots(out.plan), b.q, b.k, b.v, b.out,
                                out.block_attention, in.kv_heads, in.dim, o.repeats, o.threads};
              simulate_ranks(o, ci, r.cp);
            }
          }
        } else {
          const prefill_layer_result res =
              prefill_layer(b.q, b.k, b.v, b.out, state, p, nullptr, 0, nullptr);
          plan_ms = res.host.plan_ms;
          attention_ms = res.host.attention_ms;
          if (prompt == 0) {
            r.density = static_cast<double>(res.host.tiles()) /
                        static_cast<double>(in.heads * causal_tile_count(nb));
            for (head_kind k : res.host.kinds()) ++r.kinds[static_cast<int>(k)];
            if (simulate) {
              check(!res.host.has_deferred, fn, "--simulate needs one attention pass per layer "
                    "(share_within_layer is not supported)");
              std::vector<int32_t> slots(static_cast<size_t>(in.heads), -1);
              for (size_t i = 0; i < res.host.plan.pivot_heads.size(); ++i)
                slots[static_cast<size_t>(res.host.plan.pivot_heads[i])] = static_cast<int32_t>(i);
              cp_layer_input ci{&res.host.plan.mask, slots, b.q, b.k, b.v, b.out, {},
                                in.kv_heads, in.dim, o.repeats, o.threads};
              simulate_ranks(o, ci, r.cp);
            }
          }
        }
        if (prompt == 0 && outputs != nullptr) outputs->push_back(output_of(b));
        if (prompt > 0) {
          r.plan_ms.push_back(plan_ms);
          r.attention_ms.push_back(attention_ms);
        }
      }
      if (on_device) device_plan_check(state.device, nullptr);
    }
  };

  std::vector<layer_numbers> dense_numbers;
  std::vector<std::vector<float>> dense_out;
  int64_t dense_peak = 0;
  run_mode(plan_mode::dense, dense_numbers, dense_peak, &dense_out, false);  // the reference
  json_lines json(o.json);
  FILE* text = o.json.text_stream();
  std::fprintf(text, "%-13s %-6s %10s %12s %10s %10s %8s %9s  kinds\n", "mode", "layer", "plan ms",
               "attention ms", "total ms", "dense ms", "density", "rel_err");
  for (const std::string& name : o.modes) {
    const plan_mode mode = plan_mode_from_name(name);
    std::vector<layer_numbers> numbers;
    std::vector<std::vector<float>> outs;
    int64_t peak = 0;
    run_mode(mode, numbers, peak, &outs, o.cp.simulate);
    double total_plan = 0, total_attention = 0, total_dense = 0, tiles = 0, err2 = 0, ref2 = 0;
    int64_t kinds[head_kind_count] = {};
    auto emit = [&](const std::string& layer, double plan, double attention, double dense,
                    double density, double rel_err, const int64_t* k) {
      nlohmann::json kj;
      for (int i = 0; i < head_kind_count; ++i)
        if (static_cast<head_kind>(i) != head_kind::deferred)
          kj[head_kind_name(static_cast<head_kind>(i))] = k[i];
      const nlohmann::json j = {{"bench", "layer"},
                                {"device", o.device},
                                {"kernel", kernel},
                                {"inputs", o.inputs.empty() ? "synthetic" : o.inputs},
                                {"clusters", o.clusters},
                                {"mode", name},
                                {"layer", layer},
                                {"n", in.n},
                                {"heads", in.heads},
                                {"kv_heads", in.kv_heads},
                                {"dim", in.dim},
                                {"layers", layers},
                                {"plan_ms", plan},
                                {"attention_ms", attention},
                                {"total_ms", plan + attention},
                                {"dense_ms", dense},
                                {"density", density},
                                {"rel_err", rel_err},
                                {"kinds", kj},
                                {"peak_bytes", peak}};
      json.write(j);
      std::fprintf(text, "%-13s %-6s %10.3f %12.3f %10.3f %10.3f %8.3f %9.5f  %s\n", name.c_str(),
                   layer.c_str(), plan, attention, plan + attention, dense, density, rel_err,
                   kj.dump().c_str());
    };
    for (int64_t l = 0; l < layers; ++l) {
      const layer_numbers& r = numbers[static_cast<size_t>(l)];
      const std::vector<float>& a = outs[static_cast<size_t>(l)];
      const std::vector<float>& d = dense_out[static_cast<size_t>(l)];
      double e = 0, s = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        e += (static_cast<double>(a[i]) - d[i]) * (static_cast<double>(a[i]) - d[i]);
        s += static_cast<double>(d[i]) * d[i];
      }
      const double plan = median(r.plan_ms), attention = median(r.attention_ms);
      const double dense = median(dense_numbers[static_cast<size_t>(l)].attention_ms);
      emit(std::to_string(l), plan, attention, dense, r.density, s > 0 ? std::sqrt(e / s) : 0.0,
           r.kinds);
      total_plan += plan, total_attention += attention, total_dense += dense;
      tiles += r.density, err2 += e, ref2 += s;
      for (int i = 0; i < head_kind_count; ++i) kinds[i] += r.kinds[i];
    }
    emit("total", total_plan, total_attention, total_dense, tiles / static_cast<double>(layers),
         ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0, kinds);
    if (!o.cp.simulate) continue;
    std::fprintf(text, "%-13s %-6s %6s %9s %9s %6s %12s %12s %10s %10s %6s\n", "cp mode", "layer",
                 "ranks", "imb zz", "imb bal", "moved", "plan bytes", "comm bytes", "sim ms",
                 "one call", "equal");
    for (int64_t l = 0; l < layers; ++l)
      for (nlohmann::json j : numbers[static_cast<size_t>(l)].cp) {
        const double one_call = median(numbers[static_cast<size_t>(l)].attention_ms);
        j["bench"] = "layer_cp", j["device"] = o.device, j["mode"] = name;
        j["layer"] = std::to_string(l), j["n"] = in.n, j["heads"] = in.heads;
        j["kv_heads"] = in.kv_heads, j["dim"] = in.dim, j["one_call_attention_ms"] = one_call;
        if (j.contains("max_rank_ms") && j["max_rank_ms"].get<double>() > 0)
          j["attention_speedup_model"] = one_call / j["max_rank_ms"].get<double>();
        json.write(j);
        std::fprintf(text, "%-13s %-6lld %6lld %9.4f %9.4f %6lld %12lld %12lld %10.3f %10.3f %6s\n",
                     name.c_str(), static_cast<long long>(l),
                     static_cast<long long>(j["ranks"].get<int64_t>()),
                     j["imbalance_zigzag"].get<double>(), j["imbalance_balanced"].get<double>(),
                     static_cast<long long>(j["moved_blocks"].get<int64_t>()),
                     static_cast<long long>(j["plan_bytes"].get<int64_t>()),
                     static_cast<long long>(j["comm_bytes_balanced"]["max_total"].get<int64_t>()),
                     j.value("max_rank_ms", j.value("all_ranks_ms", 0.0)), one_call,
                     j["equal_bits"].get<bool>() ? "yes" : "no");
      }
  }
}

// --ranks R without --simulate: the inputs made here, the ranks in their own processes (no CUDA
// in this one before they start).
void run_nccl(const layer_bench_options& o) {
  const char* fn = "bench layer --ranks";
  check(nccl_available(), fn, "--ranks ", o.cp.ranks,
        " without --simulate needs one process per GPU over NCCL: a build with SP_NCCL=ON "
        "(or add --simulate)");
  check(o.device == "cuda", fn, "runs on GPUs only (--device cuda)");
  check(o.modes.size() == 1, fn, "give one mode (--modes), got ", o.modes.size());
  const inputs in = load_inputs(o);
  cp_nccl_inputs ci;
  ci.n = in.n, ci.heads = in.heads, ci.kv_heads = in.kv_heads, ci.dim = in.dim;
  ci.mode = plan_mode_from_name(o.modes[0]);
  check(ci.mode != plan_mode::shareprefill || in.has_map, fn,
        "shareprefill mode with --inputs needs --clusters");
  ci.map = in.has_map ? &in.map : nullptr;
  for (const layer_data& d : in.layers) {
    ci.q.push_back(&d.q);
    ci.k.push_back(&d.k);
    ci.v.push_back(&d.v);
  }
  const int failed = cp_run_nccl(o.cp, ci);
  check(failed == 0, fn, failed, " of ", o.cp.ranks, " rank processes failed");
}

}  // namespace

// Registered under `bench` by bench_attention.cpp's setup.
void setup_bench_layer(CLI::App& bench) {
  auto* sub = bench.add_subcommand("layer", "Whole SharePrefill layers (plan + attention + publish)");
  auto o = std::make_shared<layer_bench_options>();
  sub->add_option("--device", o->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_flag("--synthetic", o->synthetic, "synthetic structured inputs (the default)");
  sub->add_option("--inputs", o->inputs, "safetensors file with layer{L}.q/k/v [N, heads, dim]");
  sub->add_option("--clusters", o->clusters, "cluster map for --inputs (shareprefill mode)");
  sub->add_option("--modes", o->modes, "modes (comma separated)")->delimiter(',')->capture_default_str();
  sub->add_option("--n", o->n, "tokens (synthetic)")->capture_default_str();
  sub->add_option("--heads", o->heads, "query heads (synthetic)")->capture_default_str();
  sub->add_option("--kv-heads", o->kv_heads, "key/value heads (synthetic)")->capture_default_str();
  sub->add_option("--dim", o->dim, "head dimension (synthetic)")->capture_default_str();
  sub->add_option("--layers", o->layers, "consecutive layers")->capture_default_str();
  sub->add_option("--chunk", o->chunk,
                  "chunked prefill in chunks of this many tokens (a multiple of 128) against "
                  "one-shot, per mode (0: off)")
      ->capture_default_str();
  add_chunk_state_option(sub, o->chunk_state);
  add_seed_option(sub, o->seed, "generator seed");
  sub->add_option("--repeats", o->repeats, "timed prompts (median reported)")->capture_default_str();
  add_threads_option(sub, o->threads)->capture_default_str();
  add_json_option(sub, o->json, "one object per mode and layer, then the mode's \"total\"");
  sub->add_option("--ranks", o->ranks,
                  "context-parallel ranks (issue 19); with --simulate a comma-separated list")
      ->delimiter(',')->capture_default_str();
  sub->add_flag("--simulate", o->cp.simulate,
                "run the ranks one after another on this device (with --ranks)");
  sub->add_option("--exchange", o->cp.exchange, "keys and values: all_gather or ring (--simulate)")
      ->check(CLI::IsMember({"all_gather", "ring"}))->capture_default_str();
  sub->add_option("--target-imbalance", o->cp.target_imbalance,
                  "the balanced split stops at this max/mean work")->capture_default_str();
  sub->callback([o] {
    check(!(o->synthetic && !o->inputs.empty()), "bench layer",
          "give at most one of --synthetic and --inputs");
    check(o->clusters.empty() || !o->inputs.empty(), "bench layer",
          "--clusters is for --inputs (the synthetic generator's head groups are its map)");
    for (int64_t r : o->ranks)
      check(r >= 1 && r <= 64, "bench layer", "--ranks ", r, " (1 .. 64)");
    check(o->ranks_valid(), "bench layer", "--ranks takes one value without --simulate");
    check(o->chunk == 0 || (o->ranks == std::vector<int64_t>{1} && !o->cp.simulate),
          "bench layer", "--chunk runs on one device: give no --ranks / --simulate");
    check(o->chunk >= 0 && o->chunk % 128 == 0, "bench layer", "--chunk ", o->chunk,
          " (a multiple of the block size 128; 0: off)");
    o->cp.ranks = o->ranks.front();
    check(o->cp.target_imbalance >= 1.0, "bench layer", "--target-imbalance ",
          o->cp.target_imbalance, " (must be >= 1)");
    if (o->cp.ranks > 1 && !o->cp.simulate) {
      run_nccl(*o);
      return;
    }
    run(*o);
  });
}

}  // namespace sp::cli
