// `bench layer --ranks R` over NCCL, one process per GPU (bench_layer_cp.h, cp_run_nccl).
// Simplifications, each named in docs/CONTEXT_PARALLEL.md: every rank holds all of q (a real
// rank holds its own rows and receives the moved blocks' rows); the sub-plan is built through
// the host (download, restrict, upload) as in the one-GPU simulation; phases are timed with a
// device synchronisation around each.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include "bench_layer_cp.h"
#include "shareprefill/context_parallel_device.h"
#include "shareprefill/cuda_copy.h"
#include "shareprefill/device_planner.h"
#include "shareprefill/error.h"
#include "shareprefill/nccl_comm.h"

namespace sp::cli {
namespace {

using clock_type = std::chrono::steady_clock;

// Runs f, waits for the device, returns the milliseconds.
template <class F>
double timed(F&& f) {
  cuda_synchronize();
  const auto t0 = clock_type::now();
  f();
  cuda_synchronize();
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

tensor_view device_view(void* data, dtype t, std::initializer_list<int64_t> shape) {
  tensor_view v = tensor_view::contiguous(data, t, shape);
  v.on_device = true;
  return v;
}

// Segments of the rows of each rank's blocks (row_bytes per token) of a [N, ...] buffer.
std::vector<byte_segment> row_segments(const context_partition& p, int64_t n, int64_t row_bytes) {
  std::vector<byte_segment> s;
  for (int64_t r = 0; r < p.ranks; ++r)
    for (const block_run& run : context_rank_runs(p, r)) {
      const int64_t t0 = run.begin * 128, t1 = std::min(run.end * 128, n);
      s.push_back({static_cast<int32_t>(r), t0 * row_bytes, (t1 - t0) * row_bytes});
    }
  return s;
}

// Broadcasts the used part of a device plan from `root` into `plan` (every rank's own arrays).
void broadcast_plan(nccl_comm& comm, const layer_plan_view& plan, int root, device_buffer& count) {
  const int64_t h = plan.heads, nb = plan.n_blocks;
  if (comm.rank() == root) cuda_copy_2d(count.data(), 8, plan.row_ptr + h * (nb + 1) - 1, 8, 8, 1);
  comm.broadcast(count.data(), 8, root, nullptr);
  int64_t used = 0;
  count.download(&used, 8);  // the one host sync of the broadcast: col_idx's used length
  comm.broadcast(plan.row_ptr, h * (nb + 1) * 8, root, nullptr);
  comm.broadcast(plan.col_idx, used * 4, root, nullptr);
  comm.broadcast(plan.schedule, h * nb * 2 * 4, root, nullptr);
  comm.broadcast(plan.kinds, h, root, nullptr);
  if (plan.max_pivots > 0) {
    comm.broadcast(plan.pivot_slot, h * 4, root, nullptr);
    comm.broadcast(plan.scratch_offset, h * 8, root, nullptr);
  }
}

void run_rank(const cp_bench_options& o, const cp_nccl_inputs& in, const nccl_id& id, int rank) {
  const char* fn = "bench layer --ranks";
  nccl_comm comm(id, static_cast<int>(o.ranks), rank);
  const int64_t n = in.n, h = in.heads, hkv = in.kv_heads, d = in.dim, nb = (n + 127) / 128;
  const int64_t layers = static_cast<int64_t>(in.q.size());
  planner_params params;
  params.mode = in.mode;
  const device_planner dp(params, layers, h, in.mode == plan_mode::shareprefill ? in.map : nullptr);
  const layer_shape shape{n, h, hkv, d};
  device_buffer ws(static_cast<size_t>(dp.workspace_bytes(shape)));
  device_buffer st(static_cast<size_t>(dp.state_bytes(n)));
  const layer_plan_capacity cap = layer_plan_capacity_worst_case(n, h, dp.max_pivots());
  device_buffer recv_plan(static_cast<size_t>(plan_workspace_bytes(cap))), count(8);
  device_buffer q(static_cast<size_t>(n * h * d * 2)), k(static_cast<size_t>(n * hkv * d * 2)),
      v(k.size()), out(q.size()), ref(q.size());
  device_buffer a(static_cast<size_t>(std::max<int64_t>(dp.max_pivots(), 1) * nb * nb * 4));
  device_plan_state state;
  dp.begin_prompt(state, st.data(), static_cast<int64_t>(st.size()), n, nullptr);
  // Token ownership: zigzag over the dense triangle, the same on every rank and every layer.
  const context_partition tokens = context_partition_zigzag(context_row_work_dense(nb, 1), o.ranks);
  const int planner = tokens.owner.back();
  const std::vector<byte_segment> kv_rows = row_segments(tokens, n, hkv * d * 2);
  for (int64_t l = 0; l < layers; ++l) {
    q.upload(in.q[static_cast<size_t>(l)]->data(), q.size());
    k.fill_bytes(0), v.fill_bytes(0);
    for (const byte_segment& s : kv_rows)
      if (s.root == rank) {
        k.upload(reinterpret_cast<const char*>(in.k[static_cast<size_t>(l)]->data()) + s.offset,
                 static_cast<size_t>(s.bytes), static_cast<size_t>(s.offset));
        v.upload(reinterpret_cast<const char*>(in.v[static_cast<size_t>(l)]->data()) + s.offset,
                 static_cast<size_t>(s.bytes), static_cast<size_t>(s.offset));
      }
    const tensor_view qv = device_view(q.data(), dtype::bf16, {n, h, d});
    const tensor_view kv = device_view(k.data(), dtype::bf16, {n, hkv, d});
    const tensor_view vv = device_view(v.data(), dtype::bf16, {n, hkv, d});
    const double kv_ms = timed([&] {
      comm.gather_segments(k.data(), kv_rows, nullptr);
      comm.gather_segments(v.data(), kv_rows, nullptr);
    });
    std::optional<device_plan_output> planned;
    double plan_ms = 0;
    if (rank == planner)
      plan_ms = timed([&] {
        planned = dp.plan(l, qv, kv, state, ws.data(), static_cast<int64_t>(ws.size()), nullptr);
      });
    const layer_plan_view plan =
        rank == planner ? planned->plan
                        : layer_plan_carve(recv_plan.data(), recv_plan.size(), cap, true);
    const double bcast_ms = timed([&] { broadcast_plan(comm, plan, planner, count); });
    const block_mask mask = device_planner::download_mask(plan);
    const std::vector<int32_t> slots = download_pivot_slots(plan);
    const context_partition balanced =
        context_partition_balanced(context_row_work(mask), o.ranks, o.target_imbalance);
    cuda_context_simulation sim(mask, slots, balanced, context_kv_exchange::all_gather, d,
                                dtype::bf16);
    const double attention_ms = timed([&] { sim.run_rank(rank, qv, kv, vv, {}, nullptr); });
    bool pivots = false;
    for (int32_t slot : slots) pivots = pivots || slot >= 0;
    void* a_base = rank == planner && pivots ? planned->block_attention.data : a.data();
    const tensor_view a_view =
        pivots ? device_view(a_base, dtype::f32, {plan.max_pivots, nb, nb}) : tensor_view{};
    sim.gather_rank(rank, device_view(out.data(), dtype::bf16, {n, h, d}), {}, a_view, nullptr);
    // The pivots' A rows [nb] f32 of each rank's query blocks, to the planning rank's A.
    std::vector<byte_segment> a_rows;
    for (int32_t slot : slots)
      for (int64_t r = 0; r < o.ranks && slot >= 0; ++r)
        for (const block_run& run : context_rank_runs(balanced, r))
          a_rows.push_back({static_cast<int32_t>(r), (slot * nb + run.begin) * nb * 4,
                            (run.end - run.begin) * nb * 4});
    const double gather_ms = timed([&] {
      comm.gather_segments(out.data(), row_segments(balanced, n, h * d * 2), nullptr);
      if (!a_rows.empty()) comm.gather_segments(a_base, a_rows, nullptr);
    });
    bool equal = true;
    if (rank == planner) {
      dp.publish(l, *planned, state, nullptr);
      cuda_attention_block_sparse(device_view(ref.data(), dtype::bf16, {n, h, d}), {},
                                  planned->block_attention, qv, kv, vv, plan, planned->scratch);
      std::vector<uint16_t> x(q.size() / 2), y(q.size() / 2);
      out.download(x.data(), out.size());
      ref.download(y.data(), ref.size());
      equal = x == y;
    }
    std::printf(
        "{\"bench\":\"layer_nccl\",\"rank\":%d,\"ranks\":%lld,\"layer\":%lld,\"n\":%lld,"
        "\"heads\":%lld,\"kv_heads\":%lld,\"dim\":%lld,\"planner\":%d,\"kv_allgather_ms\":%.4f,"
        "\"plan_ms\":%.4f,\"plan_broadcast_ms\":%.4f,\"attention_ms\":%.4f,"
        "\"gather_ms\":%.4f,\"work\":%lld,\"imbalance\":%.5f,\"equal_bits\":%s}\n",
        rank, static_cast<long long>(o.ranks), static_cast<long long>(l), static_cast<long long>(n),
        static_cast<long long>(h), static_cast<long long>(hkv), static_cast<long long>(d), planner,
        kv_ms, plan_ms, bcast_ms, attention_ms, gather_ms,
        static_cast<long long>(balanced.work[static_cast<size_t>(rank)]), balanced.imbalance(),
        rank == planner ? (equal ? "true" : "false") : "null");
    std::fflush(stdout);
    check(equal, fn, "rank ", rank, " layer ", l, ": the gathered output differs from one call");
  }
  device_plan_check(state, nullptr);
}

}  // namespace

int cp_run_nccl(const cp_bench_options& o, const cp_nccl_inputs& in) {
  check(nccl_available(), "bench layer --ranks", "--ranks ", o.ranks,
        " without --simulate needs one process per GPU over NCCL: a build with SP_NCCL=ON");
  const nccl_id id = nccl_make_id();  // before fork: the bootstrap root stays in this process
  std::vector<pid_t> children;
  for (int r = 0; r < o.ranks; ++r) {
    const pid_t pid = fork();
    check(pid >= 0, "bench layer --ranks", "fork failed for rank ", r);
    if (pid == 0) {
      int rc = 0;
      try {
        run_rank(o, in, id, r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "shareprefill: rank %d: %s\n", r, e.what());
        rc = 1;
      }
      std::fflush(nullptr);
      _exit(rc);
    }
    children.push_back(pid);
  }
  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  return failed;
}

}  // namespace sp::cli
