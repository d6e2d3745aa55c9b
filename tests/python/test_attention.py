"""shareprefill.attention on the CPU against a NumPy float64 reference and the C++ oracle, at
ragged lengths and GQA ratios; dense and block-sparse; the batch-first wrapper."""
import numpy as np
import pytest

import shareprefill as sp
from conftest import attention_numpy, random_qkv, tile_token_mask

# Tolerance: the kernel accumulates in fp32 over at most N=1000 keys of magnitude <= 1; the
# float64 reference's own error is negligible, so 1e-5 absolute bounds fp32 rounding of
# sums of ~1000 terms with margin (measured: out 1.5e-7, lse 7.5e-7 at N=1000).
ATOL = 1e-5

SHAPES = [  # (N, H, Hkv, D): ragged lengths and GQA ratios 1, 3, 4, 8
    (1, 4, 4, 64),
    (127, 3, 1, 64),
    (129, 8, 2, 64),
    (1000, 8, 1, 128),
]


@pytest.mark.parametrize("n,heads,kv_heads,dim", SHAPES)
def test_dense_matches_numpy_reference(rng, n, heads, kv_heads, dim):
    q, k, v = random_qkv(rng, n, heads, kv_heads, dim)
    out, lse = sp.attention(q, k, v, return_lse=True)
    ref, ref_lse = attention_numpy(q, k, v)
    assert out.dtype == np.float32 and out.shape == (n, heads, dim)
    assert lse.shape == (heads, n)
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=ATOL, rtol=1e-6)


@pytest.mark.parametrize("n,heads,kv_heads,dim", SHAPES[:3])
def test_dense_matches_cpp_oracle(rng, n, heads, kv_heads, dim):
    q, k, v = random_qkv(rng, n, heads, kv_heads, dim)
    out, lse = sp.attention(q, k, v, return_lse=True)
    ref, ref_lse = sp.attention_reference(q, k, v, return_lse=True)
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(lse, ref_lse, atol=ATOL, rtol=1e-6)


def test_float16_inputs(rng):
    q, k, v = random_qkv(rng, 300, 4, 2, 64, np.float16)
    ref, _ = attention_numpy(q, k, v)  # from the same fp16 values, in float64
    np.testing.assert_allclose(sp.attention(q, k, v), ref, atol=ATOL, rtol=0)


def block_sparse_tiles(n_blocks, heads, rng):
    """Per head: the diagonal, key block 0 and a random half of the other causal tiles; head 1
    keeps only the diagonal and head 2 leaves query block 1 with no tile at all."""
    tiles = []
    for h in range(heads):
        t = {(r, r) for r in range(n_blocks)} | {(r, 0) for r in range(n_blocks)}
        if h != 1:
            t |= {(r, c) for r in range(n_blocks) for c in range(r) if rng.random() < 0.5}
        if h == 2:
            t = {(r, c) for r, c in t if r != 1}
        if h == 1:
            t = {(r, r) for r in range(n_blocks)}
        tiles.append(sorted(t))
    return tiles


@pytest.mark.parametrize("n", [129, 700])
def test_block_sparse_matches_numpy_with_expanded_mask(rng, n):
    heads, kv_heads, dim = 4, 2, 64
    q, k, v = random_qkv(rng, n, heads, kv_heads, dim)
    n_blocks = (n + 127) // 128
    plan = sp.Plan.from_tiles(n, block_sparse_tiles(n_blocks, heads, rng))
    assert plan.n_blocks == n_blocks and plan.heads == heads
    out, lse = sp.attention(q, k, v, plan=plan, return_lse=True)
    mask = tile_token_mask(plan.block_mask(), n)
    ref, ref_lse = attention_numpy(q, k, v, mask)
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    finite = np.isfinite(ref_lse)
    assert np.array_equal(np.isfinite(lse), finite)  # empty rows: lse = -inf, out = 0
    np.testing.assert_allclose(lse[finite], ref_lse[finite], atol=ATOL, rtol=1e-6)
    oracle = sp.attention_reference(q, k, v, plan=plan)
    np.testing.assert_allclose(out, oracle, atol=ATOL, rtol=0)


def test_dense_plan_equals_no_plan(rng):
    q, k, v = random_qkv(rng, 257, 4, 4, 64)
    plan = sp.Plan.dense(257, 4)
    assert plan.density == 1.0 and plan.tiles == 4 * 3 * 4 // 2
    np.testing.assert_array_equal(sp.attention(q, k, v, plan=plan), sp.attention(q, k, v))


def test_batch_first_wrapper(rng):
    batch, heads, kv_heads, n, dim = 2, 6, 2, 150, 64
    q = rng.uniform(-1, 1, (batch, heads, n, dim)).astype(np.float32)
    k = rng.uniform(-1, 1, (batch, kv_heads, n, dim)).astype(np.float32)
    v = rng.uniform(-1, 1, (batch, kv_heads, n, dim)).astype(np.float32)
    out, lse = sp.attention_bhnd(q, k, v, return_lse=True)
    assert out.shape == (batch, heads, n, dim) and lse.shape == (batch, heads, n)
    for b in range(batch):
        ref, ref_lse = attention_numpy(*(x[b].transpose(1, 0, 2) for x in (q, k, v)))
        np.testing.assert_allclose(out[b], ref.transpose(1, 0, 2), atol=ATOL, rtol=0)
        np.testing.assert_allclose(lse[b], ref_lse, atol=ATOL, rtol=1e-6)


def test_outputs_are_written_in_place_without_copies(rng):
    """The extension writes into the array it is given: a view into a larger buffer works and
    nothing around it changes."""
    q, k, v = random_qkv(rng, 130, 2, 1, 64)
    buffer = np.full((3, 130, 2, 64), 7.0, dtype=np.float32)
    sp._core.attention_cpu(buffer[1], None, q, k, v, None)
    np.testing.assert_allclose(buffer[1], attention_numpy(q, k, v)[0], atol=ATOL, rtol=0)
    assert (buffer[0] == 7.0).all() and (buffer[2] == 7.0).all()


def test_read_only_inputs_are_accepted(rng):
    q, k, v = random_qkv(rng, 64, 2, 2, 64)
    for x in (q, k, v):
        x.flags.writeable = False
    np.testing.assert_allclose(sp.attention(q, k, v), attention_numpy(q, k, v)[0], atol=ATOL)


def test_torch_cpu_tensors(rng):
    torch = pytest.importorskip("torch")
    q, k, v = random_qkv(rng, 200, 4, 2, 64)
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    tq.requires_grad_(True)
    out = sp.attention(tq, tk, tv)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), attention_numpy(q, k, v)[0], atol=ATOL)
    bq, bk, bv = (x.to(torch.bfloat16) for x in (tq.detach(), tk, tv))
    ref, _ = attention_numpy(*(x.float().numpy() for x in (bq, bk, bv)))
    np.testing.assert_allclose(sp.attention(bq, bk, bv).numpy(), ref, atol=ATOL)


def test_build_info():
    info = sp.build_info()
    assert info["version"] == sp.version() == sp.__version__
    # A CUDA build names the architectures its kernels were compiled for (e.g. "90a").
    assert bool(info["cuda_architectures"]) == info["cuda"]
