"""Hugging Face transformers backend: `attn_implementation="shareprefill"`.

    import shareprefill.hf
    shareprefill.hf.enable(model, cluster_map="data/clusters/smollm2-135m-instruct.json")
    model.generate(**inputs)   # prefill: SharePrefill planner + block-sparse kernel; decode: SDPA

enable() registers an attention function and its mask function under the name "shareprefill"
with transformers' AttentionInterface / AttentionMaskInterface (the mask is SDPA's, so a plain
causal prefill gets no mask at all) and switches the model to it. The attention function
receives query [B, Hq, S, D], the un-repeated key/value [B, Hkv, S_kv, D], attention_mask and
scaling, and returns (out [B, S, Hq, D] contiguous, None).

It runs our path for a prefill: S == S_kv (no cached prefix), S >= prefill_min_tokens, batch 1,
no mask (no padding), no dropout, no sliding window or soft-capping. Each layer is planned by
the model's shareprefill.Planner (state keyed by module.layer_idx; a new prompt starts when a
layer index does not increase, and reset() starts one explicitly) and computed by the
block-sparse kernel: on the CPU for CPU tensors, on the GPU for CUDA tensors. Everything else,
decode steps (S == 1) included, goes to PyTorch SDPA; a batch with padding does so with a
one-time warning (varlen batches are not implemented yet).
"""
import logging
import math

from ._core import ClusterMap, Error, Planner

NAME = "shareprefill"
_log = logging.getLogger(__name__)


class Backend:
    """The per-model state behind attn_implementation="shareprefill": the planner (one prompt at
    a time) and the settings that choose between our prefill and SDPA. enable() creates it and
    stores it as `model.shareprefill`."""

    def __init__(self, planner, prefill_min_tokens):
        self.planner = planner
        self.prefill_min_tokens = prefill_min_tokens
        self.last_layer = None   # layer_idx planned last in this prompt
        self.prompt_tokens = 0
        self.prefill_layers = 0  # layers run through our path (for tests and reports)
        self.fallback_layers = 0
        self.warned = set()
        self.trace = None  # a list to record each planned layer's kinds and density into

    def record(self, layer, plan):
        """Appends layer, head kinds and tile density of `plan` to trace (when it is a list)."""
        if self.trace is not None:
            self.trace.append({"layer": layer, "kinds": plan.kinds, "density": plan.density})

    def reset(self):
        """Starts a new prompt (the planner forgets its pivots and patterns)."""
        self.planner.reset()
        self.last_layer = None
        self.prompt_tokens = 0

    def warn_once(self, key, message):
        if key not in self.warned:
            self.warned.add(key)
            _log.warning("shareprefill: %s", message)

    def begin_layer(self, layer, tokens):
        """Resets the planner when `layer` starts a new prompt (a layer index that does not
        increase, or another length)."""
        if self.last_layer is not None and (layer <= self.last_layer or tokens != self.prompt_tokens):
            self.reset()
        self.last_layer = layer
        self.prompt_tokens = tokens


def _sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _fallback_reason(backend, module, query, key, attention_mask, dropout, kwargs):
    """Why this call goes to SDPA, or None when it is a prefill for our path."""
    batch, _, tokens, _ = query.shape
    if tokens < max(2, backend.prefill_min_tokens):
        return "decode"
    if key.shape[2] != tokens:
        return "cached prefix"
    if batch > 1 or attention_mask is not None:
        backend.warn_once("batch", "batches with padding (or batch > 1) run on SDPA until "
                          "varlen batches are implemented")
        return "batch"
    if dropout:
        return "dropout"
    if kwargs.get("sliding_window") or kwargs.get("softcap") or not getattr(module, "is_causal", True):
        backend.warn_once("variant", "sliding-window, soft-capped or non-causal attention runs "
                          "on SDPA")
        return "variant"
    if getattr(module, "layer_idx", None) is None:
        backend.warn_once("layer_idx", "an attention module without layer_idx runs on SDPA")
        return "layer_idx"
    return None


def _rows(x):
    """[1, H, S, D] -> contiguous [S, H, D] rows (a view when the memory is token-major, as
    transformers' projections leave q, k and v)."""
    return x[0].transpose(0, 1).contiguous()


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      is_causal=None, **kwargs):
    """The function registered as "shareprefill" (contract in the module docstring)."""
    backend = getattr(module, "shareprefill_backend", None)
    if backend is None:
        raise Error("[shareprefill.hf] this attention module was not prepared by "
                    "shareprefill.hf.enable(model, ...)")
    reason = _fallback_reason(backend, module, query, key, attention_mask, dropout, kwargs)
    if reason is not None:
        backend.fallback_layers += 1
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout,
                     scaling=scaling, is_causal=is_causal, **kwargs)
    tokens, dim = query.shape[2], query.shape[3]
    q, k, v = _rows(query), _rows(key), _rows(value)
    if scaling is not None and not math.isclose(scaling, dim ** -0.5, rel_tol=1e-6):
        q = q * (scaling * math.sqrt(dim))  # our kernels scale by 1/sqrt(D)
    layer = module.layer_idx
    backend.begin_layer(layer, tokens)
    if q.is_cuda:
        from . import torch_ops
        out = torch_ops.prefill_layer(backend.planner, layer, q, k, v)
        if backend.trace is not None:  # synchronous copies of the device plan
            backend.record(layer, backend.planner._cuda_prefill.last_plan())
    else:
        from ._attention import attention
        plan = backend.planner.plan_layer(layer, q, k)
        out = attention(q, k, v, plan=plan).to(query.dtype)
        backend.record(layer, plan)
    backend.prefill_layers += 1
    return out.unsqueeze(0), None


_registered = False


def register():
    """Registers "shareprefill" with transformers' AttentionInterface and AttentionMaskInterface
    (idempotent). enable() calls it; call it yourself before
    from_pretrained(..., attn_implementation="shareprefill") and then enable() the model."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


def enable(model, cluster_map=None, mode="shareprefill", prefill_min_tokens=2, **thresholds):
    """Makes `model` prefill with SharePrefill: registers the backend, creates the model's
    Planner(cluster_map, mode, **thresholds) (cluster_map: a ClusterMap, a path, or None for
    the modes dense, vslash and flexprefill) and sets attn_implementation="shareprefill".
    Prefills shorter than prefill_min_tokens go to SDPA. Returns the model's Backend (also
    model.shareprefill); Backend.reset() starts a new prompt explicitly."""
    register()
    if isinstance(cluster_map, str) or hasattr(cluster_map, "__fspath__"):
        import os
        cluster_map = ClusterMap.load(os.fspath(cluster_map))
    config = model.config
    layers = getattr(config, "num_hidden_layers", None)
    planner = Planner(cluster_map, mode, layers=layers, **thresholds)
    return attach(model, Backend(planner, prefill_min_tokens))


def attach(model, backend):
    """Switches `model` to attn_implementation="shareprefill" with an existing Backend (one that
    enable() returned, for this model or another of the same shape), keeping its planner and
    its GPU workspace: switching back and forth with set_attn_implementation("sdpa") then
    costs nothing. Returns the backend."""
    register()
    attention_modules = [m for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)
                         and hasattr(m, "num_key_value_groups")]
    if not attention_modules:
        raise Error("[shareprefill.hf.enable] found no attention modules (modules with layer_idx "
                    "and num_key_value_groups) in the model")
    backend.reset()
    for m in attention_modules:
        m.shareprefill_backend = backend
    model.set_attn_implementation(NAME)
    model.shareprefill = backend
    return backend
