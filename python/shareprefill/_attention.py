"""shareprefill.attention and its batch-first wrapper: causal attention over [N, H, D] rows,
dense (every causal tile) or block-sparse under a Plan, on the CPU (NumPy or PyTorch CPU) or on
a CUDA device (PyTorch CUDA tensors, through shareprefill.torch_ops)."""
from . import _core
from ._arrays import empty_f32, for_kernel, is_cuda, is_torch, shape_of
from ._core import Error


def _check_causal(fn, causal):
    if not causal:
        raise Error(f"[{fn}] only causal attention is implemented (causal=False was given)")


def attention(q, k, v, plan=None, causal=True, return_lse=False):
    """Causal attention softmax(q k^T / sqrt(D)) v with grouped-query heads.

    q: [N, H, D]; k, v: [N, Hkv, D] with H a multiple of Hkv (query head h reads KV head
    h // (H // Hkv)). float32, float16 or bfloat16. plan: a shareprefill.Plan (from
    Planner.plan_layer, Plan.from_tiles or Plan.dense) or None for every causal tile.

    A chunk of a prompt: k and v may hold more tokens (Nk) than q (Nq); q is then the last Nq
    of them (queries at positions Nk - Nq .. Nk - 1, the causal rule on absolute positions, as
    FlashAttention aligns seqlen_q < seqlen_k), Nk - Nq a multiple of 128, and a plan covers
    all Nk tokens; each row equals the same row of the call over the whole prompt. A plan that
    still has to publish pivots into its Planner needs the whole prompt (Planner.prefill_layer
    plans and runs chunks).

    On the CPU the inputs must be C-contiguous and the result is float32 [N, H, D] (plus the
    natural-log log-sum-exp [H, N] float32 with return_lse=True). On a CUDA device (PyTorch
    tensors, bfloat16 or float16, D 64 or 128) the result has q's dtype and the call is
    asynchronous on the current stream. Errors raise shareprefill.Error with the C++ message.
    """
    fn = "shareprefill.attention"
    _check_causal(fn, causal)
    n, heads, dim = shape_of(fn, "q", q, 3)
    if is_cuda(q):
        from . import torch_ops
        return torch_ops.attention_planned(q, k, v, plan, return_lse)
    out = empty_f32(q, (n, heads, dim))
    lse = empty_f32(q, (heads, n)) if return_lse else None
    _core.attention_cpu(out, lse, for_kernel(q), for_kernel(k), for_kernel(v), plan)
    return (out, lse) if return_lse else out


def attention_reference(q, k, v, plan=None, return_lse=False):
    """The C++ oracle (plain loops, fp64 accumulation) on the CPU: same arguments and result as
    attention() on the CPU. O(N^2 H) memory with a plan; for tests and small problems."""
    fn = "shareprefill.attention_reference"
    n, heads, dim = shape_of(fn, "q", q, 3)
    out = empty_f32(q, (n, heads, dim))
    lse = empty_f32(q, (heads, n)) if return_lse else None
    _core.attention_reference(out, lse, for_kernel(q), for_kernel(k), for_kernel(v), plan)
    return (out, lse) if return_lse else out


def _rows(x):
    """[H, N, D] (one batch entry of [B, H, N, D]) as C-contiguous [N, H, D] rows: a view when
    the memory already is token-major (as transformers' projections make it), else a copy."""
    if is_torch(x):
        return x.transpose(0, 1).contiguous()
    import numpy
    return numpy.ascontiguousarray(x.transpose(1, 0, 2))


def attention_bhnd(q, k, v, plans=None, causal=True, return_lse=False):
    """Batch-first attention(): q [B, H, N, D], k and v [B, Hkv, N, D] (the layout of
    torch.nn.functional.scaled_dot_product_attention; k and v may hold more tokens than q, a
    chunk as in attention()); returns [B, H, N, D] (and lse [B, H, N]). plans: None (dense)
    or one Plan per batch entry. Each entry is transposed to [N, H, D] rows first (no copy when
    its memory already is token-major)."""
    fn = "shareprefill.attention_bhnd"
    _check_causal(fn, causal)
    batch, heads, n, dim = shape_of(fn, "q", q, 4)
    shape_of(fn, "k", k, 4)
    shape_of(fn, "v", v, 4)
    if plans is not None and len(plans) != batch:
        raise Error(f"[{fn}] {len(plans)} plans for a batch of {batch}")
    if is_cuda(q):
        from . import torch_ops
        return torch_ops.attention_bhnd(q, k, v, plans, return_lse)
    outs, lses = [], []
    for b in range(batch):
        r = attention(_rows(q[b]), _rows(k[b]), _rows(v[b]),
                      plan=None if plans is None else plans[b], return_lse=True)
        outs.append(r[0].transpose(1, 0, 2) if not is_torch(q) else r[0].transpose(0, 1))
        lses.append(r[1])
    if is_torch(q):
        import torch
        out, lse = torch.stack(outs), torch.stack(lses)
    else:
        import numpy
        out, lse = numpy.stack(outs), numpy.stack(lses)
    return (out, lse) if return_lse else out
