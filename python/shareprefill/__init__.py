"""shareprefill: sparse-pattern-sharing prefill attention (SharePrefill) for long prompts.

The C++ planner and kernels through DLPack arrays, without copies:

    import numpy as np, shareprefill as sp
    q = np.random.rand(4096, 9, 64).astype(np.float32)        # [N, H, D]
    k = v = np.random.rand(4096, 3, 64).astype(np.float32)    # [N, Hkv, D]
    planner = sp.Planner(mode="vslash")                       # or Planner(ClusterMap.load(path))
    plan = planner.plan_layer(0, q, k)
    out = sp.attention(q, k, v, plan=plan)                     # [N, H, D] float32

NumPy arrays and PyTorch CPU tensors run on the CPU kernels; PyTorch CUDA tensors run on the
CUDA kernels (shareprefill.torch_ops, imported on demand). attention_varlen runs a batch of
prompts of different lengths packed along the token axis (cu_seqlens) in one call;
merge_attention_states combines results over disjoint key ranges by their log-sum-exp.
shareprefill.hf plugs the planner and kernels into Hugging Face transformers models. Importing this package needs only NumPy.
"""
from ._core import ClusterMap, Error, Plan, Planner, build_info, version
from ._attention import attention, attention_bhnd, attention_reference
from ._merge import merge_attention_states
from ._varlen import attention_varlen

__version__ = version()

__all__ = [
    "ClusterMap", "Error", "Plan", "Planner", "attention", "attention_bhnd",
    "attention_reference", "attention_varlen", "build_info", "merge_attention_states", "version",
]
