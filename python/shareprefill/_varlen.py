"""shareprefill.attention_varlen: a batch of prompts of different lengths packed along the token
axis (FlashAttention's varlen layout), dense or with one Plan per prompt, in one CPU pass or one
CUDA launch."""
import numpy

from . import _core
from ._arrays import empty_f32, for_kernel, is_cuda, is_torch, shape_of
from ._core import Error, Plan

FN = "shareprefill.attention_varlen"


def cu_seqlens_list(fn, cu_seqlens):
    """cu_seqlens (a 1-D int32/int64 NumPy array or CPU tensor, or a list of ints) as a list of
    Python ints; shareprefill.Error for another dtype, rank or device."""
    if is_torch(cu_seqlens):
        if cu_seqlens.device.type != "cpu":
            raise Error(f"[{fn}] cu_seqlens is on {cu_seqlens.device}; it must be a CPU tensor "
                        "(the batch plan is built on the host)")
        cu_seqlens = cu_seqlens.detach().numpy()
    array = numpy.asarray(cu_seqlens)
    if array.dtype not in (numpy.int32, numpy.int64):
        raise Error(f"[{fn}] cu_seqlens has dtype {array.dtype}; expected int32 or int64")
    if array.ndim != 1:
        raise Error(f"[{fn}] cu_seqlens must be 1-D [B + 1], got shape {array.shape}")
    if array.size and (array.min() < numpy.iinfo(numpy.int32).min
                       or array.max() > numpy.iinfo(numpy.int32).max):
        raise Error(f"[{fn}] cu_seqlens has entries outside int32 (the kernels index with int32)")
    return [int(x) for x in array]


def runs_apart(plan):
    """True for a plan the varlen call cannot run: it still has to publish its pivots' block
    attention into its Planner, or it has deferred heads (share_within_layer's second pass)."""
    return bool(plan.deferred_heads) or (bool(plan.pivot_heads) and not plan.published)


def _empty_plan(n, heads):
    """A plan that visits no tile (rows come out 0): the varlen call's stand-in for a sequence
    that runs apart."""
    nb = (n + 127) // 128
    return Plan.from_csr(n, heads, numpy.zeros(heads * (nb + 1), dtype=numpy.int64),
                         numpy.zeros(0, dtype=numpy.int32))


def _kernel_plan(plan, n, heads, apart):
    """What the varlen kernel runs for one sequence: every causal tile for None, no tile for a
    sequence that runs apart, else the plan."""
    if plan is None:
        return Plan.dense(n, heads)
    return _empty_plan(n, heads) if apart else plan


def attention_varlen(q, k, v, cu_seqlens, plans=None, return_lse=False):
    """Causal attention over a packed batch: sequence b is rows cu_seqlens[b]:cu_seqlens[b + 1]
    of q [total, H, D] and k, v [total, Hkv, D], attending to itself only (its block grid starts
    at its own first token). cu_seqlens: [B + 1] int32 or int64 on the CPU (NumPy, a CPU tensor
    or a list), 0 first, strictly ascending (no empty sequence), total last. plans: None (dense)
    or a list of B entries, each a shareprefill.Plan for that sequence's n_b tokens or None
    (dense).

    Returns out [total, H, D] (and lse [H, total] float32 with return_lse=True) as attention()
    would for each sequence alone: float32 on the CPU, q's dtype on CUDA (PyTorch tensors,
    bfloat16/float16, asynchronous on the current stream). Row for row equal to attention() on
    that sequence's rows with its plan (the same per-tile code and order).

    One thread-pool pass (CPU) or kernel launch (CUDA) covers every sequence, except plans that
    still have to publish pivot heads into their Planner or that have deferred heads: those
    sequences run apart, one attention() call each, after the batch.
    """
    total, heads, dim = shape_of(FN, "q", q, 3)
    shape_of(FN, "k", k, 3)
    shape_of(FN, "v", v, 3)
    cu = cu_seqlens_list(FN, cu_seqlens)
    _core.check_cu_seqlens(cu, total)
    batch = len(cu) - 1
    given = None if plans is None else list(plans)
    apart = []
    if given is not None:
        if len(given) != batch:
            raise Error(f"[{FN}] {len(given)} plans for {batch} sequences")
        for b, plan in enumerate(given):
            if plan is not None and not isinstance(plan, Plan):
                raise Error(f"[{FN}] plans[{b}] is a {type(plan).__name__}, not a "
                            "shareprefill.Plan or None")
        apart = [b for b, plan in enumerate(given) if plan is not None and runs_apart(plan)]
        plans = [_kernel_plan(plan, cu[b + 1] - cu[b], heads, b in apart)
                 for b, plan in enumerate(given)]
    if is_cuda(q):
        from . import torch_ops
        out, lse = torch_ops.attention_varlen_planned(q, k, v, cu, plans)
    else:
        out = empty_f32(q, (total, heads, dim))
        lse = empty_f32(q, (heads, total))
        _core.attention_varlen_cpu(out, lse, for_kernel(q), for_kernel(k), for_kernel(v), cu,
                                   plans)
    from ._attention import attention
    for b in apart:
        s, e = cu[b], cu[b + 1]
        out_b, lse_b = attention(q[s:e], k[s:e], v[s:e], plan=given[b], return_lse=True)
        out[s:e] = out_b
        lse[:, s:e] = lse_b
    return (out, lse) if return_lse else out
