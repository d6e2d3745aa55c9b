"""shareprefill.merge_attention_states on the CPU: the formula against a float64 NumPy merge
(rows without keys included), attention split by key blocks and merged against one call, the
torch op and strided inputs, and bad inputs named in the error."""
import numpy as np
import pytest

import shareprefill as sp
from conftest import ForeignDeviceArray, random_qkv

# fp32 math on values of magnitude <= ~10: 1e-6 absolute covers the exp/log rounding of one row.
ATOL = 1e-6


def merge_numpy(o_a, lse_a, o_b, lse_b):
    """The merge in float64: o [N, H, D], lse [H, N]; both lse -inf -> 0 and -inf."""
    la, lb = lse_a.astype(np.float64).T, lse_b.astype(np.float64).T  # [N, H]
    m = np.maximum(la, lb)
    empty = np.isneginf(m)
    m_safe = np.where(empty, 0.0, m)
    wa, wb = np.exp(la - m_safe), np.exp(lb - m_safe)
    total = wa + wb
    with np.errstate(invalid="ignore", divide="ignore"):
        o = (wa[..., None] * o_a + wb[..., None] * o_b) / total[..., None]
        lse = m + np.log(total)
    o[empty] = 0.0
    lse[empty] = -np.inf
    return o, lse.T


def random_states(rng, n, heads, dim):
    o_a = rng.uniform(-2, 2, (n, heads, dim)).astype(np.float32)
    o_b = rng.uniform(-2, 2, (n, heads, dim)).astype(np.float32)
    lse_a = rng.uniform(-5, 5, (heads, n)).astype(np.float32)
    lse_b = rng.uniform(-5, 5, (heads, n)).astype(np.float32)
    return o_a, lse_a, o_b, lse_b


@pytest.mark.parametrize("n,heads,dim", [(1, 1, 64), (77, 3, 64), (300, 8, 128)])
def test_formula_matches_float64(rng, n, heads, dim):
    o_a, lse_a, o_b, lse_b = random_states(rng, n, heads, dim)
    lse_a[0, 0] = -np.inf                   # one side without keys
    lse_b[-1, -1] = -np.inf
    if n > 1:
        lse_a[0, 1] = lse_b[0, 1] = -np.inf  # neither side has keys
    o, lse = sp.merge_attention_states(o_a, lse_a, o_b, lse_b)
    ref_o, ref_lse = merge_numpy(o_a, lse_a, o_b, lse_b)
    assert o.dtype == np.float32 and o.shape == (n, heads, dim)
    assert lse.dtype == np.float32 and lse.shape == (heads, n)
    np.testing.assert_allclose(o, ref_o, atol=ATOL, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=ATOL, rtol=1e-6)
    if n > 1:
        assert np.isneginf(lse[0, 1]) and not o[1, 0].any()
        np.testing.assert_array_equal(o[0, 0], o_b[0, 0])  # w_a = 0: exactly the other side


@pytest.mark.parametrize("n,heads,kv_heads,dim,split", [(300, 4, 2, 64, 1), (1000, 6, 2, 128, 3)])
def test_attention_split_by_key_blocks_merges_to_one_call(rng, n, heads, kv_heads, dim, split):
    """Keys of blocks < split in one call, the rest in another (rows before the split have no
    key in the second: lse -inf), merged: equal to attention over all keys."""
    q, k, v = random_qkv(rng, n, heads, kv_heads, dim)
    nb = (n + 127) // 128
    low = [[(r, c) for r in range(nb) for c in range(min(r + 1, split))]] * heads
    high = [[(r, c) for r in range(nb) for c in range(split, r + 1)]] * heads
    o_a, lse_a = sp.attention(q, k, v, plan=sp.Plan.from_tiles(n, low), return_lse=True)
    o_b, lse_b = sp.attention(q, k, v, plan=sp.Plan.from_tiles(n, high), return_lse=True)
    assert np.isneginf(lse_b[:, 0]).all() and np.isfinite(lse_a).all()
    o, lse = sp.merge_attention_states(o_a, lse_a, o_b, lse_b)
    ref, ref_lse = sp.attention(q, k, v, return_lse=True)
    np.testing.assert_allclose(o, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=1e-5, rtol=1e-6)


def test_strided_and_half_precision_inputs(rng):
    """o halves read through their strides (a head slice of a wider array) and as float16."""
    o_a, lse_a, o_b, lse_b = random_states(rng, 50, 6, 64)
    wide = np.concatenate([o_a, o_a], axis=1)[:, ::2]  # [50, 6, 64], head stride 2 * 64
    assert not wide.flags.c_contiguous
    o, _ = sp.merge_attention_states(wide, lse_a, o_b.astype(np.float16), lse_b)
    ref, _ = merge_numpy(wide, lse_a, o_b.astype(np.float16).astype(np.float32), lse_b)
    np.testing.assert_allclose(o, ref, atol=ATOL, rtol=0)


def test_torch_op_on_the_cpu(rng):
    torch = pytest.importorskip("torch")
    import shareprefill.torch_ops  # noqa: F401  registers torch.ops.shareprefill
    o_a, lse_a, o_b, lse_b = random_states(rng, 40, 3, 64)
    ta, tb = torch.from_numpy(o_a).to(torch.bfloat16), torch.from_numpy(o_b).to(torch.bfloat16)
    o, lse = torch.ops.shareprefill.merge_attention_states(ta, torch.from_numpy(lse_a), tb,
                                                           torch.from_numpy(lse_b))
    assert o.dtype == torch.bfloat16 and lse.dtype == torch.float32
    ref, ref_lse = merge_numpy(ta.float().numpy(), lse_a, tb.float().numpy(), lse_b)
    np.testing.assert_allclose(o.float().numpy(), ref, atol=2e-2, rtol=0)  # bf16 output
    np.testing.assert_allclose(lse.numpy(), ref_lse, atol=ATOL, rtol=1e-6)
    o2, _ = sp.merge_attention_states(ta, torch.from_numpy(lse_a), tb, torch.from_numpy(lse_b))
    assert o2.dtype == torch.float32  # the package function on the CPU: float32


def error_of(*args):
    with pytest.raises(sp.Error) as e:
        sp.merge_attention_states(*args)
    return str(e.value)


def test_bad_inputs_are_named(rng):
    o_a, lse_a, o_b, lse_b = random_states(rng, 20, 2, 64)
    assert "o_a must have 3 dimensions" in error_of(o_a[0], lse_a, o_b, lse_b)
    assert "lse_b must have 2 dimensions" in error_of(o_a, lse_a, o_b, lse_b[0])
    assert "o_b has shape [20, 2, 32], expected [20, 2, 64]" in error_of(o_a, lse_a,
                                                                        o_b[..., :32], lse_b)
    assert "lse_a must be f32" in error_of(o_a, lse_a.astype(np.float16), o_b, lse_b)
    assert "lse_b must be [heads, N] = [2, 20]" in error_of(o_a, lse_a, o_b, lse_b.T.copy())
    assert "unit stride in its last dimension" in error_of(o_a[..., ::-1], lse_a, o_b, lse_b)
    assert "has dtype int32" in error_of(o_a.astype(np.int32), lse_a, o_b, lse_b)
    bad = lse_a.copy()
    bad[1, 7] = np.nan
    assert "lse of head 1 row 7 is nan" in error_of(o_a, bad, o_b, lse_b)
    assert "must be a NumPy array or a PyTorch tensor" in error_of(o_a, lse_a, list(o_b), lse_b)


def test_arrays_on_different_devices_are_refused(rng):
    o_a, lse_a, o_b, lse_b = random_states(rng, 20, 2, 64)
    foreign = ForeignDeviceArray(o_b, 2)
    with pytest.raises(sp.Error, match="o_a is on cpu but o_b is on cuda:0"):
        sp._core.merge_attention_states(np.empty_like(o_a), np.empty_like(lse_a), o_a, lse_a,
                                        foreign.capsule, lse_b)
