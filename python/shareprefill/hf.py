"""Hugging Face transformers backend: `attn_implementation="shareprefill"`.

    import shareprefill.hf
    shareprefill.hf.enable(model,
                           cluster_map="data/clusters/smollm2-135m-instruct-dense-gain.json")
    model.generate(**inputs)   # prefill: SharePrefill planner + block-sparse kernel; decode: SDPA

enable() registers an attention function and its mask function under the name "shareprefill"
with transformers' AttentionInterface / AttentionMaskInterface (the mask is SDPA's, so a plain
causal prefill gets no mask at all) and switches the model to it. The attention function
receives query [B, Hq, S, D], the un-repeated key/value [B, Hkv, S_kv, D], attention_mask and
scaling, and returns (out [B, S, Hq, D] contiguous, None).

It runs our path for a prefill: S == S_kv (no cached prefix; chunks below), S >=
prefill_min_tokens, no dropout, no sliding window or soft-capping, and a mask that is at most
key padding on causal attention (none, the 2D padding mask, or the 4D one sdpa_mask builds from
it; left, right or any padding). A batch is unpadded into a varlen batch (the real tokens of
each row packed, shareprefill.attention_varlen) and each row is planned by its own
shareprefill.Planner (the planner state is per prompt; row 0 uses the model's planner, the
others are made alike), keyed by module.layer_idx: a new prompt starts when a layer index does
not increase or the row lengths change, and reset() starts one explicitly. The output has zeros
at padded tokens. A cluster map with planner settings per prompt length (formats 4-6,
ClusterMap.thresholds; format 6 entries add dense heads) gives each row's planner the entry for
that row's length, as the CLI does
(a row whose entry changes gets a new Planner at the start of a prompt), unless enable() is
given tau_sim, tau_qa, min_budget or pivot_is_medoid: then those apply to every length. An
exact_last_row or last_row_gamma given to enable() wins over the entry's (format 7) alone.

On the CPU the rows' plans go through one varlen call (rows whose plan still has to publish
pivots, shareprefill mode's pivot layers, run one call each). On the GPU each row runs the
device planner on its own rows (planning, attention and publishing are one fused step per
prompt), except in dense mode, where a batch of several rows is one varlen launch.

Chunked prefill (a prefill after a cached prefix: `model(ids[:, s:e], past_key_values=cache)`
chunk after chunk, or generate(..., prefill_chunk_size=C)) runs on our path too: the chunk's
queries [s, e) over the keys [0, e), planned as docs/PLANNER.md "Chunked prefill" says, when
the cache holds a multiple of 128 tokens (s % 128 == 0: the block grid is absolute) and the mask
is exactly causal attention over the cache and the chunk, which is what transformers' sdpa_mask
gives without padding (a 4D mask [B, 1, S, S_kv]; a StaticCache's empty slots after e are cut
off; its first prefill, mask None with S_kv > S, is a plain prefill of the keys [0, S)). Each
batch row runs on its own planner, on the CPU through Planner.prefill_layer, on the GPU through
CudaPrefill. A chunk continues its prompt: the planners are not reset (a new prompt is layer 0
without a cached prefix). enable(..., chunk_state=) chooses the sharing state: "fresh" (the
default) plans each chunk with a new state; "carried" moves the state on from the previous chunk
(pivots kept, their patterns extended; not in dense mode, which shares nothing), provided that
chunk ended where this one starts, ran every layer on our path and its chain began at token 0
(else the chunk starts a fresh state).
The planner's per-length thresholds stay those of the prompt's first chunk.

Everything else goes to PyTorch SDPA: decode steps (S < max(2, prefill_min_tokens)) silently;
masks that are more than key padding (packed sequences, custom 4D masks), a cached prefix with
padding or of a length that is not a multiple of 128, sliding-window, soft-capped or
non-causal attention and modules without layer_idx with a one-time warning each.
"""
import logging
import math
import warnings
import weakref

from ._core import ClusterMap, Error, Planner

NAME = "shareprefill"
BLOCK_SIZE = 128  # a chunk's cached prefix must be a multiple (the block grid is absolute)
CHUNK_STATES = ("fresh", "carried")
_log = logging.getLogger(__name__)


class Backend:
    """The per-model state behind attn_implementation="shareprefill": the planner (one prompt at
    a time) and the settings that choose between our prefill and SDPA. enable() creates it and
    stores it as `model.shareprefill`."""

    def __init__(self, planner, prefill_min_tokens, new_planner=None, entry_for=None,
                 chunk_state="fresh"):
        if chunk_state not in CHUNK_STATES:
            raise Error(f"[shareprefill.hf] chunk_state must be one of {', '.join(CHUNK_STATES)}, "
                        f"got {chunk_state!r}")
        self.planners = [planner]      # one per batch row
        self.new_planner = new_planner  # new_planner(tokens): a planner for a row of that length
        # entry_for(tokens): the map's thresholds for that length (None: no per-length entries);
        # a planner new_planner made carries its entry as `thresholds_entry`
        self.entry_for = entry_for
        self.prefill_min_tokens = prefill_min_tokens
        self.last_layer = None   # layer_idx planned last in this prompt
        self.prompt_tokens = ()  # the rows' lengths of this prompt
        self.packing = None      # (weak reference to the mask or None, (B, S), device, Packing)
        self.carried = chunk_state == "carried"  # chunks carry the sharing state on
        self.offset = None       # (weak reference to the mask, (B, S, S_kv), device, offset)
        self.prefill_layers = 0  # layers run through our path (for tests and reports)
        self.fallback_layers = 0
        self.warned = set()
        self.trace = None  # a list to record each planned layer's kinds and density into

    @property
    def planner(self):
        """The planner of batch row 0 (the only one for batch 1)."""
        return self.planners[0]

    def record(self, layer, plan, row=0):
        """Appends layer, batch row, head kinds and tile density of `plan` to trace (when it is
        a list)."""
        if self.trace is not None:
            self.trace.append({"layer": layer, "row": row, "kinds": plan.kinds,
                               "density": plan.density})

    def reset(self):
        """Starts a new prompt (the planners forget their pivots and patterns)."""
        for planner in self.planners:
            planner.reset()
        self.last_layer = None
        self.prompt_tokens = ()

    def planners_for(self, rows):
        """The planners of the first `rows` batch rows (made on first use, for the rows' lengths
        of this prompt)."""
        while len(self.planners) < rows:
            if self.new_planner is None:
                raise Error("[shareprefill.hf] a batch of several prompts needs one planner per "
                            "row: create the Backend with new_planner (enable() does)")
            row = len(self.planners)
            tokens = self.prompt_tokens[row] if row < len(self.prompt_tokens) else 0
            self.planners.append(self.new_planner(tokens))
        return self.planners[:rows]

    def fit_to_lengths(self, lengths):
        """At the start of a prompt: a new planner for each existing row whose length takes
        other thresholds from the map than its planner has."""
        if self.entry_for is None:
            return
        for row, tokens in enumerate(lengths[:len(self.planners)]):
            if self.entry_for(tokens) != getattr(self.planners[row], "thresholds_entry", None):
                self.planners[row] = self.new_planner(tokens)

    def packing_for(self, attention_mask, query):
        """The Packing of this forward's batch (computed at its first layer, when the mask is
        also checked), or None when the mask is more than key padding."""
        from ._unpad import Packing, real_tokens
        batch, _, tokens, _ = query.shape
        key = (batch, tokens)
        if self.packing is not None:
            ref, shape, device, packing = self.packing
            same_mask = ref() is attention_mask if ref is not None else attention_mask is None
            if same_mask and shape == key and device == query.device:
                return packing
        real = real_tokens(attention_mask, batch, tokens, query.device)
        packing = None if real is None else Packing(real)
        ref = None if attention_mask is None else weakref.ref(attention_mask)
        self.packing = (ref, key, query.device, packing)
        return packing

    def offset_for(self, attention_mask, query, key):
        """The cached tokens before this forward's queries (_unpad.causal_offset, checked at
        its first layer), or None when the mask is not causal attention over the cache."""
        from ._unpad import causal_offset
        batch, _, tokens, _ = query.shape
        shape = (batch, tokens, key.shape[2])
        if attention_mask is None:
            return causal_offset(None, *shape)
        if self.offset is not None:
            ref, memo_shape, device, offset = self.offset
            if ref() is attention_mask and memo_shape == shape and device == query.device:
                return offset
        offset = causal_offset(attention_mask, *shape)
        self.offset = (weakref.ref(attention_mask), shape, query.device, offset)
        return offset

    def warn_once(self, key, message):
        if key not in self.warned:
            self.warned.add(key)
            _log.warning("shareprefill: %s", message)

    def begin_layer(self, layer, lengths):
        """Resets the planners when `layer` starts a new prompt (a layer index that does not
        increase, or other row lengths) and fits them to the rows' lengths."""
        new_prompt = (self.last_layer is None or layer <= self.last_layer
                      or lengths != self.prompt_tokens)
        if new_prompt and self.last_layer is not None:
            self.reset()
        if new_prompt:
            self.fit_to_lengths(lengths)
        self.last_layer = layer
        self.prompt_tokens = lengths

    def begin_chunk_layer(self, layer, end, rows):
        """A layer of a chunk (queries after a cached prefix, keys [0, end)): the prompt goes
        on with its planners (no reset); each planner's cursor decides fresh or carried."""
        self.last_layer = layer
        self.prompt_tokens = (end,) * rows


def _sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _fallback_reason(backend, module, query, dropout, kwargs):
    """Why this call goes to SDPA, or None when it is a prefill for our path (with or without
    a cached prefix: attention_forward checks the mask)."""
    tokens = query.shape[2]
    if tokens < max(2, backend.prefill_min_tokens):
        return "decode"
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


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      is_causal=None, **kwargs):
    """The function registered as "shareprefill" (contract in the module docstring)."""
    backend = getattr(module, "shareprefill_backend", None)
    if backend is None:
        raise Error("[shareprefill.hf] this attention module was not prepared by "
                    "shareprefill.hf.enable(model, ...)")
    reason = _fallback_reason(backend, module, query, dropout, kwargs)
    tokens, start = query.shape[2], 0
    if reason is None and key.shape[2] != tokens:  # a cached prefix (or a static cache)
        start = backend.offset_for(attention_mask, query, key)
        if start is None:
            backend.warn_once("chunk mask", "a prefill after a cached prefix runs on SDPA unless "
                              "its mask is exactly causal attention over the cache (no padding)")
            reason = "chunk mask"
        elif start % BLOCK_SIZE:
            backend.warn_once("chunk start", f"a prefill after a cached prefix of {start} tokens "
                              f"runs on SDPA: the cache must hold a multiple of {BLOCK_SIZE}")
            reason = "chunk start"
        else:  # checked: causal attention over the keys [0, start + tokens)
            key, value = key[:, :, :start + tokens], value[:, :, :start + tokens]
            attention_mask = None
    if reason is None and start > 0:
        out = _chunk(backend, module.layer_idx, query, key, value, scaling)
        backend.prefill_layers += 1
        return out, None
    packing = None if reason is not None else backend.packing_for(attention_mask, query)
    if reason is None and packing is None:
        backend.warn_once("mask", "attention masks other than key padding on causal attention "
                          "(packed sequences, custom 4D masks) run on SDPA")
        reason = "mask"
    if reason is not None:
        backend.fallback_layers += 1
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout,
                     scaling=scaling, is_causal=is_causal, **kwargs)
    q, k, v = packing.pack(query), packing.pack(key), packing.pack(value)
    q = _scaled(q, scaling)
    layer = module.layer_idx
    cu = packing.cu
    backend.begin_layer(layer, tuple(e - s for s, e in zip(cu, cu[1:])))
    out = _prefill(backend, layer, q, k, v, cu, packing.rows) if packing.rows else q
    backend.prefill_layers += 1
    return packing.unpack(out, query.dtype), None


def _prefill(backend, layer, q, k, v, cu, rows):
    """One layer of the packed batch (cu_seqlens `cu`, batch rows `rows`): [total, Hq, D]."""
    planners = backend.planners_for(len(rows))
    spans = [slice(s, e) for s, e in zip(cu, cu[1:])]
    from ._chunks import cursor_of
    from ._varlen import attention_varlen
    if q.is_cuda:
        import torch

        from . import torch_ops
        if backend.planner.mode == "dense" and len(rows) > 1:  # one launch, nothing to plan
            for row in rows:
                backend.record(layer, _DensePlan(q.shape[1]), row)
            return attention_varlen(q, k, v, cu)
        outs = []
        for planner, span, row in zip(planners, spans, rows):
            # a carried chunk may follow: its pivots must publish (dense plans share nothing)
            carried = backend.carried and planner.mode != "dense"
            outs.append(torch_ops.prefill_layer(planner, layer, q[span], k[span], v[span],
                                                carried))
            if backend.trace is not None:  # synchronous copies of the device plan
                backend.record(layer, planner._cuda_prefill.last_plan(), row)
        return outs[0] if len(outs) == 1 else torch.cat(outs)  # one row: no copy
    plans = [planner.plan_layer(layer, q[span], k[span]) for planner, span in zip(planners, spans)]
    out = attention_varlen(q, k, v, cu, plans=plans)
    for plan, row, planner, span in zip(plans, rows, planners, spans):
        # after the run: deferred heads have their final kinds
        backend.record(layer, plan, row)
        # the prompt's state ran this layer (a carried chunk may continue from it)
        cursor_of(planner).next(planner.prompt, 0, span.stop - span.start, layer,
                                planner.layers, False)
    return out


def _chunk(backend, layer, query, key, value, scaling):
    """One layer of a chunk: query [B, Hq, S, D] after a cache, key and value [B, Hkv, E, D]
    (the cache and the chunk, E - S a multiple of 128), each batch row on its own planner;
    returns [B, S, Hq, D] in query's dtype."""
    import torch

    from ._chunks import CARRY, RUN, cursor_of
    batch, _, tokens, dim = query.shape
    end = key.shape[2]
    backend.begin_chunk_layer(layer, end, batch)
    outs = []
    for row, planner in enumerate(backend.planners_for(batch)):
        q = query[row].transpose(0, 1).contiguous()  # [S, Hq, D]
        k = key[row].transpose(0, 1).contiguous()    # [E, Hkv, D]
        v = value[row].transpose(0, 1).contiguous()
        q = _scaled(q, scaling)
        # dense plans share nothing: not carried (as the CUDA model runner)
        carried = backend.carried and planner.mode != "dense"
        if q.is_cuda:
            from . import torch_ops
            outs.append(torch_ops.prefill_layer(planner, layer, q, k, v, carried))
            if backend.trace is not None:  # synchronous copies of the device plan
                backend.record(layer, planner._cuda_prefill.last_plan(), row)
            continue
        step = cursor_of(planner).next(planner.prompt, end - tokens, end, layer, planner.layers,
                                       carried)
        if step != RUN:
            planner.begin_chunk(end, carried=step == CARRY)
        out = torch.empty((tokens, q.shape[1], dim), dtype=torch.float32)
        backend.record(layer, planner.prefill_layer(layer, out, q, k, v), row)
        outs.append(out)
    out = outs[0][None] if batch == 1 else torch.stack(outs)
    return out.to(query.dtype)


def _scaled(q, scaling):
    """q with `scaling` folded in: our kernels scale by 1/sqrt(D)."""
    dim = q.shape[-1]
    if scaling is not None and not math.isclose(scaling, dim ** -0.5, rel_tol=1e-6):
        return q * (scaling * math.sqrt(dim))
    return q


class _DensePlan:
    """What trace records for a row of a dense varlen launch."""

    def __init__(self, heads):
        self.kinds = ["dense"] * heads
        self.density = 1.0


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


def enable(model, cluster_map=None, mode="shareprefill", prefill_min_tokens=2,
           chunk_state="fresh", **thresholds):
    """Makes `model` prefill with SharePrefill: registers the backend, creates the model's
    Planner(cluster_map, mode, **thresholds) (cluster_map: a ClusterMap, a path, or None for
    the modes dense, vslash and flexprefill; batches get one more such Planner per row) and sets
    attn_implementation="shareprefill".
    Prefills shorter than prefill_min_tokens go to SDPA. chunk_state: "fresh" (each chunk of a
    chunked prefill plans with a new sharing state) or "carried" (pivots and patterns carried
    from chunk to chunk). Returns the model's Backend (also model.shareprefill);
    Backend.reset() starts a new prompt explicitly."""
    register()
    if isinstance(cluster_map, str) or hasattr(cluster_map, "__fspath__"):
        import os
        cluster_map = ClusterMap.load(os.fspath(cluster_map))
    layers = getattr(model.config, "num_hidden_layers", None)
    new_planner, entry_for = planner_factory(cluster_map, mode, layers, thresholds)
    return attach(model, Backend(new_planner(0), prefill_min_tokens, new_planner, entry_for,
                                 chunk_state))


LENGTH_THRESHOLDS = ("tau_sim", "tau_qa", "min_budget", "pivot_is_medoid")


def planner_factory(cluster_map, mode, layers, thresholds):
    """(new_planner(tokens), entry_for(tokens) or None) for enable(): Planner(cluster_map, mode,
    layers=layers, **thresholds) with, when the map has settings per prompt length and
    `thresholds` names none of LENGTH_THRESHOLDS, the map's entry for `tokens` (the last one
    with from_tokens <= tokens) under them: the entry sets what `thresholds` leaves unset
    (exact_last_row, last_row_gamma), and its dense heads join those of `thresholds`."""
    given = [k for k in LENGTH_THRESHOLDS if k in thresholds]
    by_length = cluster_map is not None and cluster_map.thresholds and not given
    entry_for = cluster_map.thresholds_for if by_length else None
    dropped = sum(len(e.get("dense_heads", ())) for e in
                  (cluster_map.thresholds if cluster_map is not None and given else ()))
    if dropped:
        warnings.warn(f"shareprefill: {', '.join(given)} given, so the cluster map's settings per "
                      f"prompt length are ignored, with the {dropped} dense heads of its entries; "
                      "to vary one setting and keep the rest, load a copy of the map with the "
                      "entry changed", stacklevel=3)

    def new_planner(tokens=0):
        entry = entry_for(tokens) if entry_for else None
        from_map = {k: v for k, v in (entry or {}).items() if k != "from_tokens"}
        settings = dict(from_map, **thresholds)  # enable()'s last-row settings win
        if "dense_heads" in thresholds and "dense_heads" in from_map:  # both: every one dense
            settings["dense_heads"] = list(thresholds["dense_heads"]) + list(from_map["dense_heads"])
        planner = Planner(cluster_map, mode, layers=layers, **settings)
        planner.thresholds_entry = entry
        return planner

    return new_planner, entry_for


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
