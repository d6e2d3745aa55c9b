"""shareprefill.attention_varlen on the CPU: packed batches of prompts of ragged lengths against
one attention() call per prompt (bit for bit: the same per-tile code and order) and against the
float64 NumPy reference, with dense, tile and Planner plans (pivot layers included, which run
apart), and the errors for bad cu_seqlens and plans. The torch part (the custom ops, CPU
tensors, torch.compile without graph breaks) is skipped without torch."""
import numpy as np
import pytest

import shareprefill as sp
from shareprefill import _core
from conftest import attention_numpy, per_sequence, random_qkv, tile_token_mask

ATOL = 1e-5  # fp32 accumulation over <= 1600 keys, as in test_attention.py


def packed(rng, lengths, heads, kv_heads, dim, dtype=np.float32):
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    q, k, v = random_qkv(rng, int(cu[-1]), heads, kv_heads, dim, dtype)
    return q, k, v, cu


SHAPES = [([1], 4, 4, 64), ([129, 1, 300], 6, 2, 32), ([128, 256, 5, 1000], 9, 3, 64),
          ([700, 127], 8, 1, 128)]


@pytest.mark.parametrize("lengths,heads,kv_heads,dim", SHAPES)
def test_dense_batch_equals_one_call_per_sequence(rng, lengths, heads, kv_heads, dim):
    q, k, v, cu = packed(rng, lengths, heads, kv_heads, dim)
    out, lse = sp.attention_varlen(q, k, v, cu, return_lse=True)
    ref_out, ref_lse = per_sequence(q, k, v, cu)
    assert np.array_equal(out, ref_out) and np.array_equal(lse, ref_lse)
    for b in range(len(lengths)):  # and each sequence attends to itself only
        s, e = cu[b], cu[b + 1]
        exact, exact_lse = attention_numpy(q[s:e], k[s:e], v[s:e])
        np.testing.assert_allclose(out[s:e], exact, atol=ATOL, rtol=0)
        np.testing.assert_allclose(lse[:, s:e], exact_lse, atol=ATOL, rtol=0)


def test_float16_and_int64_cu_seqlens(rng):
    q, k, v, cu = packed(rng, [300, 50], 4, 2, 64, np.float16)
    out = sp.attention_varlen(q, k, v, cu.astype(np.int64))
    assert out.dtype == np.float32
    assert np.array_equal(out, per_sequence(q, k, v, cu)[0])


def test_tile_plans_and_none_entries(rng):
    lengths = [400, 130, 260]
    q, k, v, cu = packed(rng, lengths, 4, 2, 32)
    tiles = [[(0, 0), (1, 1), (2, 0), (2, 2), (3, 3), (3, 1)]] * 4  # sink, diagonal, one more
    plans = [sp.Plan.from_tiles(400, tiles), None, sp.Plan.dense(260, 4)]
    out = sp.attention_varlen(q, k, v, cu, plans=plans)
    ref = per_sequence(q, k, v, cu, plans)[0]
    assert np.array_equal(out, ref)
    exact, _ = attention_numpy(q[:400], k[:400], v[:400],
                               tile_token_mask(plans[0].block_mask(), 400))
    np.testing.assert_allclose(out[:400], exact, atol=ATOL, rtol=0)


SYN = dict(layers=3, heads=8, kv_heads=2, dim=64)


@pytest.mark.parametrize("mode", ["vslash", "shareprefill"])
def test_planner_per_sequence_matches_separate_runs(mode):
    """Two prompts, each with its own Planner, three layers: the varlen batch gives each prompt
    what planning and running it alone gives. In shareprefill mode layer 0 has pivots (those
    sequences run apart to publish their block attention) and later layers share them."""
    lengths = [1600, 1100]
    cmap = _core.synthetic_cluster_map(n_tokens=1600, **SYN) if mode == "shareprefill" else None
    batch_planners = [sp.Planner(cmap, mode, min_budget=256) for _ in lengths]
    alone_planners = [sp.Planner(cmap, mode, min_budget=256) for _ in lengths]
    kinds = set()
    for layer in range(SYN["layers"]):
        seqs = [_core.synthetic_layer(layer, n_tokens=n, **SYN) for n in lengths]
        q, k, v = (np.concatenate([s[i] for s in seqs]) for i in range(3))
        cu = np.array([0, lengths[0], sum(lengths)], dtype=np.int32)
        plans = [p.plan_layer(layer, s[0], s[1]) for p, s in zip(batch_planners, seqs)]
        kinds.update(kind for plan in plans for kind in plan.kinds)
        out, lse = sp.attention_varlen(q, k, v, cu, plans=plans, return_lse=True)
        assert all(plan.published for plan in plans)
        for b, (planner, (qb, kb, vb)) in enumerate(zip(alone_planners, seqs)):
            plan = planner.plan_layer(layer, qb, kb)
            assert np.array_equal(plan.block_mask(), plans[b].block_mask())
            ref, ref_lse = sp.attention(qb, kb, vb, plan=plan, return_lse=True)
            s, e = cu[b], cu[b + 1]
            assert np.array_equal(out[s:e], ref) and np.array_equal(lse[:, s:e], ref_lse)
    expected = {"pivot", "shared"} if mode == "shareprefill" else {"vertical_slash"}
    assert expected <= kinds, kinds


def test_deferred_heads_run_apart():
    planner = sp.Planner(_core.synthetic_cluster_map(n_tokens=1600, **SYN),
                         share_within_layer=True)
    q, k, v = _core.synthetic_layer(0, n_tokens=1600, **SYN)
    plan = planner.plan_layer(0, q, k)
    assert plan.deferred_heads
    out = sp.attention_varlen(q, k, v, [0, 1600], plans=[plan])
    ref, _ = attention_numpy(q, k, v, tile_token_mask(plan.block_mask(), 1600))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("cu,message", [
    ([0, 130, 130, 400], r"sequence 1 is empty"),
    ([0, 200, 100, 400], r"cu_seqlens is not ascending"),
    ([0, 130, 399], r"cu_seqlens ends at 399 but the packed tensors have 400 tokens"),
    ([0, 130, 401], r"\(past the end\)"),
    ([1, 130, 400], r"cu_seqlens\[0\] = 1 \(must be 0\)"),
    ([400], r"a batch of B sequences needs B \+ 1 >= 2"),
    (np.array([0.0, 400.0]), r"cu_seqlens has dtype float64; expected int32 or int64"),
    (np.array([[0, 400]]), r"cu_seqlens must be 1-D"),
    ([0, 2 ** 31, 400], r"outside int32"),
])
def test_bad_cu_seqlens(rng, cu, message):
    q, k, v, _ = packed(rng, [400], 4, 2, 32)
    with pytest.raises(sp.Error, match=r"\[shareprefill.attention_varlen\] .*" + message):
        sp.attention_varlen(q, k, v, cu)


def test_bad_plans_and_arrays(rng):
    q, k, v, cu = packed(rng, [200, 100], 4, 2, 32)
    with pytest.raises(sp.Error, match=r"1 plans for 2 sequences"):
        sp.attention_varlen(q, k, v, cu, plans=[None])
    with pytest.raises(sp.Error, match=r"plans\[1\] is a str"):
        sp.attention_varlen(q, k, v, cu, plans=[None, "dense"])
    with pytest.raises(sp.Error, match=r"plan 1 is for 200 tokens x 4 heads; sequence 1 has 100"):
        sp.attention_varlen(q, k, v, cu, plans=[None, sp.Plan.dense(200, 4)])
    with pytest.raises(sp.Error, match=r"\[shareprefill.attention_varlen\] q has dtype float64"):
        sp.attention_varlen(q.astype(np.float64), k, v, cu)
    with pytest.raises(sp.Error, match=r"\[shareprefill.attention_varlen\] k must have 3"):
        sp.attention_varlen(q, k[:, 0], v, cu)
    with pytest.raises(sp.Error, match=r"must be C-contiguous|contiguous"):
        sp.attention_varlen(q, np.asfortranarray(k), v, cu)


def test_stale_plan_is_an_error(rng):
    planner = sp.Planner(mode="vslash", min_budget=256)
    q, k, v, cu = packed(rng, [300], 4, 2, 32)
    plan = planner.plan_layer(0, q, k)
    planner.reset()
    with pytest.raises(sp.Error, match=r"belongs to an earlier prompt"):
        sp.attention_varlen(q, k, v, cu, plans=[plan])


# --- PyTorch CPU tensors and the custom ops (skipped without torch) ---

def test_torch_cpu_tensors_and_ops(rng):
    torch = pytest.importorskip("torch")
    import shareprefill.torch_ops  # noqa: F401  (registers torch.ops.shareprefill)
    q, k, v, cu = packed(rng, [300, 1, 260], 6, 2, 32)
    ref, ref_lse = sp.attention_varlen(q, k, v, cu, return_lse=True)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    tcu = torch.from_numpy(cu)
    out = sp.attention_varlen(tq, tk, tv, tcu)
    assert isinstance(out, torch.Tensor) and np.array_equal(out.numpy(), ref)
    out, lse = torch.ops.shareprefill.attention_varlen(tq, tk, tv, tcu)
    assert np.array_equal(out.numpy(), ref) and np.array_equal(lse.numpy(), ref_lse)
    # The block-sparse op takes the sequences' CSR masks concatenated (varlen_plan.h).
    tiles = [[(0, 0), (1, 1), (2, 2), (2, 0)]] * 6
    plans = [sp.Plan.from_tiles(300, tiles), sp.Plan.dense(1, 6), sp.Plan.dense(260, 6)]
    row_ptr, col_idx, base = [], [], 0
    for plan in plans:
        rp, ci = plan.csr()
        row_ptr.append(rp + base)
        col_idx.append(ci)
        base += ci.size
    out, lse = torch.ops.shareprefill.attention_varlen_block_sparse(
        tq, tk, tv, tcu, torch.from_numpy(np.concatenate(row_ptr)),
        torch.from_numpy(np.concatenate(col_idx)))
    ref, ref_lse = per_sequence(q, k, v, cu, plans)
    assert np.array_equal(out.numpy(), ref) and np.array_equal(lse.numpy(), ref_lse)
    with pytest.raises(sp.Error, match=r"row_ptr has \d+ entries, the sequences need"):
        torch.ops.shareprefill.attention_varlen_block_sparse(
            tq, tk, tv, tcu, torch.from_numpy(np.concatenate(row_ptr + [row_ptr[-1][-1:]])),
            torch.from_numpy(np.concatenate(col_idx)))
    with pytest.raises(sp.Error, match=r"cu_seqlens is on meta; it must be a CPU tensor"):
        sp.attention_varlen(tq, tk, tv, tcu.to("meta"))


def test_torch_compile_keeps_the_varlen_ops_in_one_graph(rng):
    torch = pytest.importorskip("torch")
    import shareprefill.torch_ops  # noqa: F401

    def step(q, k, v, cu):
        out, lse = torch.ops.shareprefill.attention_varlen(q * 2, k, v, cu)
        return out + 1, lse

    q, k, v, cu = packed(rng, [200, 57], 4, 2, 32)
    args = [torch.from_numpy(x) for x in (q, k, v, cu)]
    eager = step(*args)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(*args)
    assert torch.equal(compiled[0], eager[0]) and torch.equal(compiled[1], eager[1])
