"""shareprefill.Planner on the CPU: dense and vertical-slash plans against their definitions,
SharePrefill's sharing against a NumPy re-derivation of the pivot's pattern (DESIGN.md 2F-2G),
the per-prompt state (reset, order), and whole prompts against the C++ program
`shareprefill plan` (run when the CTest environment names it in SP_CLI)."""
import json
import os
import subprocess

import numpy as np
import pytest

import shareprefill as sp
from shareprefill import _core
from conftest import attention_numpy, tile_token_mask

# Synthetic structured inputs (synthetic.h): long enough that the sparse modes plan
# (N > min_budget 1024 tokens), small enough for the float64 NumPy reference.
SYN = dict(n_tokens=1600, layers=3, heads=8, kv_heads=2, dim=64)
# At this length the default minimum budget (1024 tokens = 8 of 13 blocks) lets a pivot's own
# vertical-slash tiles cover more than tau_fb of its mass, so nothing is shared; 256 tokens
# makes the synthetic heads share (measured: layer 1 all shared, layer 2 six of eight).
SHARING = dict(min_budget=256)
ATOL = 1e-5  # as in test_attention.py: fp32 accumulation over <= 1600 keys


def synthetic(layer):
    return _core.synthetic_layer(layer, **SYN)


def synthetic_map():
    return _core.synthetic_cluster_map(**SYN)


def causal_tiles(n_blocks):
    return np.tril(np.ones((n_blocks, n_blocks), dtype=np.uint8))


def test_dense_mode_plans_every_causal_tile():
    q, k, v = synthetic(0)
    plan = sp.Planner(mode="dense").plan_layer(0, q, k)
    nb = plan.n_blocks
    assert nb == 13 and plan.heads == 8 and plan.n_tokens == 1600
    assert plan.kinds == ["dense"] * 8 and plan.density == 1.0
    assert (plan.block_mask() == causal_tiles(nb)[None]).all()


def test_vslash_plan_has_sink_and_diagonal_and_runs_its_mask():
    q, k, v = synthetic(1)
    planner = sp.Planner(mode="vslash")
    plan = planner.plan_layer(1, q, k)
    mask = plan.block_mask()
    assert plan.kinds == ["vertical_slash"] * 8
    assert 0 < plan.density < 1
    nb = plan.n_blocks
    assert (mask[:, :, 0] == 1).all()                         # sink column (2D)
    assert (mask[:, np.arange(nb), np.arange(nb)] == 1).all()  # local window (2D)
    assert not np.triu(mask, 1).any()                          # causal tiles only
    out = sp.attention(q, k, v, plan=plan)
    ref, _ = attention_numpy(q, k, v, tile_token_mask(mask, SYN["n_tokens"]))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    assert plan.published


def numpy_block_attention(q, k, head, block_size=128):
    """Section 2F in float64: A[r, c] = mean over the query rows of block r of the softmax mass
    that falls in key block c (dense causal attention of one head)."""
    n, heads, dim = q.shape
    kv = head // (heads // k.shape[1])
    s = q[:, head].astype(np.float64) @ k[:, kv].astype(np.float64).T / np.sqrt(dim)
    s = np.where(np.tril(np.ones((n, n), dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    nb = (n + block_size - 1) // block_size
    a = np.zeros((nb, nb))
    for r in range(nb):
        rows = p[r * block_size:(r + 1) * block_size]
        for c in range(r + 1):
            a[r, c] = rows[:, c * block_size:(c + 1) * block_size].sum(axis=1).mean()
    return a


def numpy_pivot_pattern(a, gamma):
    """Section 2G: per row, the fewest key blocks (largest mass first) reaching gamma, plus
    tile (0, 0), as a [nb, nb] 0/1 array."""
    nb = a.shape[0]
    pattern = np.zeros((nb, nb), dtype=np.uint8)
    pattern[0, 0] = 1
    for r in range(nb):
        order = np.argsort(-a[r, :r + 1], kind="stable")
        reached = np.searchsorted(np.cumsum(a[r, order]), gamma) + 1
        pattern[r, order[:reached]] = 1
    return pattern


def test_shareprefill_shares_the_pivots_exact_pattern():
    cmap = synthetic_map()
    planner = sp.Planner(cmap, "shareprefill", **SHARING)
    q0, k0, v0 = synthetic(0)
    plan0 = planner.plan_layer(0, q0, k0)
    assert plan0.pivot_heads, "the synthetic groups give layer 0 pivots"
    nb = plan0.n_blocks
    for h in plan0.pivot_heads:  # pivots are computed densely
        assert plan0.kinds[h] == "pivot"
        assert (plan0.block_mask()[h] == causal_tiles(nb)).all()
    sp.attention(q0, k0, v0, plan=plan0)  # publishes the pivots' block attention

    q1, k1, _ = synthetic(1)
    plan1 = planner.plan_layer(1, q1, k1)
    cluster_of = {tuple(m): c for c, members in cmap.clusters.items() for m in members}
    pivot_of = {cluster_of[(0, h)]: h for h in plan0.pivot_heads}
    shared = [h for h, kind in enumerate(plan1.kinds) if kind == "shared"]
    assert shared, "the synthetic groups make layer-1 heads share"
    gamma = planner.params["gamma"]
    min_blocks = -(-SHARING["min_budget"] // 128)
    for h in shared:
        pivot = pivot_of[cluster_of[(1, h)]]
        expected = numpy_pivot_pattern(numpy_block_attention(q0, k0, pivot), gamma)
        mask = plan1.block_mask()[h]
        assert (mask >= expected).all(), f"layer 1 head {h} lacks tiles of pivot {pivot}"
        # Section 2D adds the shared head's own vertical-slash tiles at the minimum budget:
        # the sink column, the diagonal and min_blocks - 1 more columns and diagonals.
        assert explained_by_vertical_slash(mask & ~expected, min_blocks - 1), f"head {h}"


def explained_by_vertical_slash(extra, more):
    """True if the tiles of `extra` ([nb, nb] 0/1) all lie in key block 0, on the diagonal, or
    in at most `more` other columns and `more` other diagonals (more <= 1 here)."""
    assert more <= 1
    r, c = np.nonzero(extra)
    keep = (c != 0) & (r != c)
    r, c = r[keep], c[keep]
    if more == 0 or len(r) == 0:
        return len(r) == 0
    return any(np.all((c == col) | (r - c == off)) for col in range(extra.shape[0])
               for off in range(extra.shape[0]))


def run_prompt(planner, layers):
    """Plans and runs every layer; returns the plans and the outputs."""
    plans, outs = [], []
    for layer in range(layers):
        q, k, v = synthetic(layer)
        plans.append(planner.plan_layer(layer, q, k))
        outs.append(sp.attention(q, k, v, plan=plans[-1]))
    return plans, outs


def test_reset_starts_a_new_prompt_with_the_same_plans():
    planner = sp.Planner(synthetic_map(), **SHARING)
    first, first_out = run_prompt(planner, 2)
    with pytest.raises(sp.Error, match="layers must be planned in increasing order"):
        planner.plan_layer(0, *synthetic(0)[:2])
    planner.reset()
    second, second_out = run_prompt(planner, 2)
    for a, b, oa, ob in zip(first, second, first_out, second_out):
        assert a.kinds == b.kinds
        assert (a.block_mask() == b.block_mask()).all()
        np.testing.assert_array_equal(oa, ob)


def test_stale_plan_and_missing_publish_are_errors():
    planner = sp.Planner(synthetic_map())
    q, k, v = synthetic(0)
    plan = planner.plan_layer(0, q, k)
    assert plan.pivot_heads
    with pytest.raises(sp.Error, match=r"publish\(\) was not called after layer 0"):
        planner.plan_layer(1, *synthetic(1)[:2])
    planner.reset()
    with pytest.raises(sp.Error, match="belongs to an earlier prompt"):
        sp.attention(q, k, v, plan=plan)


def test_running_a_plan_twice_gives_the_same_output():
    planner = sp.Planner(synthetic_map())
    q, k, v = synthetic(0)
    plan = planner.plan_layer(0, q, k)
    first = sp.attention(q, k, v, plan=plan)
    np.testing.assert_array_equal(sp.attention(q, k, v, plan=plan), first)


def test_share_within_layer_runs_the_deferred_heads():
    planner = sp.Planner(synthetic_map(), share_within_layer=True)
    q, k, v = synthetic(0)
    plan = planner.plan_layer(0, q, k)
    assert plan.deferred_heads and "deferred" in plan.kinds
    out = sp.attention(q, k, v, plan=plan)
    assert "deferred" not in plan.kinds  # final kinds once the second pass ran
    ref, _ = attention_numpy(q, k, v, tile_token_mask(plan.block_mask(), SYN["n_tokens"]))
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)


def test_parameters_are_validated():
    with pytest.raises(sp.Error, match="unknown mode 'sparse'"):
        sp.Planner(mode="sparse")
    with pytest.raises(sp.Error, match="gamma"):
        sp.Planner(mode="vslash", gamma=1.5)
    with pytest.raises(sp.Error, match="shareprefill mode needs a cluster map"):
        sp.Planner()
    with pytest.raises(TypeError):
        sp.Planner(mode="vslash", gama=0.9)
    planner = sp.Planner(mode="vslash", gamma=0.9, tau_qa=0.2, min_budget=512)
    assert planner.params["gamma"] == 0.9 and planner.params["min_budget"] == 512
    assert planner.mode == "vslash" and planner.cluster_map is None


def test_map_and_model_shapes_must_agree():
    planner = sp.Planner(synthetic_map())  # 8 heads
    q, k, _ = synthetic(0)
    with pytest.raises(sp.Error, match="head"):
        planner.plan_layer(0, np.ascontiguousarray(q[:, :4]), k)


def test_planner_inputs_are_checked():
    planner = sp.Planner(mode="vslash")
    q, k, _ = synthetic(0)
    with pytest.raises(sp.Error, match=r"\[shareprefill.Planner.plan_layer\] k has dtype float64"):
        planner.plan_layer(0, q, k.astype(np.float64))
    with pytest.raises(sp.Error, match="q of shape .* has element strides"):
        planner.plan_layer(0, q[:, ::2], k)


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_MAP = os.path.join(REPO, "data", "clusters", "smollm2-135m-instruct.json")


def test_cluster_map_load_the_shipped_map():
    cmap = sp.ClusterMap.load(SHIPPED_MAP)
    assert cmap.model["layers"] == 30 and cmap.model["heads"] == 9 and cmap.layers == 30
    assert sorted(h for members in cmap.clusters.values() for h in members) == \
        [(layer, head) for layer in range(30) for head in range(9)]
    assert set(cmap.shared_clusters) <= set(cmap.clusters)
    assert cmap.dense_layers == [18, 23]
    cmap.validate(30, 9)
    with pytest.raises(sp.Error, match="heads"):
        cmap.validate(30, 8)
    # The map's dense layers are the planner's default; an explicit list replaces them.
    assert sp.Planner(cmap).params["dense_layers"] == [18, 23]
    assert sp.Planner(cmap, dense_layers=[]).params["dense_layers"] == []


PER_HEAD_MAP = os.path.join(REPO, "data", "clusters", "smollm2-135m-instruct-dense-heads.json")


def test_per_head_map_dense_heads_are_planned_dense():
    """A format-2 map's dense heads are the planner's default, as in the CLI: those heads plan
    dense (here layer 18's, in vslash mode: no pivots); an explicit dense_layers replaces them."""
    cmap = sp.ClusterMap.load(PER_HEAD_MAP)
    assert cmap.dense_layers == [] and (18, 7) in cmap.dense_heads
    planner = sp.Planner(cmap, mode="vslash")
    assert [tuple(x) for x in planner.params["dense_heads"]] == cmap.dense_heads
    assert sp.Planner(cmap, mode="vslash", dense_layers=[]).params["dense_heads"] == []
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2048, 9, 64)).astype(np.float32)
    k = rng.standard_normal((2048, 3, 64)).astype(np.float32)
    plan = planner.plan_layer(18, q, k)
    dense = {h for (layer, h) in cmap.dense_heads if layer == 18}
    assert dense and all((plan.kinds[h] == "dense") == (h in dense) for h in range(9))


def test_cluster_map_errors_name_the_source(tmp_path):
    missing = str(tmp_path / "missing.json")
    with pytest.raises(sp.Error, match="missing.json"):
        sp.ClusterMap.load(missing)
    with pytest.raises(sp.Error, match=r"\[shareprefill.ClusterMap.from_json\] inline: "):
        sp.ClusterMap.from_json("{not json", "inline")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"clusters": {"1": [[0, 0]]}, "shared_clusters": ["2"]}))
    with pytest.raises(sp.Error, match="bad.json"):
        sp.ClusterMap.load(str(bad))


def numpy_relative_error(out, ref):
    return float(np.sqrt(((out.astype(np.float64) - ref) ** 2).sum() / (ref ** 2).sum()))


@pytest.mark.parametrize("mode", ["vslash", "shareprefill"])
def test_whole_prompt_matches_the_cpp_program(mode):
    cli = os.environ.get("SP_CLI")
    if not cli:
        pytest.skip("SP_CLI (the shareprefill program) is set by the CTest test only")
    args = [cli, "plan", "--synthetic", "--json", "--mode", mode, "--n", str(SYN["n_tokens"]),
            "--layers", str(SYN["layers"]), "--heads", str(SYN["heads"]),
            "--kv-heads", str(SYN["kv_heads"]), "--dim", str(SYN["dim"]), "--seed", "1",
            "--min-budget", str(SHARING["min_budget"])]
    stdout = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    rows = {row["layer"]: row for row in rows if "layer" in row}
    assert sorted(rows) == list(range(SYN["layers"])), stdout
    planner = sp.Planner(synthetic_map() if mode == "shareprefill" else None, mode, **SHARING)
    plans, outs = run_prompt(planner, SYN["layers"])
    for layer, (plan, out) in enumerate(zip(plans, outs)):
        cpp = rows[layer]
        assert cpp["layer"] == layer
        assert plan.density == pytest.approx(cpp["density"], rel=1e-12)
        if mode == "shareprefill" and layer > 0:
            assert "shared" in plan.kinds
        for kind, count in cpp["kinds"].items():
            assert plan.kinds.count(kind) == count, (layer, kind)
        q, k, v = synthetic(layer)
        dense = sp.attention(q, k, v)
        assert numpy_relative_error(out, dense) == pytest.approx(cpp["rel_err"], rel=1e-6)


def test_exact_last_row_adds_tiles_to_the_last_row_only():
    """Planner(exact_last_row=True): the last query block of every query-aware head also covers
    its measured attention there; every other row is planned as without the option."""
    q, k, v = synthetic(1)
    planners = [sp.Planner(mode="flexprefill", tau_qa=1.0, min_budget=256, exact_last_row=x)
                for x in (False, True)]
    assert planners[1].params["exact_last_row"] and not planners[0].params["exact_last_row"]
    base, exact = (p.plan_layer(1, q, k) for p in planners)
    assert base.kinds == exact.kinds == ["query_aware"] * 8
    a, b = base.block_mask(), exact.block_mask()
    assert (a[:, :-1] == b[:, :-1]).all() and (b >= a).all()
    assert (b[:, -1] != a[:, -1]).any(), "the option added no tile"


def test_default_pivot_publishing_is_the_forwards_rule():
    """CudaPrefill's choice of when pivots compute their block attention comes from the C++
    rule the CUDA forward uses (sp::default_pivot_publishing)."""
    start = _core.DEFER_PIVOTS_FROM
    assert _core.default_pivot_publishing(start, True, True) == "all"
    assert _core.default_pivot_publishing(start, False, True) == "deferred"
    assert _core.default_pivot_publishing(start - 1, False, True) == "used"
    assert _core.default_pivot_publishing(4 * start, False, False) == "used"
