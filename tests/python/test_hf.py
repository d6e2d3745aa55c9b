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
