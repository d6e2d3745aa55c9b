"""shareprefill.merge_attention_states: attention of the same query rows over two disjoint key
ranges, each with its log-sum-exp, combined exactly into the attention over their union
(FlashAttention's split-KV combine, FlashInfer's merge_state), on the CPU or a CUDA device."""
from . import _core
from ._arrays import empty_f32, for_kernel, is_cuda, shape_of


def merge_attention_states(o_a, lse_a, o_b, lse_b):
    """Merges two partial attention results: with m = max(lse_a, lse_b),
    w_a = exp(lse_a - m) and w_b = exp(lse_b - m), returns

        o = (w_a o_a + w_b o_b) / (w_a + w_b),   lse = m + log(w_a + w_b)

    per query row and head, in fp32. o_a, o_b: [N, H, D] float32, float16 or bfloat16 with the
    last dimension contiguous (any token and head strides); lse_a, lse_b: [H, N] float32,
    natural log, as attention(..., return_lse=True) returns them; -inf marks a row that had no
    key in its range (a row with -inf in both gets o = 0, lse = -inf). NaN or +inf in an lse is
    an error. All four on one device.

    On the CPU (NumPy arrays or PyTorch CPU tensors) o is float32. On a CUDA device (PyTorch
    tensors) o has o_a's dtype and the merge runs asynchronously on the current stream
    (through torch.ops.shareprefill.merge_attention_states). Returns (o [N, H, D], lse [H, N]).
    """
    fn = "shareprefill.merge_attention_states"
    n, heads, dim = shape_of(fn, "o_a", o_a, 3)
    shape_of(fn, "lse_a", lse_a, 2)
    shape_of(fn, "o_b", o_b, 3)
    shape_of(fn, "lse_b", lse_b, 2)
    if is_cuda(o_a):
        from . import torch_ops
        return torch_ops.merge_attention_states(o_a, lse_a, o_b, lse_b)
    o = empty_f32(o_a, (n, heads, dim))
    lse = empty_f32(o_a, (heads, n))
    _core.merge_attention_states(o, lse, for_kernel(o_a), for_kernel(lse_a), for_kernel(o_b),
                                 for_kernel(lse_b))
    return o, lse
