// The planner state machine (DESIGN.md section 2): per layer, statistics (A), the query-aware
// test (B), pivot selection and JS-gated sharing across layers (C), vertical-slash (D) and
// query-aware (E) tiles, and publish() of the pivots' exact patterns (G) after the layer's
// attention (F). All per-prompt state lives in plan_state; the planner itself is immutable.
#include "shareprefill/planner.h"

#include <algorithm>
#include <cmath>

#include "shareprefill/error.h"
#include "shareprefill/statistics.h"

namespace sp {
namespace {

std::vector<tile> merged(std::vector<tile> a, const std::vector<tile>& b) {
  a.insert(a.end(), b.begin(), b.end());
  std::sort(a.begin(), a.end());
  a.erase(std::unique(a.begin(), a.end()), a.end());
  return a;
}

// A shared head's tiles: its own vertical-slash tiles (the minimum budget, or its own budgets
// own_v, own_s with shared_keeps_budget) plus the pivot's published pattern.
std::vector<tile> shared_tiles(const planner_params& p, const float* v_blk, const float* s_blk,
                               int64_t nb, int64_t own_v, int64_t own_s,
                               const std::vector<tile>& pattern) {
  const int64_t min_b = p.min_blocks();
  return merged(vertical_slash_tiles(v_blk, s_blk, nb, p.shared_keeps_budget ? own_v : min_b,
                                     p.shared_keeps_budget ? own_s : min_b),
                pattern);
}

// exact_last_row: `tiles` of a head planned from statistics or estimates (shared, query-aware,
// vertical-slash) plus its last row's own cover at its gamma; dense heads and pivots run every
// tile already, and without the option the tiles stay as they are.
std::vector<tile> with_exact_last_row(const planner_params& p, head_kind k, std::vector<tile> tiles,
                                      const float* v_blk, int64_t nb, double gamma) {
  const bool sparse =
      k == head_kind::shared || k == head_kind::query_aware || k == head_kind::vertical_slash;
  if (!p.exact_last_row || !sparse) return tiles;
  return merged(std::move(tiles),
                last_row_tiles(v_blk, nb, p.last_row_gamma > 0.0 ? p.last_row_gamma : gamma));
}

}  // namespace

bool coverage_gate(const planner_params& p, const cluster_slot& slot, const float* v_blk,
                   int64_t n_blocks) {
  return p.gate_coverage <= 0.0 ||
         last_row_coverage(slot.pivot_pattern, v_blk, n_blocks) >= p.gate_coverage;
}

bool sharing_gate(const planner_params& p, const cluster_slot& slot, const float* v_blk,
                  const float* s_blk, int64_t n_blocks) {
  if (static_cast<int64_t>(slot.pivot_v_blk.size()) != n_blocks)  // carried from a chunk
    return carried_sharing_gate(p, slot, v_blk, s_blk, n_blocks);
  return pooled_js_distance(slot.pivot_v_blk.data(), v_blk, n_blocks, p.gate_bins) < p.tau_sim &&
         pooled_js_distance(slot.pivot_s_blk.data(), s_blk, n_blocks, p.gate_bins) < p.tau_sim &&
         slot.pivot_vs_ratio < p.tau_fb && coverage_gate(p, slot, v_blk, n_blocks);
}

planner::planner(const planner_params& params, int64_t layers, int64_t heads,
                 const cluster_map* clusters)
    : params_(params), layers_(layers), heads_(heads) {
  const char* fn = "planner::planner";
  params_.validate();
  check(layers > 0 && heads > 0, fn, "model shape must be positive, got ", layers, " layers x ",
        heads, " heads");
  check(params_.mode != plan_mode::shareprefill || clusters != nullptr, fn,
        "shareprefill mode needs a cluster map");
  dense_layer_.assign(static_cast<size_t>(layers), 0);
  for (int64_t l : params_.dense_layers) {
    check(l < layers, fn, "dense layer ", l, " is out of range: the model has ", layers,
          " layers (0-", layers - 1, ")");
    dense_layer_[static_cast<size_t>(l)] = 1;
  }
  dense_head_.assign(static_cast<size_t>(layers * heads), 0);
  for (const auto& [l, h] : params_.dense_heads) {
    check(l < layers && h < heads, fn, "dense head (", l, ", ", h,
          ") is out of range: the model has ", layers, " layers x ", heads, " heads");
    dense_head_[static_cast<size_t>(l * heads + h)] = 1;
  }
  head_gamma_.assign(static_cast<size_t>(layers * heads), params_.gamma);
  for (const head_gamma& g : params_.head_gammas) {
    check(g.layer < layers && g.head < heads, fn, "head_gammas: head (", g.layer, ", ", g.head,
          ") is out of range: the model has ", layers, " layers x ", heads, " heads");
    head_gamma_[static_cast<size_t>(g.layer * heads + g.head)] = g.gamma;
  }
  if (clusters == nullptr) return;
  cluster_of_ = clusters->head_table(layers, heads);
  for (const head_cluster& c : clusters->clusters) {
    shared_.push_back(c.shared ? 1 : 0);
    check(!(params_.pivot_is_medoid && c.shared && !c.medoid), fn, clusters->source,
          ": pivot_is_medoid needs a medoid for every shared cluster; cluster \"", c.id,
          "\" has none");
    medoid_.push_back(c.medoid ? *c.medoid : head_ref{-1, -1});
    // pivot_prefers_dense: the first member (layer * heads + head) that runs dense anyway.
    int64_t first_dense = -1;
    if (params_.pivot_prefers_dense && c.shared) {
      for (const head_ref& m : c.members) {
        const int64_t at = m.layer * heads + m.head;
        const bool dense =
            dense_layer_[static_cast<size_t>(m.layer)] || dense_head_[static_cast<size_t>(at)];
        if (dense && (first_dense < 0 || at < first_dense)) first_dense = at;
      }
    }
    dense_pivot_.push_back(first_dense);
  }
}

layer_plan planner::plan(int64_t layer, const tensor_view& q, const tensor_view& k,
                         plan_state& state, thread_pool& pool) const {
  const char* fn = "planner::plan";
  check(layer >= 0 && layer < layers_, fn, "layer ", layer, " not in [0, ", layers_, ")");
  check(q.rank == 3 && k.rank == 3, fn, "q and k must be [N, heads, dim], got ranks ", q.rank,
        " and ", k.rank);
  check(q.shape[1] == heads_, fn, "q has ", q.shape[1], " heads, the planner ", heads_);
  const int64_t n = q.shape[0], dim = q.shape[2], kv_heads = k.shape[1];
  check(n > 0, fn, "N must be positive, got ", n);
  check(k.shape[0] == n && k.shape[2] == dim, fn, "k shape [", k.shape[0], ", ", k.shape[1], ", ",
        k.shape[2], "] does not match q [", n, ", ", heads_, ", ", dim, "]");
  check(kv_heads > 0 && heads_ % kv_heads == 0, fn, "heads ", heads_, " not divisible by kv heads ",
        kv_heads);
  if (state.n_tokens == 0) {
    state.n_tokens = n;
    state.clusters.assign(shared_.size(), cluster_slot{});
  }
  check(state.n_tokens == n, fn, "the state belongs to a prompt of ", state.n_tokens,
        " tokens, got ", n, "; reset() it for a new prompt");
  check(layer > state.last_layer, fn, "layers must be planned in increasing order: layer ", layer,
        " after layer ", state.last_layer, "; reset() the state for a new prompt");
  check(!state.awaiting_publish, fn, "publish() was not called after layer ", state.last_layer);
  check(state.deferred.empty(), fn, "plan_deferred() was not called after layer ",
        state.last_layer);
  state.last_layer = layer;
  state.layer_pivots.clear();

  const int64_t bs = params_.block_size;
  const int64_t nb = (n + bs - 1) / bs;
  const int64_t min_b = params_.min_blocks();
  // A dense layer needs the statistics only where pivots can be chosen (shareprefill).
  const bool dense_layer = dense_layer_[static_cast<size_t>(layer)] != 0;
  layer_plan out;
  out.layer = layer;
  out.kinds.assign(static_cast<size_t>(heads_), head_kind::dense);
  if (params_.mode == plan_mode::dense || n <= min_b * bs ||
      (dense_layer && params_.mode != plan_mode::shareprefill)) {
    out.mask = block_mask::dense_causal(n, bs, heads_);
    state.layer_kinds = out.kinds;
    return out;
  }

  const budget_rule rule{bs, params_.gamma, min_b, params_.max_blocks(nb),
                         params_.estimation_blocks};
  std::vector<head_statistics> stats = last_block_statistics(q, k, rule, pool);
  // A head with its own gamma (head_gammas): its budgets from the same profiles.
  const double* layer_gamma = head_gamma_.data() + layer * heads_;
  for (int64_t h = 0; h < heads_; ++h) {
    if (layer_gamma[h] == params_.gamma) continue;
    head_statistics& st = stats[static_cast<size_t>(h)];
    st.vertical_blocks = budget_blocks(cover_count(st.v_tok.data(), n, layer_gamma[h]), rule, nb);
    st.slash_blocks = budget_blocks(cover_count(st.s_tok.data(), n, layer_gamma[h]), rule, nb);
  }
  const int64_t group = heads_ / kv_heads;

  // B: query-aware test.
  std::vector<uint8_t> query_aware(static_cast<size_t>(heads_), 0);
  std::vector<float> k_pool;
  if (params_.mode == plan_mode::flexprefill || params_.mode == plan_mode::shareprefill) {
    k_pool.resize(static_cast<size_t>(nb * kv_heads * dim));
    block_mean_pool(k_pool.data(), k, bs);
    std::vector<float> q_mean(static_cast<size_t>(heads_ * dim)), est(static_cast<size_t>(nb));
    last_rows_mean(q_mean.data(), q, bs);
    for (int64_t h = 0; h < heads_; ++h) {
      pooled_block_estimate(est.data(), q_mean.data() + h * dim, k_pool.data(), nb, kv_heads,
                            h / group, dim);
      query_aware[h] = js_distance(est.data(), stats[h].v_blk.data(), nb) < params_.tau_qa;
    }
  }

  // C: pivots and sharing, ascending heads.
  for (int64_t h = 0; h < heads_; ++h) {
    out.kinds[h] = query_aware[h] ? head_kind::query_aware : head_kind::vertical_slash;
    if (params_.mode != plan_mode::shareprefill) continue;
    const int32_t c = cluster_of_[static_cast<size_t>(layer * heads_ + h)];
    if (!shared_[c]) continue;
    // A dense pivot (pivot_prefers_dense) runs every tile anyway: being query-aware costs nothing.
    const bool dense_pivot = dense_pivot_[c] == layer * heads_ + h;
    cluster_slot& slot = state.clusters[c];
    // The pivot of an earlier chunk (begin_chunk) is the pivot again, query-aware or not.
    const bool carried_pivot = slot.pivot_layer == layer && slot.pivot_head == h;
    if (query_aware[h] && !dense_pivot && !carried_pivot) continue;
    const head_statistics& st = stats[h];
    if (!slot.has_pivot || carried_pivot) {
      const bool eligible =
          carried_pivot ||
          (dense_pivot_[c] >= 0
               ? dense_pivot
               : !params_.pivot_is_medoid || (medoid_[c].layer == layer && medoid_[c].head == h));
      if (!eligible) continue;
      slot.has_pivot = true;
      slot.pivot_layer = static_cast<int32_t>(layer);
      slot.pivot_head = static_cast<int32_t>(h);
      slot.pivot_v_blk = st.v_blk;
      slot.pivot_s_blk = st.s_blk;
      slot.pivot_vs_tiles = vertical_slash_tiles(st.v_blk.data(), st.s_blk.data(), nb,
                                                 st.vertical_blocks, st.slash_blocks);
      out.kinds[h] = head_kind::pivot;
      out.pivot_heads.push_back(static_cast<int32_t>(h));
    } else if (slot.has_pattern) {
      if (sharing_gate(params_, slot, st.v_blk.data(), st.s_blk.data(), nb))
        out.kinds[h] = head_kind::shared;
    } else if (slot.pivot_layer == layer && params_.share_within_layer && !dense_layer &&
               !dense_head_[static_cast<size_t>(layer * heads_ + h)]) {
      out.kinds[h] = head_kind::deferred;
      out.deferred_heads.push_back(static_cast<int32_t>(h));
      state.deferred.push_back(deferred_head{static_cast<int32_t>(h), c, st.v_blk, st.s_blk,
                                             st.vertical_blocks, st.slash_blocks});
    }
  }

  // A dense layer keeps its pivots (they publish as usual); every other head is dense.
  if (dense_layer)
    for (head_kind& kind : out.kinds)
      if (kind != head_kind::pivot) kind = head_kind::dense;
  // So does a dense head (params.dense_heads).
  for (int64_t h = 0; h < heads_; ++h)
    if (dense_head_[static_cast<size_t>(layer * heads_ + h)] && out.kinds[h] != head_kind::pivot)
      out.kinds[h] = head_kind::dense;

  // D + E: tiles per head.
  std::vector<float> q_pool;
  for (int64_t h = 0; h < heads_; ++h) {
    if (out.kinds[h] == head_kind::query_aware && q_pool.empty()) {
      q_pool.resize(static_cast<size_t>(nb * heads_ * dim));
      block_mean_pool(q_pool.data(), q, bs);
    }
  }
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(heads_));
  pool.parallel_for(heads_, [&](int64_t h, int) {
    const head_statistics& st = stats[h];
    const int32_t c = cluster_of(layer, h);
    switch (out.kinds[h]) {
      case head_kind::pivot:
      case head_kind::dense:
        tiles[h] = causal_tiles(nb);
        break;
      case head_kind::shared:
        tiles[h] = shared_tiles(params_, st.v_blk.data(), st.s_blk.data(), nb, st.vertical_blocks,
                                st.slash_blocks, state.clusters[c].pivot_pattern);
        break;
      case head_kind::query_aware:
        tiles[h] = merged(vertical_slash_tiles(st.v_blk.data(), st.s_blk.data(), nb, min_b, min_b),
                          query_aware_tiles(q_pool.data() + h * dim, heads_ * dim,
                                            k_pool.data() + (h / group) * dim, kv_heads * dim, nb,
                                            dim, layer_gamma[h]));
        break;
      case head_kind::vertical_slash:
        tiles[h] = vertical_slash_tiles(st.v_blk.data(), st.s_blk.data(), nb, st.vertical_blocks,
                                        st.slash_blocks);
        break;
      case head_kind::deferred:  // planned by plan_deferred()
        break;
    }
    tiles[h] = with_exact_last_row(params_, out.kinds[h], std::move(tiles[h]), st.v_blk.data(), nb,
                                   layer_gamma[h]);
  });
  out.mask = block_mask::from_tiles(n, bs, tiles);
  state.awaiting_publish = !out.pivot_heads.empty();
  state.layer_pivots = out.pivot_heads;
  state.layer_kinds = out.kinds;
  return out;
}

void planner::publish(int64_t layer, const std::vector<int32_t>& heads, const float* values,
                      plan_state& state) const {
  const char* fn = "planner::publish";
  check(layer == state.last_layer, fn, "layer ", layer, " is not the last planned layer (",
        state.last_layer, ")");
  if (state.layer_pivots.empty()) return;
  check(state.awaiting_publish, fn, "layer ", layer, " was already published");
  check(values != nullptr, fn, "no block attention values given for layer ", layer);
  const int64_t nb = (state.n_tokens + params_.block_size - 1) / params_.block_size;
  for (int32_t p : state.layer_pivots) {
    auto it = std::find(heads.begin(), heads.end(), p);
    check(it != heads.end(), fn, "layer ", layer, ": block attention of pivot head ", p,
          " is missing");
    const float* a = values + (it - heads.begin()) * nb * nb;
    for (int64_t i = 0; i < nb * nb; ++i)
      check(std::isfinite(a[i]) && a[i] >= 0.0f, fn, "layer ", layer, " head ", p,
            ": block attention entry ", i, " is ", a[i]);
    const int32_t c = cluster_of_[static_cast<size_t>(layer * heads_ + p)];
    cluster_slot& slot = state.clusters[c];
    slot.pivot_blockattn.assign(a, a + nb * nb);
    slot.pivot_pattern = pivot_pattern_tiles(a, nb, params_.gamma);
    slot.pivot_vs_ratio = tile_coverage_ratio(a, nb, slot.pivot_vs_tiles);
    slot.has_pattern = true;
  }
  state.awaiting_publish = false;
}

layer_plan planner::plan_deferred(int64_t layer, plan_state& state) const {
  const char* fn = "planner::plan_deferred";
  check(layer == state.last_layer, fn, "layer ", layer, " is not the last planned layer (",
        state.last_layer, ")");
  check(!state.awaiting_publish, fn, "publish() layer ", layer, " first");
  check(!state.deferred.empty(), fn, "layer ", layer, " has no deferred heads");
  const int64_t n = state.n_tokens, bs = params_.block_size;
  const int64_t nb = (n + bs - 1) / bs;
  layer_plan out;
  out.layer = layer;
  out.kinds = state.layer_kinds;
  std::vector<std::vector<tile>> tiles(static_cast<size_t>(heads_));
  for (const deferred_head& d : state.deferred) {
    const cluster_slot& slot = state.clusters[d.cluster];
    out.deferred_heads.push_back(d.head);
    if (slot.has_pattern && sharing_gate(params_, slot, d.v_blk.data(), d.s_blk.data(), nb)) {
      out.kinds[d.head] = head_kind::shared;
      tiles[d.head] = shared_tiles(params_, d.v_blk.data(), d.s_blk.data(), nb, d.vertical_blocks,
                                   d.slash_blocks, slot.pivot_pattern);
    } else {
      out.kinds[d.head] = head_kind::vertical_slash;
      tiles[d.head] = vertical_slash_tiles(d.v_blk.data(), d.s_blk.data(), nb, d.vertical_blocks,
                                           d.slash_blocks);
    }
    tiles[d.head] =
        with_exact_last_row(params_, out.kinds[d.head], std::move(tiles[d.head]), d.v_blk.data(),
                            nb, head_gamma_[static_cast<size_t>(layer * heads_ + d.head)]);
  }
  out.mask = block_mask::from_tiles(n, bs, tiles);
  state.deferred.clear();
  state.layer_kinds = out.kinds;
  return out;
}

int64_t layer_plan::kind_count(head_kind k) const {
  int64_t n = 0;
  for (head_kind x : kinds) n += x == k;
  return n;
}

}  // namespace sp
