// Context-parallel attention simulated on the CPU (context_parallel.h): sub-plans per rank, the
// ranks run one after another, their rows copied out; ring chunks merged by LSE. Also the byte
// model of a real run.
#include "shareprefill/context_parallel.h"

#include <algorithm>
#include <cstring>

#include "shareprefill/error.h"
#include "shareprefill/merge_attention.h"

namespace sp {

const char* context_kv_exchange_name(context_kv_exchange x) {
  return x == context_kv_exchange::ring ? "ring" : "all_gather";
}

std::vector<uint8_t> context_rank_rows(const context_partition& p, int64_t rank) {
  check(rank >= 0 && rank < p.ranks, "context_rank_rows", "rank ", rank, " of ", p.ranks);
  std::vector<uint8_t> rows(p.owner.size());
  for (size_t b = 0; b < rows.size(); ++b) rows[b] = p.owner[b] == rank;
  return rows;
}

block_mask block_mask_restrict(const block_mask& mask, const std::vector<uint8_t>& rows,
                               const std::vector<uint8_t>& cols) {
  const char* fn = "block_mask_restrict";
  const size_t nb = static_cast<size_t>(mask.n_blocks);
  check(rows.size() == nb, fn, "rows has ", rows.size(), " entries, the mask ", nb, " blocks");
  check(cols.empty() || cols.size() == nb, fn, "cols has ", cols.size(), " entries, the mask ", nb,
        " blocks");
  block_mask out;
  out.n_tokens = mask.n_tokens, out.block_size = mask.block_size, out.n_blocks = mask.n_blocks;
  out.heads = mask.heads;
  out.row_ptr.reserve(static_cast<size_t>(mask.heads) * (nb + 1));
  for (int64_t h = 0; h < mask.heads; ++h) {
    out.row_ptr.push_back(static_cast<int64_t>(out.col_idx.size()));
    for (size_t r = 0; r < nb; ++r) {
      if (rows[r] != 0)
        for (int64_t i = mask.row_begin(h, static_cast<int64_t>(r));
             i < mask.row_end(h, static_cast<int64_t>(r)); ++i) {
          const int32_t c = mask.col_idx[static_cast<size_t>(i)];
          if (cols.empty() || cols[static_cast<size_t>(c)] != 0) out.col_idx.push_back(c);
        }
      out.row_ptr.push_back(static_cast<int64_t>(out.col_idx.size()));
    }
  }
  return out;
}

std::vector<block_run> context_rank_runs(const context_partition& p, int64_t rank) {
  check(rank >= 0 && rank < p.ranks, "context_rank_runs", "rank ", rank, " of ", p.ranks);
  std::vector<block_run> runs;
  for (int64_t b = 0; b < p.n_blocks(); ++b) {
    if (p.owner[static_cast<size_t>(b)] != rank) continue;
    if (!runs.empty() && runs.back().end == b)
      ++runs.back().end;
    else
      runs.push_back({b, b + 1});
  }
  return runs;
}

namespace {

// Copies the rows of query blocks `runs` from the rank's full-size results into the outputs.
void copy_rank_rows(const std::vector<block_run>& runs, int64_t n, int64_t bs, int64_t nb,
                    const tensor_view& out, const float* rank_out, const tensor_view& lse,
                    const float* rank_lse, const block_attention_output* a, const float* rank_a) {
  const int64_t row = out.shape[1] * out.shape[2];
  for (const block_run& run : runs) {
    const int64_t t0 = run.begin * bs, t1 = std::min(run.end * bs, n);
    std::memcpy(out.as<float>() + t0 * row, rank_out + t0 * row,
                static_cast<size_t>((t1 - t0) * row) * sizeof(float));
    if (!lse.empty())
      for (int64_t h = 0; h < lse.shape[0]; ++h)
        std::memcpy(lse.as<float>() + h * n + t0, rank_lse + h * n + t0,
                    static_cast<size_t>(t1 - t0) * sizeof(float));
    if (a != nullptr)
      for (size_t i = 0; i < a->heads.size(); ++i) {
        const int64_t off = (static_cast<int64_t>(i) * nb + run.begin) * nb;
        std::memcpy(a->values + off, rank_a + off,
                    static_cast<size_t>((run.end - run.begin) * nb) * sizeof(float));
      }
  }
}

}  // namespace

void context_parallel_attention(const tensor_view& out, const tensor_view& lse,
                                const block_attention_output* block_attention, const tensor_view& q,
                                const tensor_view& k, const tensor_view& v, const block_mask& mask,
                                const context_partition& p, context_kv_exchange exchange,
                                thread_pool& pool) {
  const char* fn = "context_parallel_attention";
  const attention_shape s = attention_shape_of(fn, q, k, v);
  check(p.n_blocks() == mask.n_blocks && mask.n_tokens == s.n, fn, "the partition has ",
        p.n_blocks(), " blocks, the mask ", mask.n_blocks, " blocks of ", mask.n_tokens,
        " tokens, q ", s.n, " tokens");
  check(out.rank == 3 && out.type == dtype::f32 && out.is_contiguous() && !out.on_device &&
            out.shape[0] == s.n && out.shape[1] == s.heads && out.shape[2] == s.dim,
        fn, "out must be a contiguous host f32 [", s.n, ", ", s.heads, ", ", s.dim, "] view");
  check(lse.empty() || (lse.rank == 2 && lse.type == dtype::f32 && lse.is_contiguous() &&
                        lse.shape[0] == s.heads && lse.shape[1] == s.n),
        fn, "lse must be empty or a contiguous f32 [", s.heads, ", ", s.n, "] view");
  check(exchange == context_kv_exchange::all_gather || block_attention == nullptr, fn,
        "the ring exchange cannot produce block attention (a pivot row needs all its keys)");
  const int64_t n = s.n, nb = mask.n_blocks, bs = mask.block_size;
  const int64_t out_elems = n * s.heads * s.dim;
  std::vector<float> rank_out(static_cast<size_t>(out_elems)),
      rank_lse(static_cast<size_t>(s.heads * n));
  const tensor_view o_view =
      tensor_view::contiguous(rank_out.data(), dtype::f32, {n, s.heads, s.dim});
  const tensor_view l_view = tensor_view::contiguous(rank_lse.data(), dtype::f32, {s.heads, n});
  std::vector<float> rank_a;
  block_attention_output rank_ba;
  if (block_attention != nullptr) {
    rank_a.resize(block_attention->heads.size() * static_cast<size_t>(nb * nb));
    rank_ba.heads = block_attention->heads;
    rank_ba.values = rank_a.data();
  }
  for (int64_t r = 0; r < p.ranks; ++r) {
    const std::vector<uint8_t> rows = context_rank_rows(p, r);
    if (exchange == context_kv_exchange::all_gather) {
      attention_block_sparse(o_view, l_view, block_attention ? &rank_ba : nullptr, q, k, v,
                             block_mask_restrict(mask, rows), pool);
    } else {
      // Chunks in ring order r, r-1, ...: the first straight into the rank's result, each later
      // one into a partial that is merged in (aliasing the result is allowed).
      std::vector<float> part_out(static_cast<size_t>(out_elems)), part_lse(rank_lse.size());
      const tensor_view po =
          tensor_view::contiguous(part_out.data(), dtype::f32, {n, s.heads, s.dim});
      const tensor_view pl = tensor_view::contiguous(part_lse.data(), dtype::f32, {s.heads, n});
      for (int64_t step = 0; step < p.ranks; ++step) {
        const int64_t chunk = (r - step + p.ranks) % p.ranks;
        const block_mask sub = block_mask_restrict(mask, rows, context_rank_rows(p, chunk));
        if (step == 0) {
          attention_block_sparse(o_view, l_view, nullptr, q, k, v, sub, pool);
          continue;
        }
        attention_block_sparse(po, pl, nullptr, q, k, v, sub, pool);
        merge_attention_states(o_view, l_view, o_view, l_view, po, pl, &pool);
      }
    }
    copy_rank_rows(context_rank_runs(p, r), n, bs, nb, out, rank_out.data(), lse, rank_lse.data(),
                   block_attention, rank_a.data());
  }
}

int64_t context_plan_bytes(const block_mask& mask, const std::vector<uint8_t>& rows) {
  const int64_t nb = mask.n_blocks, h = mask.heads;
  check(rows.empty() || static_cast<int64_t>(rows.size()) == nb, "context_plan_bytes", "rows has ",
        rows.size(), " entries, the mask ", nb, " blocks");
  int64_t kept = nb, tiles = mask.total_tiles();
  if (!rows.empty()) {
    kept = 0, tiles = 0;
    for (int64_t r = 0; r < nb; ++r) {
      if (rows[static_cast<size_t>(r)] == 0) continue;
      ++kept;
      for (int64_t head = 0; head < h; ++head)
        tiles += mask.row_end(head, r) - mask.row_begin(head, r);
    }
  }
  const int64_t per_head = 1 + 4 + 8;  // kinds, pivot_slot, scratch_offset
  return h * per_head + h * (kept + 1) * 8 + tiles * 4 + h * kept * 2 * 4;
}

int64_t context_comm::total(int64_t rank) const {
  const size_t r = static_cast<size_t>(rank);
  return kv[r] + qo[r] + plan[r] + block_attention[r];
}

int64_t context_comm::max_total() const {
  int64_t m = 0;
  for (size_t r = 0; r < kv.size(); ++r) m = std::max(m, total(static_cast<int64_t>(r)));
  return m;
}

context_comm context_comm_bytes(const block_mask& mask, int64_t kv_heads, int64_t dim,
                                int64_t elem_bytes, int64_t pivots, const context_partition& tokens,
                                const context_partition& attention) {
  const char* fn = "context_comm_bytes";
  check(tokens.ranks == attention.ranks && tokens.n_blocks() == mask.n_blocks &&
            attention.n_blocks() == mask.n_blocks,
        fn, "partitions of ", tokens.n_blocks(), "/", attention.n_blocks(), " blocks and ",
        tokens.ranks, "/", attention.ranks, " ranks for a mask of ", mask.n_blocks, " blocks");
  check(kv_heads > 0 && dim > 0 && elem_bytes > 0 && pivots >= 0 && pivots <= mask.heads, fn,
        "kv_heads=", kv_heads, " dim=", dim, " elem_bytes=", elem_bytes, " pivots=", pivots);
  const int64_t ranks = tokens.ranks, nb = mask.n_blocks, n = mask.n_tokens, bs = mask.block_size;
  auto tokens_of = [&](int64_t b) { return std::min((b + 1) * bs, n) - b * bs; };
  context_comm c;
  for (auto* v : {&c.kv, &c.qo, &c.plan, &c.block_attention})
    v->assign(static_cast<size_t>(ranks), 0);
  const int32_t planner_rank = tokens.owner.back();
  const int64_t plan = context_plan_bytes(mask);
  const int64_t q_row = mask.heads * dim * elem_bytes, kv_row = 2 * kv_heads * dim * elem_bytes;
  for (int64_t b = 0; b < nb; ++b) {
    const int32_t t = tokens.owner[static_cast<size_t>(b)],
                  a = attention.owner[static_cast<size_t>(b)];
    for (int64_t r = 0; r < ranks; ++r)
      if (r != t) c.kv[static_cast<size_t>(r)] += tokens_of(b) * kv_row;
    if (a != t) {
      c.qo[static_cast<size_t>(a)] += tokens_of(b) * q_row;  // Q in
      c.qo[static_cast<size_t>(t)] += tokens_of(b) * q_row;  // O back
    }
    if (a != planner_rank) c.block_attention[static_cast<size_t>(planner_rank)] += pivots * nb * 4;
  }
  for (int64_t r = 0; r < ranks; ++r)
    if (r != planner_rank) c.plan[static_cast<size_t>(r)] = plan;
  return c;
}

}  // namespace sp
