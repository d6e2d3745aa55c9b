"""The transformers backend on the CPU with a small random Llama (needs torch and
transformers; skipped without them): dense mode gives SDPA's logits, the sparse modes plan
every layer of a long prefill, padded batches (left or right padding) run as varlen batches with
one planner per row and equal each prompt alone, decode steps and masks that are more than
padding go to SDPA."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import shareprefill.hf  # noqa: E402
from shareprefill import _core as sp_core  # noqa: E402


def tiny_llama(layers=3, heads=6, kv_heads=2, dim=32, seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=300, hidden_size=heads * dim, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=dim,
        max_position_embeddings=4096, attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(config).eval()


def logits_of(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


def test_dense_mode_matches_sdpa():
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 300), generator=torch.Generator().manual_seed(1))
    ref = logits_of(model, ids)
    backend = shareprefill.hf.enable(model, mode="dense")
    assert model.config._attn_implementation == "shareprefill"
    out = logits_of(model, ids)
    assert backend.prefill_layers == 3 and backend.fallback_layers == 0
    # fp32 everywhere; the kernels differ only in summation order.
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=2e-4, rtol=0)


def test_sparse_prefill_plans_every_layer_and_resets_per_prompt():
    model = tiny_llama()
    backend = shareprefill.hf.enable(model, mode="vslash", min_budget=256)
    ids = torch.randint(0, 300, (1, 1500), generator=torch.Generator().manual_seed(2))
    first = logits_of(model, ids)
    second = logits_of(model, ids)  # a new prompt: layer 0 again resets the planner
    assert backend.prefill_layers == 6
    assert torch.equal(first, second)
    assert torch.isfinite(first).all()


def test_generate_decodes_with_sdpa():
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=6, do_sample=False)
    backend = shareprefill.hf.enable(model, mode="dense")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert backend.prefill_layers == 3          # the prompt
    assert backend.fallback_layers == 3 * 5     # five decode steps of three layers
    assert torch.equal(out, ref)


def padded_batch(lengths, left=True, seed=5):
    """Random prompts of `lengths` padded to the longest: ids, the 2D mask, the position ids
    each prompt has alone (what generate() derives from the mask), and the prompts."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 300, (n,), generator=g) for n in lengths]
    tokens = max(lengths)
    ids = torch.zeros((len(lengths), tokens), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        span = slice(tokens - len(p), tokens) if left else slice(0, len(p))
        ids[b, span] = p
        mask[b, span] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, prompts


def real_rows(logits, lengths, left=True):
    tokens = logits.shape[1]
    return [logits[b, tokens - n:] if left else logits[b, :n] for b, n in enumerate(lengths)]


@pytest.mark.parametrize("mode", ["dense", "shareprefill"])
def test_padded_batch_equals_each_prompt_alone(mode):
    """A left-padded batch of three prompts runs on our kernels (one planner per row): the real
    tokens' logits equal each prompt run alone through the backend and, in dense mode, SDPA's
    on the batch. shareprefill mode (synthetic cluster map, tau_qa 1e-9 so that no head is
    query-aware) has pivots in layer 0 of every row, which run apart from the varlen call to
    publish their block attention (all heads stay dense on random weights)."""
    model = tiny_llama()
    lengths = [1500, 1100, 300]
    ids, mask, positions, prompts = padded_batch(lengths)
    ref = logits_of(model, ids, attention_mask=mask, position_ids=positions)
    settings = {} if mode == "dense" else dict(
        min_budget=256, tau_qa=1e-9, cluster_map=sp_core.synthetic_cluster_map(
            n_tokens=1500, layers=3, heads=6, kv_heads=2, dim=32))
    backend = shareprefill.hf.enable(model, mode=mode, **settings)
    backend.trace = []
    out = logits_of(model, ids, attention_mask=mask, position_ids=positions)
    assert backend.prefill_layers == 3 and backend.fallback_layers == 0
    assert sorted((t["layer"], t["row"]) for t in backend.trace) == [
        (layer, row) for layer in range(3) for row in range(3)]
    batch_trace = backend.trace
    backend.trace = []
    alone = [logits_of(model, p[None])[0] for p in prompts]
    # Each row's plans are the plans of its prompt alone (same planner state per prompt).
    by_row = sorted(batch_trace, key=lambda t: (t["row"], t["layer"]))
    assert [(t["kinds"], t["density"]) for t in by_row] == [
        (t["kinds"], t["density"]) for t in backend.trace]
    if mode == "shareprefill":
        assert all("pivot" in t["kinds"] for t in by_row if t["layer"] == 0)
    # fp32: the batch's projections may round differently from a batch of one.
    for ours, single in zip(real_rows(out, lengths), alone):
        torch.testing.assert_close(ours, single, atol=2e-5, rtol=0)
    if mode == "dense":
        for ours, theirs in zip(real_rows(out, lengths), real_rows(ref, lengths)):
            torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0)


def test_right_padding_and_padding_only_rows():
    model = tiny_llama()
    lengths = [200, 57, 130]
    ids, mask, positions, _ = padded_batch(lengths, left=False)
    ref = logits_of(model, ids, attention_mask=mask, position_ids=positions)
    backend = shareprefill.hf.enable(model, mode="dense")
    out = logits_of(model, ids, attention_mask=mask, position_ids=positions)
    assert backend.prefill_layers == 3 and backend.fallback_layers == 0
    for ours, theirs in zip(real_rows(out, lengths, False), real_rows(ref, lengths, False)):
        torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0)


def test_padded_batch_generate():
    model = tiny_llama()
    ids, mask, _, _ = padded_batch([60, 25, 41])
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    backend = shareprefill.hf.enable(model, mode="dense")
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert backend.prefill_layers == 3          # the batch's prompts
    assert backend.fallback_layers == 3 * 4     # four decode steps of three layers
    assert torch.equal(out, ref)


def test_other_masks_fall_back_with_one_warning(caplog):
    """A block-diagonal 4D mask (two sequences packed in one row) is more than padding: SDPA."""
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 50), generator=torch.Generator().manual_seed(4))
    causal = torch.ones((50, 50), dtype=torch.bool).tril()
    causal[20:, :20] = False
    mask = causal[None, None]
    ref = logits_of(model, ids, attention_mask=mask)
    backend = shareprefill.hf.enable(model, mode="dense")
    with caplog.at_level("WARNING", logger="shareprefill.hf"):
        out = logits_of(model, ids, attention_mask=mask)
        logits_of(model, ids, attention_mask=mask)
    assert backend.prefill_layers == 0 and backend.fallback_layers == 6
    assert sum("key padding" in r.message for r in caplog.records) == 1
    torch.testing.assert_close(out, ref)


def test_real_tokens_of_masks():
    from shareprefill._unpad import Packing, real_tokens
    two_d = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(real_tokens(two_d, 2, 4, "cpu"), two_d.bool())
    assert real_tokens(two_d, 2, 5, "cpu") is None
    causal = torch.ones((4, 4), dtype=torch.bool).tril()
    four_d = (causal & two_d.bool()[:, None, :])[:, None]
    assert torch.equal(real_tokens(four_d, 2, 4, "cpu"), two_d.bool())
    additive = torch.zeros(four_d.shape).masked_fill(~four_d, torch.finfo(torch.float32).min)
    assert torch.equal(real_tokens(additive, 2, 4, "cpu"), two_d.bool())
    assert real_tokens(torch.ones((2, 1, 4, 4), dtype=torch.bool), 2, 4, "cpu") is None
    packing = Packing(torch.tensor([[False, True, True], [False, False, False], [True] * 3]))
    assert packing.cu == [0, 2, 5] and packing.rows == [0, 2]
    x = torch.arange(3 * 2 * 3 * 1, dtype=torch.float32).reshape(3, 2, 3, 1)  # [B, H, S, D]
    rows = packing.pack(x)
    assert rows.shape == (5, 2, 1)
    back = packing.unpack(rows, torch.float32)  # [B, S, H, D], zeros at padding
    assert torch.equal(back[0, 1:], x[0].transpose(0, 1)[1:]) and not back[1].any()
    assert not back[0, 0].any() and torch.equal(back[2], x[2].transpose(0, 1))


def test_real_tokens_checks_long_masks_in_chunks(monkeypatch):
    """The 4D-mask check runs over chunks of query rows (here one row per chunk): the same
    verdicts as in one piece, for left and right padding and for a block-diagonal mask."""
    import shareprefill._unpad as unpad
    tokens = 37
    real = torch.zeros((2, tokens), dtype=torch.bool)
    real[0, :] = True
    real[1, tokens - 20:] = True  # left padding
    causal = torch.ones((tokens, tokens), dtype=torch.bool).tril()
    four_d = (causal & real[:, None, :])[:, None]
    block = four_d.clone()
    block[0, 0, 30:, :10] = False  # a packed second sequence: more than padding
    right = torch.flip(real, dims=[1])
    right_four_d = (causal & right[:, None, :])[:, None]
    for elements in (unpad.CHECK_ELEMENTS, 2 * tokens):
        monkeypatch.setattr(unpad, "CHECK_ELEMENTS", elements)
        assert torch.equal(unpad.real_tokens(four_d, 2, tokens, "cpu"), real)
        assert unpad.real_tokens(block, 2, tokens, "cpu") is None
        # right padding: the last query row is a padded one that still sees every real key
        assert torch.equal(unpad.real_tokens(right_four_d, 2, tokens, "cpu"), right)


def test_module_without_enable_is_an_error():
    model = tiny_llama()
    shareprefill.hf.register()
    model.set_attn_implementation("shareprefill")
    with pytest.raises(shareprefill.Error, match="enable"):
        logits_of(model, torch.zeros((1, 5), dtype=torch.long))


# --- Chunked prefill: a prefill after a cached prefix (DynamicCache, chunk after chunk) ---

def chunked_logits(model, ids, size, cache=None, **kwargs):
    """The logits of `ids` prefilled `size` tokens at a time through one cache."""
    cache = transformers.DynamicCache(config=model.config) if cache is None else cache
    with torch.no_grad():
        return torch.cat([model(ids[:, s:s + size], past_key_values=cache, use_cache=True,
                                **kwargs).logits for s in range(0, ids.shape[1], size)], dim=1)


def record_steps(monkeypatch):
    """[(chunk start, layer, step)] of every ChunkCursor.next call (CPU and GPU paths)."""
    from shareprefill import _chunks
    steps, step_of = [], _chunks.ChunkCursor.next

    def spy(self, prompt, start, end, layer, layers, carried):
        step = step_of(self, prompt, start, end, layer, layers, carried)
        steps.append((start, layer, step))
        return step
    monkeypatch.setattr(_chunks.ChunkCursor, "next", spy)
    return steps


def test_dense_chunks_match_one_prefill_and_sdpa():
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 1000), generator=torch.Generator().manual_seed(7))
    sdpa = chunked_logits(model, ids, 256)
    backend = shareprefill.hf.enable(model, mode="dense")
    whole = logits_of(model, ids)
    chunks = chunked_logits(model, ids, 256)
    assert backend.prefill_layers == 3 + 4 * 3 and backend.fallback_layers == 0
    np.testing.assert_allclose(chunks.numpy(), whole.numpy(), atol=2e-5, rtol=0)
    np.testing.assert_allclose(chunks.numpy(), sdpa.numpy(), atol=2e-4, rtol=0)


# Sparse settings for the random model: gamma 0.3 makes the plans sparse; shareprefill mode (a
# synthetic map, no query-aware heads, gates that the random model passes) shares patterns.
SPARSE = {
    "vslash": dict(min_budget=256, gamma=0.3),
    "shareprefill": dict(min_budget=256, gamma=0.3, tau_qa=1e-9, tau_sim=0.9, tau_fb=0.999,
                         cluster_map=sp_core.synthetic_cluster_map(
                             n_tokens=1500, layers=3, heads=6, kv_heads=2, dim=32)),
}


@pytest.mark.parametrize("state", ["fresh", "carried"])
@pytest.mark.parametrize("mode", ["vslash", "shareprefill"])
def test_sparse_chunks_run_every_layer_on_our_path(mode, state, monkeypatch):
    """Four chunks of 512: every layer of every chunk is planned here (none on SDPA). A fresh
    state is begun at each chunk's layer 0; a carried one only at the first chunk and then moved
    on (Planner.begin_chunk(end, carried=True)). shareprefill: layer 0 has pivots in every chunk,
    and with a carried state the pivot layer's other heads share the carried patterns from the
    second chunk on (a fresh state has nothing to share there yet). vslash shares nothing, so
    its fresh and carried logits are equal."""
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 2048), generator=torch.Generator().manual_seed(8))
    backend = shareprefill.hf.enable(model, mode=mode, chunk_state=state, **SPARSE[mode])
    backend.trace = []
    steps = record_steps(monkeypatch)
    out = chunked_logits(model, ids, 512)
    assert backend.prefill_layers == 4 * 3 and backend.fallback_layers == 0
    assert [t["layer"] for t in backend.trace] == [0, 1, 2] * 4
    later = "carry" if state == "carried" else "fresh"
    assert steps == [(s, layer, "fresh" if s == 0 else later) if layer == 0 else (s, layer, "run")
                     for s in range(0, 2048, 512) for layer in range(3)]
    assert torch.isfinite(out).all()
    assert min(t["density"] for t in backend.trace) < 0.9
    if mode == "shareprefill":
        first_layers = [t["kinds"] for t in backend.trace if t["layer"] == 0]
        assert all("pivot" in kinds for kinds in first_layers)
        assert ["shared" in kinds for kinds in first_layers] == [False] + [state == "carried"] * 3
    else:
        other = tiny_llama()
        shareprefill.hf.enable(other, mode=mode, chunk_state="carried" if state == "fresh"
                               else "fresh", **SPARSE[mode])
        assert torch.equal(chunked_logits(other, ids, 512), out)


def test_carried_chunks_after_a_whole_first_prefill():
    """generate(prefill_chunk_size=...) and a carried state: the first chunk is a plain prefill
    (plan_layer + the varlen kernel), the next ones carry its state on; decode steps go to SDPA
    and the tokens equal SDPA's in dense mode."""
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 600), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=4, do_sample=False)
    backend = shareprefill.hf.enable(model, mode="dense", chunk_state="carried")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False, prefill_chunk_size=256)
    assert backend.prefill_layers == 3 * 3          # chunks 256, 256, 88
    assert backend.fallback_layers == 3 * 3         # three decode steps
    assert torch.equal(out, ref)
    shareprefill.hf.enable(model, mode="shareprefill", chunk_state="carried",
                           **SPARSE["shareprefill"])
    backend = model.shareprefill
    with torch.no_grad():
        model.generate(ids, max_new_tokens=1, do_sample=False, prefill_chunk_size=256)
    assert backend.prefill_layers == 3 * 3 and backend.fallback_layers == 0


def test_static_cache_chunks():
    """A StaticCache: the first prefill has no mask and S_kv > S (the cache's empty slots), the
    next chunks a causal mask over the filled part: all on our path, the keys cut to it."""
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 600), generator=torch.Generator().manual_seed(10))
    whole = logits_of(model, ids)
    backend = shareprefill.hf.enable(model, mode="dense")
    cache = transformers.StaticCache(config=model.config, max_cache_len=1024)
    out = chunked_logits(model, ids, 256, cache=cache)
    assert backend.prefill_layers == 3 * 3 and backend.fallback_layers == 0
    np.testing.assert_allclose(out.numpy(), whole.numpy(), atol=2e-4, rtol=0)


def test_chunk_start_off_the_block_grid_falls_back_with_one_warning(caplog):
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 600), generator=torch.Generator().manual_seed(11))
    sdpa = chunked_logits(model, ids, 200)
    backend = shareprefill.hf.enable(model, mode="dense")
    with caplog.at_level("WARNING", logger="shareprefill.hf"):
        out = chunked_logits(model, ids, 200)  # chunks at 0 (ours), 200 and 400 (SDPA)
    assert backend.prefill_layers == 3 and backend.fallback_layers == 6
    assert sum("multiple of 128" in r.message for r in caplog.records) == 1
    np.testing.assert_allclose(out.numpy(), sdpa.numpy(), atol=2e-4, rtol=0)


def test_decode_after_chunks_goes_to_sdpa_silently(caplog):
    model = tiny_llama()
    ids = torch.randint(0, 300, (1, 513), generator=torch.Generator().manual_seed(12))
    backend = shareprefill.hf.enable(model, mode="dense")
    cache = transformers.DynamicCache(config=model.config)
    with caplog.at_level("WARNING", logger="shareprefill.hf"):
        chunked_logits(model, ids[:, :512], 256, cache=cache)
        with torch.no_grad():
            model(ids[:, 512:], past_key_values=cache)  # one token after 512 cached
    assert backend.prefill_layers == 2 * 3 and backend.fallback_layers == 3
    assert not caplog.records


def test_batch_chunks_without_padding_run_per_row_and_with_padding_fall_back(caplog):
    model = tiny_llama()
    g = torch.Generator().manual_seed(13)
    ids = torch.randint(0, 300, (2, 512), generator=g)
    backend = shareprefill.hf.enable(model, mode="vslash", **SPARSE["vslash"])
    both = chunked_logits(model, ids, 256)
    assert backend.prefill_layers == 2 * 3 and backend.fallback_layers == 0
    for row in range(2):
        torch.testing.assert_close(both[row], chunked_logits(model, ids[row:row + 1], 256)[0],
                                   atol=2e-5, rtol=0)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding: the chunk's mask is more than causal over the cache
    backend = shareprefill.hf.enable(model, mode="dense")
    with caplog.at_level("WARNING", logger="shareprefill.hf"):
        cache = transformers.DynamicCache(config=model.config)
        with torch.no_grad():
            for s in (0, 256):
                model(ids[:, s:s + 256], attention_mask=mask[:, :s + 256], past_key_values=cache)
    assert backend.prefill_layers == 3 and backend.fallback_layers == 3
    assert sum("exactly causal" in r.message for r in caplog.records) == 1


def test_causal_offset_of_masks():
    from shareprefill._unpad import causal_offset
    rows = torch.arange(4)[:, None] + 6
    mask = (torch.arange(10)[None, :] <= rows)[None, None]  # 4 queries after 6 cached tokens
    assert causal_offset(mask, 1, 4, 10) == 6
    assert causal_offset(mask.expand(3, 1, 4, 10), 3, 4, 10) == 6
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert causal_offset(additive, 1, 4, 10) == 6
    static = torch.cat([mask, torch.zeros((1, 1, 4, 5), dtype=torch.bool)], dim=-1)
    assert causal_offset(static, 1, 4, 15) == 6  # empty slots after the chunk
    padded = mask.clone()
    padded[..., 0] = False
    assert causal_offset(padded, 1, 4, 10) is None
    assert causal_offset(mask, 1, 4, 11) is None and causal_offset(mask, 2, 4, 10) is not None
    assert causal_offset(None, 1, 4, 10) == 0


def test_planner_prefill_layer_chunk_against_float64(rng):
    """Planner.prefill_layer on a chunk (the queries 256..499 over 500 keys), dense mode: the
    rows 256..499 of causal attention over the whole prompt; errors name the problem."""
    from conftest import attention_numpy, random_qkv
    q, k, v = random_qkv(rng, 500, 4, 2, 32)
    ref, _ = attention_numpy(q, k, v)
    planner = sp_core.Planner(None, "dense", layers=1)
    planner.begin_chunk(500, carried=False)
    out = np.zeros((244, 4, 32), dtype=np.float32)
    plan = planner.prefill_layer(0, out, q[256:], k, v)
    assert plan.published and plan.kinds == ["dense"] * 4
    np.testing.assert_allclose(out, ref[256:], atol=1e-5, rtol=0)
    with pytest.raises(sp_core.Error, match="multiple of the block size"):
        planner.prefill_layer(0, out[:200], q[300:], k, v)
    with pytest.raises(sp_core.Error, match="finished first chunk"):
        sp_core.Planner(None, "dense", layers=1).begin_chunk(500, carried=True)


def test_chunk_state_is_checked():
    with pytest.raises(sp_core.Error, match="chunk_state"):
        shareprefill.hf.enable(tiny_llama(), mode="dense", chunk_state="kept")


# --- The same on the GPU (a CUDA build and a device; skipped otherwise) ---

def cuda_ready():
    return (sp_core.build_info()["cuda"] and torch.cuda.is_available()
            and sp_core.cuda_device_available())


def tiny_llama_cuda():
    """The tiny Llama with head_dim 64 (the CUDA kernels' smallest) on the GPU: (fp32, bf16)."""
    model32 = tiny_llama(dim=64).to("cuda")
    model = tiny_llama(dim=64).to("cuda", torch.bfloat16)
    model.load_state_dict(model32.state_dict())
    return model32, model


@pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA build of shareprefill and a CUDA device")
@pytest.mark.parametrize("state", ["fresh", "carried"])
def test_chunks_on_the_gpu(state, monkeypatch):
    """Chunks of 256 on the device planner (CudaPrefill): dense mode as close to the fp32 model
    as SDPA's bf16 chunks (FA3's rule); vslash and shareprefill plan every layer of every chunk,
    fresh or carried (DevicePlanner.begin_chunk, the state grown as the prompt gets longer)."""
    model32, model = tiny_llama_cuda()
    ids = torch.randint(0, 300, (1, 1500), generator=torch.Generator().manual_seed(14)).cuda()
    exact = logits_of(model32, ids)
    sdpa = chunked_logits(model, ids, 256).float()
    backend = shareprefill.hf.enable(model, mode="dense", chunk_state=state)
    dense = chunked_logits(model, ids, 256).float()
    assert backend.prefill_layers == 6 * 3 and backend.fallback_layers == 0
    ours_err, sdpa_err = (dense - exact).abs().max().item(), (sdpa - exact).abs().max().item()
    assert ours_err <= 2 * sdpa_err + 1e-3, (ours_err, sdpa_err)
    settings = dict(SPARSE["shareprefill"], cluster_map=sp_core.synthetic_cluster_map(
        n_tokens=1500, layers=3, heads=6, kv_heads=2, dim=64))
    for mode, kwargs in (("vslash", SPARSE["vslash"]), ("shareprefill", settings)):
        backend = shareprefill.hf.enable(model, mode=mode, chunk_state=state, **kwargs)
        backend.trace = []
        steps = record_steps(monkeypatch)
        out = chunked_logits(model, ids, 256)
        assert backend.prefill_layers == 6 * 3 and backend.fallback_layers == 0
        assert [t["layer"] for t in backend.trace] == [0, 1, 2] * 6
        later = "carry" if state == "carried" else "fresh"
        assert [step for _, layer, step in steps if layer == 0] == ["fresh"] + [later] * 5
        assert torch.isfinite(out).all()
        backend.planner._cuda_prefill.check(ids)
