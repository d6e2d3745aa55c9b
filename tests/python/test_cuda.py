"""The CUDA path from Python (needs torch, a CUDA build and a GPU; skipped otherwise): the
kernel against a float64 reference at ragged lengths and GQA ratios, block-sparse plans, host
and device planners, strides, streams, errors, torch.compile(fullgraph=True) and the
transformers backend on the GPU. scripts/gpu-python.sh runs it on the H200."""
import numpy as np
import pytest

import shareprefill as sp

torch = pytest.importorskip("torch")
if not (sp.build_info()["cuda"] and torch.cuda.is_available() and sp._core.cuda_device_available()):
    pytest.skip("needs a CUDA build of shareprefill and a CUDA device", allow_module_level=True)

import torch.nn.functional as F  # noqa: E402

import shareprefill.torch_ops as ops  # noqa: E402
from conftest import per_sequence, tile_token_mask  # noqa: E402

DEVICE = "cuda"
# Half a bf16 ulp at 1.0: the absolute floor of the FA3 rule below for outputs of magnitude ~1.
ATOL = 2.0 ** -9


def qkv(n, heads, kv_heads, dim, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    make = lambda h: (torch.rand((n, h, dim), generator=g, device=DEVICE) * 2 - 1).to(dtype)  # noqa: E731
    return make(heads), make(kv_heads), make(kv_heads)


def reference(q, k, v, token_mask=None):
    """float64 causal attention of the (rounded) inputs: out [N, H, D], lse [H, N]."""
    n, heads, dim = q.shape
    group = heads // k.shape[1]
    out = torch.zeros((n, heads, dim), dtype=torch.float64, device=DEVICE)
    lse = torch.full((heads, n), -torch.inf, dtype=torch.float64, device=DEVICE)
    causal = torch.ones((n, n), dtype=torch.bool, device=DEVICE).tril()
    for h in range(heads):
        s = q[:, h].double() @ k[:, h // group].double().T / dim ** 0.5
        mask = causal if token_mask is None else causal & token_mask[h]
        s = s.masked_fill(~mask, -torch.inf)
        row_lse = torch.logsumexp(s, dim=1)
        rows = torch.isfinite(row_lse)
        p = torch.exp(s[rows] - row_lse[rows, None])
        out[rows, h] = p @ v[:, h // group].double()
        lse[h] = row_lse
    return out, lse


def sdpa_rows(q, k, v, token_mask=None):
    """PyTorch SDPA on the same bf16/fp16 inputs: the error of an established kernel."""
    group = q.shape[1] // k.shape[1]
    qt, kt, vt = (x.transpose(0, 1)[None] for x in (q, k, v))
    if token_mask is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=True)
    else:
        causal = torch.ones(token_mask.shape[1:], dtype=torch.bool, device=DEVICE).tril()
        kt, vt = (x.repeat_interleave(group, dim=1) for x in (kt, vt))
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=(token_mask & causal)[None])
        out = torch.nan_to_num(out)  # rows with no key: SDPA gives NaN, we give 0
    return out[0].transpose(0, 1)


def assert_within_fa3_rule(out, q, k, v, token_mask=None):
    """FA3's rule: max|out - ref64| <= 2 max|sdpa - ref64| + ATOL."""
    ref, ref_lse = reference(q, k, v, token_mask)
    ours = (out.double() - ref).abs().max().item()
    theirs = (sdpa_rows(q, k, v, token_mask).double() - ref).abs().max().item()
    assert ours <= 2 * theirs + ATOL, (ours, theirs)
    return ref_lse


SHAPES = [(1, 4, 4, 64), (127, 3, 1, 64), (129, 8, 2, 128), (1000, 9, 3, 64),
          (4224, 32, 8, 128)]


@pytest.mark.parametrize("n,heads,kv_heads,dim", SHAPES)
def test_dense_against_float64(n, heads, kv_heads, dim):
    q, k, v = qkv(n, heads, kv_heads, dim)
    out, lse = sp.attention(q, k, v, return_lse=True)
    torch.cuda.synchronize()
    assert out.dtype == torch.bfloat16 and out.shape == (n, heads, dim)
    ref_lse = assert_within_fa3_rule(out, q, k, v)
    # LSE in fp32 from bf16 scores: |error| well under one bf16 ulp of the logits.
    assert (lse.double() - ref_lse).abs().max().item() < 1e-2


def test_float16():
    q, k, v = qkv(700, 8, 2, 64, torch.float16)
    assert_within_fa3_rule(sp.attention(q, k, v), q, k, v)


@pytest.mark.parametrize("n", [700, 1000])
def test_block_sparse_plan_against_float64(n):
    heads = 6
    q, k, v = qkv(n, heads, 2, 64, seed=n)
    rng = np.random.default_rng(n)
    nb = (n + 127) // 128
    tiles = [sorted({(r, r) for r in range(nb)} | {(r, c) for r in range(nb) for c in range(r)
                                                  if rng.random() < 0.4}) for _ in range(heads)]
    plan = sp.Plan.from_tiles(n, tiles)
    out = sp.attention(q, k, v, plan=plan)
    mask = torch.from_numpy(tile_token_mask(plan.block_mask(), n)).to(DEVICE)
    assert_within_fa3_rule(out, q, k, v, mask)


def test_torch_ops_match_attention():
    q, k, v = qkv(900, 8, 2, 128)
    out, lse = torch.ops.shareprefill.attention(q, k, v)
    plan = sp.Plan.dense(900, 8)
    row_ptr, col_idx = (torch.from_numpy(x) for x in plan.csr())
    out2, lse2 = torch.ops.shareprefill.attention_block_sparse(q, k, v, row_ptr, col_idx)
    torch.testing.assert_close(out, out2, rtol=0, atol=0)
    torch.testing.assert_close(lse, lse2, rtol=0, atol=0)


def test_outputs_in_place_and_strided_kv():
    """Outputs land in the given memory; K and V may be views of one fused [N, 2 * Hkv * D]
    buffer (token stride 2 * Hkv * D): no copies on the way in."""
    n, heads, kv_heads, dim = 500, 8, 2, 64
    q, _, _ = qkv(n, heads, kv_heads, dim)
    fused = (torch.rand((n, 2 * kv_heads * dim), device=DEVICE) * 2 - 1).to(torch.bfloat16)
    k = fused[:, :kv_heads * dim].view(n, kv_heads, dim)
    v = fused[:, kv_heads * dim:].view(n, kv_heads, dim)
    assert not k.is_contiguous()
    big = torch.full((3, n, heads, dim), 7.0, dtype=torch.bfloat16, device=DEVICE)
    sp._core.attention_cuda(big[1], None, q, k, v, None, torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    assert_within_fa3_rule(big[1], q, k.contiguous(), v.contiguous())
    assert (big[0] == 7).all() and (big[2] == 7).all()


def test_merge_of_key_halves_equals_one_call():
    """Attention over key blocks < 3 and >= 3 (rows before block 3 have no key in the second:
    lse -inf) merged on the device: the one-call result within bf16's rounding of the halves;
    the lse within fp32 rounding; the torch op gives the same."""
    n, heads = 1000, 6
    q, k, v = qkv(n, heads, 2, 128, seed=3)
    nb = (n + 127) // 128
    low = [[(r, c) for r in range(nb) for c in range(min(r + 1, 3))]] * heads
    high = [[(r, c) for r in range(nb) for c in range(3, r + 1)]] * heads
    o_a, lse_a = sp.attention(q, k, v, plan=sp.Plan.from_tiles(n, low), return_lse=True)
    o_b, lse_b = sp.attention(q, k, v, plan=sp.Plan.from_tiles(n, high), return_lse=True)
    assert torch.isneginf(lse_b[:, 0]).all()
    o, lse = sp.merge_attention_states(o_a, lse_a, o_b, lse_b)
    assert o.dtype == torch.bfloat16 and lse.dtype == torch.float32
    ref, ref_lse = sp.attention(q, k, v, return_lse=True)
    torch.testing.assert_close(o.float(), ref.float(), rtol=0, atol=3 * ATOL)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-6, atol=1e-5)
    o2, lse2 = torch.ops.shareprefill.merge_attention_states(o_a, lse_a, o_b, lse_b)
    torch.testing.assert_close(o2, o, rtol=0, atol=0)
    torch.testing.assert_close(lse2, lse, rtol=0, atol=0)
    with pytest.raises(sp.Error, match="o_a is on cuda:0 but o_b is on cpu"):
        sp.merge_attention_states(o_a, lse_a, o_b.cpu(), lse_b)


def test_chunk_rows_equal_the_whole_prompt():
    """q the last 1000 - 384 tokens of k and v: the rows of the whole-prompt call, dense and
    under a plan (same tiles in the same order: bit for bit)."""
    n, heads, offset = 1000, 6, 384
    q, k, v = qkv(n, heads, 2, 64, seed=4)
    whole, whole_lse = sp.attention(q, k, v, return_lse=True)
    out, lse = sp.attention(q[offset:], k, v, return_lse=True)
    torch.testing.assert_close(out, whole[offset:], rtol=0, atol=0)
    torch.testing.assert_close(lse, whole_lse[:, offset:], rtol=0, atol=0)
    nb = (n + 127) // 128
    tiles = [sorted({(r, r) for r in range(nb)} | {(r, 0) for r in range(nb)}) for _ in range(heads)]
    plan = sp.Plan.from_tiles(n, tiles)
    torch.testing.assert_close(sp.attention(q[offset:], k, v, plan=plan),
                               sp.attention(q, k, v, plan=plan)[offset:], rtol=0, atol=0)
    with pytest.raises(sp.Error, match="multiple"):
        sp.attention(q[100:], k, v)


def test_runs_on_the_current_stream():
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        q, k, v = qkv(2000, 8, 2, 64, seed=5)
        out = sp.attention(q, k, v)
    side.synchronize()  # only the side stream: the kernel must have been queued on it
    assert_within_fa3_rule(out, q, k, v)


def test_errors():
    q, k, v = qkv(300, 8, 2, 64)
    heads_major = q.transpose(0, 1).contiguous().transpose(0, 1)  # [N, H, D] view of [H, N, D]
    with pytest.raises(sp.Error, match="need heads contiguous within a token"):
        sp.attention(heads_major, k, v)
    with pytest.raises(sp.Error, match="k is a CPU array"):
        sp.attention(q, k.cpu(), v)
    with pytest.raises(sp.Error, match="q has dtype float32; the CUDA kernels take bfloat16"):
        sp.attention(q.float(), k.float(), v.float())
    with pytest.raises(sp.Error, match="Planner.plan_layer plans on the CPU"):
        sp.Planner(mode="vslash").plan_layer(0, q, k)


SYN = dict(n_tokens=4224, layers=3, heads=8, kv_heads=2, dim=64)


def synthetic_bf16(layer):
    return [torch.from_numpy(x).to(DEVICE, torch.bfloat16) for x in sp._core.synthetic_layer(layer, **SYN)]


def relative_error(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def jaccard(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def test_host_plans_run_on_the_gpu():
    """The CPU planner's plans, run on the GPU (pivots published from the GPU's block
    attention), against the same planner run with the CPU kernel. Layer 0 plans are identical;
    later layers share patterns derived from block attention the two kernels computed in
    different precision (bf16 products vs fp32), so a tile at the gamma boundary may differ."""
    cmap = sp._core.synthetic_cluster_map(**SYN)
    gpu_planner, cpu_planner = sp.Planner(cmap), sp.Planner(cmap)
    shared = 0
    for layer in range(SYN["layers"]):
        q, k, v = synthetic_bf16(layer)
        qc, kc, vc = (x.float().cpu() for x in (q, k, v))
        gpu_plan = gpu_planner.plan_layer(layer, qc, kc)
        cpu_plan = cpu_planner.plan_layer(layer, qc, kc)
        out = sp.attention(q, k, v, plan=gpu_plan)
        ref = sp.attention(qc, kc, vc, plan=cpu_plan)
        assert gpu_plan.published
        if layer == 0:
            assert gpu_plan.kinds == cpu_plan.kinds
            assert (gpu_plan.block_mask() == cpu_plan.block_mask()).all()
        assert jaccard(gpu_plan.block_mask(), cpu_plan.block_mask()) > 0.95, layer
        assert relative_error(out.float().cpu(), ref) < 2e-2, layer  # bf16 rounding ~4e-3
        shared += gpu_plan.kinds.count("shared")
    assert shared > 0


def test_device_planner_agrees_with_the_host_planner():
    """CudaPrefill (plan, attention and publish on the GPU) against the CPU planner and kernel
    on the same values. The device planner's decisions may differ where a statistic lies
    within fp32 rounding of a threshold (device_planner.h), so kinds are compared by count."""
    cmap = sp._core.synthetic_cluster_map(**SYN)
    planner, cpu_planner = sp.Planner(cmap), sp.Planner(cmap)
    runner = ops.CudaPrefill(planner)
    agree = total = 0
    for layer in range(SYN["layers"]):
        q, k, v = synthetic_bf16(layer)
        out = runner.layer(layer, q, k, v)
        kinds = runner.device_planner.last_kinds()
        plan = runner.last_plan()
        assert plan.kinds == kinds and plan.layer == layer and plan.n_tokens == SYN["n_tokens"]
        assert 0 < plan.density <= 1
        qc, kc, vc = (x.float().cpu() for x in (q, k, v))
        cpu_plan = cpu_planner.plan_layer(layer, qc, kc)
        ref = sp.attention(qc, kc, vc, plan=cpu_plan)
        agree += sum(a == b for a, b in zip(kinds, cpu_plan.kinds))
        total += len(kinds)
        # Against dense attention, the device's plan loses about what the host's loses (its
        # tiles may differ at thresholds), plus bf16 output rounding (~4e-3).
        dense = sp.attention(qc, kc, vc)
        host_err = relative_error(ref, dense)
        assert relative_error(out.float().cpu(), dense) <= 1.5 * host_err + 1e-2, layer
    runner.check(q)
    assert agree >= 0.9 * total, (agree, total)


@pytest.mark.parametrize("n_tokens", [4224, sp._core.DEFER_PIVOTS_FROM])
def test_pivot_choices_give_the_same_outputs(n_tokens):
    """CudaPrefill picks when pivots compute their block attention as the C++ forward does:
    every pivot when chunks carry the state ('all'), else not those nobody after them shares
    with ('used'), and from DEFER_PIVOTS_FROM tokens only when a later member needs it
    ('deferred', whose state keeps the pivots' q and k). Every layer's output is the same bits
    as with 'all' (the carried run)."""
    syn = dict(SYN, n_tokens=n_tokens)
    cmap = sp._core.synthetic_cluster_map(**syn)
    inputs = [[torch.from_numpy(x).to(DEVICE, torch.bfloat16)
               for x in sp._core.synthetic_layer(layer, **syn)] for layer in range(syn["layers"])]
    outs, states = {}, {}
    for carried in (True, False):
        runner = ops.CudaPrefill(sp.Planner(cmap))
        outs[carried] = [runner.layer(layer, *inputs[layer], carried=carried)
                         for layer in range(syn["layers"])]
        runner.check(inputs[0][0])
        states[carried] = (runner.device_planner, runner.state.numel())
    for layer, (a, b) in enumerate(zip(outs[True], outs[False])):
        assert torch.equal(a, b), layer
    dp, state = states[False]
    choice = "deferred" if n_tokens >= sp._core.DEFER_PIVOTS_FROM else "used"
    assert state == dp.state_bytes(n_tokens, choice, syn["dim"])
    if choice == "deferred":
        assert state > dp.state_bytes(n_tokens, "all", syn["dim"])


class TwoLayers(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim, dtype=torch.bfloat16, device=DEVICE)

    def forward(self, q, k, v, row_ptr, col_idx):
        out, _ = torch.ops.shareprefill.attention(q, k, v)
        out = self.proj(out)
        out, lse = torch.ops.shareprefill.attention_block_sparse(out, k, v, row_ptr, col_idx)
        return out * 2, lse


def test_torch_compile_fullgraph():
    q, k, v = qkv(1000, 8, 2, 64)
    row_ptr, col_idx = (torch.from_numpy(x) for x in sp.Plan.dense(1000, 8).csr())
    module = TwoLayers(64)
    with torch.no_grad():
        eager = module(q, k, v, row_ptr, col_idx)
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True)(q, k, v, row_ptr, col_idx)
    torch.testing.assert_close(compiled[0], eager[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(compiled[1], eager[1])


def tiny_llama(transformers):
    """A random 3-layer Llama (6/2 heads, head_dim 64) on the GPU: (fp32, bf16 copy)."""
    config = transformers.LlamaConfig(
        vocab_size=300, hidden_size=6 * 64, intermediate_size=512, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, head_dim=64, max_position_embeddings=8192,
        attn_implementation="sdpa")
    model32 = transformers.LlamaForCausalLM(config).to(DEVICE).eval()
    model = transformers.LlamaForCausalLM(config).to(DEVICE, torch.bfloat16).eval()
    model.load_state_dict(model32.state_dict())
    return model32, model


def test_hf_backend_on_the_gpu():
    transformers = pytest.importorskip("transformers")
    import shareprefill.hf
    torch.manual_seed(0)
    model32, model = tiny_llama(transformers)
    ids = torch.randint(0, 300, (1, 1500), device=DEVICE)
    with torch.no_grad():
        ref32 = model32(ids).logits
        sdpa = model(ids).logits.float()
        backend = shareprefill.hf.enable(model, mode="dense")
        dense = model(ids).logits.float()
        assert backend.prefill_layers == 3
        sparse_backend = shareprefill.hf.enable(model, mode="vslash", min_budget=256)
        sparse_backend.trace = []
        sparse = model(ids).logits.float()
        assert [t["layer"] for t in sparse_backend.trace] == [0, 1, 2]
        assert all(0 < t["density"] <= 1 for t in sparse_backend.trace)
        shareprefill.hf.attach(model, backend)  # back to the dense backend, planner kept
        again = model(ids).logits.float()
        assert backend.prefill_layers == 6
    # FA3's rule on the logits: our dense bf16 model is as close to fp32 as SDPA's bf16 model.
    ours_err, sdpa_err = (dense - ref32).abs().max().item(), (sdpa - ref32).abs().max().item()
    assert ours_err <= 2 * sdpa_err + 1e-3, (ours_err, sdpa_err)
    assert (again - ref32).abs().max().item() <= 2 * sdpa_err + 1e-3
    assert torch.isfinite(sparse).all()


# --- Varlen batches (shareprefill.attention_varlen) and padded batches in the HF backend ---

def packed_qkv(lengths, heads, kv_heads, dim, seed=0):
    cu = torch.tensor([0] + list(np.cumsum(lengths)), dtype=torch.int32)
    return (*qkv(int(cu[-1]), heads, kv_heads, dim, seed=seed), cu)


VARLEN_SHAPES = [([1], 4, 4, 64), ([129, 1, 300], 6, 2, 64), ([128, 4224, 5, 1000], 32, 8, 128),
                 ([700, 127], 9, 3, 64)]


@pytest.mark.parametrize("lengths,heads,kv_heads,dim", VARLEN_SHAPES)
def test_varlen_dense_equals_one_call_per_sequence(lengths, heads, kv_heads, dim):
    """One launch gives each sequence the rows of its own call bit for bit (the same per-item
    code) and attends within the sequence only (float64 reference of the first one)."""
    q, k, v, cu = packed_qkv(lengths, heads, kv_heads, dim)
    out, lse = sp.attention_varlen(q, k, v, cu, return_lse=True)
    op_out, op_lse = torch.ops.shareprefill.attention_varlen(q, k, v, cu)
    torch.cuda.synchronize()
    ref_out, ref_lse = per_sequence(q, k, v, cu)
    assert out.dtype == q.dtype
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    assert torch.equal(op_out, ref_out) and torch.equal(op_lse, ref_lse)
    n0 = lengths[0]
    assert_within_fa3_rule(out[:n0], q[:n0], k[:n0], v[:n0])


def test_varlen_plans_equal_one_call_per_sequence():
    """Tile plans, None (dense) and host-planner plans (vslash; published after the launch),
    one per sequence, against one attention() call each with the same plans."""
    lengths = [1000, 300, 1500]
    heads = 8
    q, k, v, cu = packed_qkv(lengths, heads, 2, 64, seed=3)
    rng = np.random.default_rng(3)
    nb = (lengths[0] + 127) // 128
    tiles = [sorted({(r, r) for r in range(nb)} | {(r, c) for r in range(nb) for c in range(r)
                                                  if rng.random() < 0.4}) for _ in range(heads)]
    planner = sp.Planner(mode="vslash", min_budget=256)
    s = int(cu[2])
    planned = planner.plan_layer(0, q[s:].cpu(), k[s:].cpu())
    plans = [sp.Plan.from_tiles(lengths[0], tiles), None, planned]
    out, lse = sp.attention_varlen(q, k, v, cu, plans=plans, return_lse=True)
    torch.cuda.synchronize()
    assert planned.published
    ref_out, ref_lse = per_sequence(q, k, v, cu, plans)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    row_ptr = [torch.from_numpy(p.csr()[0]) for p in (plans[0], sp.Plan.dense(300, heads), planned)]
    col_idx = [torch.from_numpy(p.csr()[1]) for p in (plans[0], sp.Plan.dense(300, heads), planned)]
    bases = np.cumsum([0] + [c.numel() for c in col_idx[:-1]])
    op_out, _ = torch.ops.shareprefill.attention_varlen_block_sparse(
        q, k, v, cu, torch.cat([r + int(b) for r, b in zip(row_ptr, bases)]), torch.cat(col_idx))
    torch.cuda.synchronize()
    assert torch.equal(op_out, ref_out)


def test_varlen_pivot_plans_run_apart():
    """Host-planner plans with pivots (shareprefill mode) publish their block attention through
    one attention() call each; the other sequences share the launch."""
    syn = dict(layers=3, heads=8, kv_heads=2, dim=64)
    cmap = sp._core.synthetic_cluster_map(n_tokens=1600, **syn)
    lengths = [1600, 1100]
    planners = [sp.Planner(cmap, "shareprefill", min_budget=256) for _ in lengths]
    alone = [sp.Planner(cmap, "shareprefill", min_budget=256) for _ in lengths]
    for layer in range(2):
        seqs = [[torch.from_numpy(x) for x in sp._core.synthetic_layer(layer, n_tokens=n, **syn)]
                for n in lengths]
        plans = [p.plan_layer(layer, s[0], s[1]) for p, s in zip(planners, seqs)]
        if layer == 0:
            assert all(p.pivot_heads for p in plans)
        q, k, v = (torch.cat([s[i] for s in seqs]).to(DEVICE, torch.bfloat16) for i in range(3))
        cu = torch.tensor([0, lengths[0], sum(lengths)])
        out = sp.attention_varlen(q, k, v, cu, plans=plans)
        for b, (planner, s) in enumerate(zip(alone, seqs)):
            plan = planner.plan_layer(layer, s[0], s[1])
            assert np.array_equal(plan.block_mask(), plans[b].block_mask()), (layer, b)
            lo, hi = int(cu[b]), int(cu[b + 1])
            ref = sp.attention(q[lo:hi], k[lo:hi], v[lo:hi], plan=plan)
            torch.cuda.synchronize()
            assert torch.equal(out[lo:hi], ref), (layer, b)


def test_varlen_errors():
    q, k, v, cu = packed_qkv([200, 100], 4, 2, 64)
    with pytest.raises(sp.Error, match=r"cu_seqlens is on cuda:0; it must be a CPU tensor"):
        sp.attention_varlen(q, k, v, cu.to(DEVICE))
    with pytest.raises(sp.Error, match=r"q has dtype float32; the CUDA kernels take bfloat16"):
        sp.attention_varlen(q.float(), k, v, cu)
    with pytest.raises(sp.Error, match=r"sequence 1 is empty"):
        sp.attention_varlen(q, k, v, torch.tensor([0, 300, 300]))


def test_torch_compile_fullgraph_varlen():
    q, k, v, cu = packed_qkv([1000, 77, 300], 8, 2, 64)
    proj = torch.nn.Linear(64, 64, dtype=torch.bfloat16, device=DEVICE)

    def step(q, k, v, cu):
        out, lse = torch.ops.shareprefill.attention_varlen(q, k, v, cu)
        return proj(out) * 2, lse

    with torch.no_grad():
        eager = step(q, k, v, cu)
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)(q, k, v, cu)
    torch.testing.assert_close(compiled[0], eager[0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(compiled[1], eager[1])


def test_hf_padded_batch_on_the_gpu():
    """A left-padded batch of three prompts: dense mode in one varlen launch is as close to the
    fp32 model as SDPA's bf16 batch on the real tokens; vslash mode runs the device planner per
    row and plans every row of every layer."""
    transformers = pytest.importorskip("transformers")
    import shareprefill.hf
    torch.manual_seed(0)
    model32, model = tiny_llama(transformers)
    lengths = [1500, 700, 129]
    tokens = max(lengths)
    ids = torch.zeros((3, tokens), dtype=torch.long, device=DEVICE)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, tokens - n:] = torch.randint(0, 300, (n,), device=DEVICE)
        mask[b, tokens - n:] = 1
    kw = dict(attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    real = lambda x: [x[b, tokens - n:] for b, n in enumerate(lengths)]  # noqa: E731
    with torch.no_grad():
        ref32 = real(model32(ids, **kw).logits)
        sdpa = real(model(ids, **kw).logits.float())
        backend = shareprefill.hf.enable(model, mode="dense")
        dense = real(model(ids, **kw).logits.float())
        assert backend.prefill_layers == 3 and backend.fallback_layers == 0
        sparse_backend = shareprefill.hf.enable(model, mode="vslash", min_budget=256)
        sparse_backend.trace = []
        sparse = real(model(ids, **kw).logits.float())
        assert sorted((t["layer"], t["row"]) for t in sparse_backend.trace) == [
            (layer, row) for layer in range(3) for row in range(3)]
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert generated.shape == (3, tokens + 4)
    for ours, theirs, exact in zip(dense, sdpa, ref32):
        ours_err, sdpa_err = (ours - exact).abs().max().item(), (theirs - exact).abs().max().item()
        assert ours_err <= 2 * sdpa_err + 1e-3, (ours_err, sdpa_err)
    assert all(torch.isfinite(x).all() for x in sparse)
