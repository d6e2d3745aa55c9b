"""The transformers backend on the CPU with a small random Llama (needs torch and
transformers; skipped without them): dense mode gives SDPA's logits, the sparse modes plan
every layer of a long prefill, decode steps and padded batches go to SDPA."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import shareprefill.hf  # noqa: E402


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


def test_padded_batch_falls_back_with_one_warning(caplog):
    model = tiny_llama()
    ids = torch.randint(0, 300, (2, 50), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, :10] = 0
    ref = logits_of(model, ids, attention_mask=mask)
    backend = shareprefill.hf.enable(model, mode="dense")
    with caplog.at_level("WARNING", logger="shareprefill.hf"):
        out = logits_of(model, ids, attention_mask=mask)
    assert backend.prefill_layers == 0 and backend.fallback_layers == 3
    assert sum("varlen" in r.message for r in caplog.records) == 1
    torch.testing.assert_close(out, ref)


def test_module_without_enable_is_an_error():
    model = tiny_llama()
    shareprefill.hf.register()
    model.set_attn_implementation("shareprefill")
    with pytest.raises(shareprefill.Error, match="enable"):
        logits_of(model, torch.zeros((1, 5), dtype=torch.long))
