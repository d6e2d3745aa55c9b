"""The torch.library ops on the CPU (needs torch; skipped without it): results against the NumPy
reference, fake tensors, and torch.compile(fullgraph=True) over a module that calls them."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import shareprefill as sp  # noqa: E402
import shareprefill.torch_ops  # noqa: E402,F401  registers torch.ops.shareprefill
from conftest import attention_numpy, random_qkv, tile_token_mask  # noqa: E402

ATOL = 1e-5  # fp32 CPU kernel vs float64 reference (test_attention.py)


def test_ops_match_numpy(rng):
    q, k, v = random_qkv(rng, 300, 4, 2, 64)
    out, lse = torch.ops.shareprefill.attention(*(torch.from_numpy(x) for x in (q, k, v)))
    ref, ref_lse = attention_numpy(q, k, v)
    np.testing.assert_allclose(out.numpy(), ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(lse.numpy(), ref_lse, atol=ATOL, rtol=1e-6)

    plan = sp.Plan.from_tiles(300, [[(0, 0), (1, 1), (2, 0), (2, 2)]] * 4)
    row_ptr, col_idx = (torch.from_numpy(x) for x in plan.csr())
    out, _ = torch.ops.shareprefill.attention_block_sparse(
        *(torch.from_numpy(x) for x in (q, k, v)), row_ptr, col_idx)
    ref, _ = attention_numpy(q, k, v, tile_token_mask(plan.block_mask(), 300))
    np.testing.assert_allclose(out.numpy(), ref, atol=ATOL, rtol=0)


def test_opcheck():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.rand(200, 4, 64, generator=g), torch.rand(200, 2, 64, generator=g), torch.rand(200, 2, 64, generator=g)
    torch.library.opcheck(torch.ops.shareprefill.attention.default, (q, k, v),
                          test_utils=("test_schema", "test_faketensor"))


class TwoLayers(torch.nn.Module):
    """Attention, a projection, block-sparse attention: one graph when compiled."""

    def __init__(self, heads, dim):
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, q, k, v, row_ptr, col_idx):
        out, _ = torch.ops.shareprefill.attention(q, k, v)
        out = self.proj(out)
        out, lse = torch.ops.shareprefill.attention_block_sparse(out, k, v, row_ptr, col_idx)
        return out * 2, lse


def test_torch_compile_fullgraph(rng):
    q, k, v = (torch.from_numpy(x) for x in random_qkv(rng, 260, 4, 2, 64))
    plan = sp.Plan.dense(260, 4)
    row_ptr, col_idx = (torch.from_numpy(x) for x in plan.csr())
    module = TwoLayers(4, 64).eval()
    with torch.no_grad():
        eager = module(q, k, v, row_ptr, col_idx)
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")(q, k, v, row_ptr, col_idx)
    torch.testing.assert_close(compiled[0], eager[0])
    torch.testing.assert_close(compiled[1], eager[1])
