"""shareprefill.attention with fewer queries than keys (a chunk of a prompt: q the last Nq of the
Nk tokens of k and v) on the CPU: every row equal to the same row of the whole-prompt call, dense
and under a plan; a chunk split by keys and merged; bad chunks named in the error."""
import numpy as np
import pytest

import shareprefill as sp
from shareprefill import _core
from conftest import random_qkv

SYN = dict(n_tokens=1600, layers=2, heads=8, kv_heads=2, dim=64)


@pytest.mark.parametrize("n,offset", [(300, 128), (1000, 384), (1000, 896), (129, 128)])
def test_dense_chunk_rows_equal_the_whole_prompt(rng, n, offset):
    q, k, v = random_qkv(rng, n, 6, 2, 64)
    whole, whole_lse = sp.attention(q, k, v, return_lse=True)
    out, lse = sp.attention(q[offset:], k, v, return_lse=True)
    assert out.shape == (n - offset, 6, 64) and lse.shape == (6, n - offset)
    np.testing.assert_array_equal(out, whole[offset:])
    np.testing.assert_array_equal(lse, whole_lse[:, offset:])


def test_planned_chunk_rows_equal_the_whole_prompt(rng):
    n, heads, offset = 900, 4, 512
    q, k, v = random_qkv(rng, n, heads, 2, 64)
    nb = (n + 127) // 128
    pick = np.random.default_rng(3)
    tiles = [sorted({(r, r) for r in range(nb)} | {(r, 0) for r in range(nb)} |
                    {(r, c) for r in range(nb) for c in range(r) if pick.random() < 0.3})
             for _ in range(heads)]
    plan = sp.Plan.from_tiles(n, tiles)
    whole = sp.attention(q, k, v, plan=plan)
    np.testing.assert_array_equal(sp.attention(q[offset:], k, v, plan=plan), whole[offset:])


def test_planner_plan_runs_on_a_chunk_once_published(rng):
    """A vslash plan from Planner.plan_layer has no pivots: it runs on the chunk's rows as is."""
    q, k, v = _core.synthetic_layer(0, **SYN)
    plan = sp.Planner(mode="vslash", min_budget=256).plan_layer(0, q, k)
    whole = sp.attention(q, k, v, plan=plan)
    np.testing.assert_array_equal(sp.attention(q[1024:], k, v, plan=plan), whole[1024:])


def test_chunk_over_cache_and_chunk_merges_from_two_key_ranges(rng):
    """The chunk's attention over the cached keys (blocks < 3) and over its own keys, merged by
    their LSE, equals one chunk call over all keys (fp32 rounding)."""
    n, heads, offset = 700, 4, 384
    q, k, v = random_qkv(rng, n, heads, 1, 64)
    nb = (n + 127) // 128
    cached = [[(r, c) for r in range(nb) for c in range(min(r + 1, 3))]] * heads
    own = [[(r, c) for r in range(nb) for c in range(3, r + 1)]] * heads
    o_a, lse_a = sp.attention(q[offset:], k, v, plan=sp.Plan.from_tiles(n, cached),
                              return_lse=True)
    o_b, lse_b = sp.attention(q[offset:], k, v, plan=sp.Plan.from_tiles(n, own), return_lse=True)
    o, lse = sp.merge_attention_states(o_a, lse_a, o_b, lse_b)
    ref, ref_lse = sp.attention(q[offset:], k, v, return_lse=True)
    np.testing.assert_allclose(o, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-5, rtol=1e-6)


def test_torch_cpu_chunk(rng):
    torch = pytest.importorskip("torch")
    q, k, v = (torch.from_numpy(x) for x in random_qkv(rng, 400, 3, 1, 64))
    whole = sp.attention(q, k, v)
    torch.testing.assert_close(sp.attention(q[256:], k, v), whole[256:], rtol=0, atol=0)


def error_of(*args, **kwargs):
    with pytest.raises(sp.Error) as e:
        sp.attention(*args, **kwargs)
    return str(e.value)


def test_bad_chunks_are_named(rng):
    q, k, v = random_qkv(rng, 600, 4, 2, 64)
    assert "k has 300 tokens and q 600" in error_of(q, k[:300], v[:300])
    assert "multiple" in error_of(q[100:], k, v)
    assert "600" in error_of(q[128:], k, v, plan=sp.Plan.dense(472, 4))
    qs, ks, vs = _core.synthetic_layer(0, **SYN)
    cmap = _core.synthetic_cluster_map(**SYN)
    plan = sp.Planner(cmap, "shareprefill", min_budget=256).plan_layer(0, qs, ks)
    assert plan.pivot_heads
    assert "still has to publish its pivots" in error_of(qs[1024:], ks, vs, plan=plan)


def test_batch_first_chunk(rng):
    """attention_bhnd with k and v longer than q: each entry's rows of its whole-prompt call."""
    batch, heads, kv_heads, n, dim = 2, 4, 2, 300, 64
    q = rng.uniform(-1, 1, (batch, heads, n, dim)).astype(np.float32)
    k = rng.uniform(-1, 1, (batch, kv_heads, n, dim)).astype(np.float32)
    v = rng.uniform(-1, 1, (batch, kv_heads, n, dim)).astype(np.float32)
    whole = sp.attention_bhnd(q, k, v)
    np.testing.assert_array_equal(sp.attention_bhnd(q[:, :, 128:], k, v), whole[:, :, 128:])


def test_plan_with_deferred_heads_is_refused_for_a_chunk_even_once_published():
    """share_within_layer: the deferred heads' tiles live in a second pass that needs the whole
    prompt, so a chunk is refused before and after the plan published its pivots."""
    syn = dict(SYN, layers=3)
    q, k, v = _core.synthetic_layer(0, **syn)
    plan = sp.Planner(_core.synthetic_cluster_map(**syn), share_within_layer=True).plan_layer(0, q, k)
    assert plan.deferred_heads
    assert "still has to publish its pivots" in error_of(q[1024:], k, v, plan=plan)
    sp.attention(q, k, v, plan=plan)
    assert "has heads deferred to a second pass" in error_of(q[1024:], k, v, plan=plan)
