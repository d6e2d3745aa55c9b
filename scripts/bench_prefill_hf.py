#!/usr/bin/env python3
"""Times HF transformers prefill (LlamaForCausalLM, PyTorch SDPA, bf16, batch 1) on the token ids
that `shareprefill bench prefill --save-tokens FILE` wrote, for the baseline rows of issue 14's
end-to-end benchmark (scripts/gpu-bench.sh prefill).

The model is the same GGUF (transformers' gguf loader dequantises it to fp32; .to(bfloat16)
rounds to nearest even, as our device dequantiser does), so both runs use the same bf16 weights.
Beyond the trained context the rotary embedding is rebuilt with YaRN at factor ceil(n / context)
(the factor our bench uses). Per length: one warm-up, then --repeats timed prefills of the first
n tokens with logits_to_keep=1 (wall clock from the call to the last position's logits on the
host, after a synchronisation), the median reported; peak = torch.cuda.max_memory_allocated over
them. Then an untimed pass scores the window's second half (perplexity, the convention of
`shareprefill eval ppl`): final hidden states, lm_head in chunks, log-softmax in fp32.
Prints one JSON object per length: impl, n, ttft_ms, ttft_ms_all, tokens_per_s, peak_bytes, ppl,
rope. --random-shape: no GGUF; a randomly initialised LlamaForCausalLM of SmolLM2-135M's shape
(the counterpart of `bench prefill --random-weights`; speed only, no perplexity)."""
import argparse
import json
import math
import os
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def set_rope(model, n, context):
    """YaRN at factor ceil(n / context) beyond the trained context; returns the rope description."""
    if n <= context:
        return {"type": "none", "factor": 1.0}
    factor = float(math.ceil(n / context))
    cfg = model.config
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    theta = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    yarn = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": context,
            "rope_theta": theta}
    if hasattr(cfg, "rope_parameters"):
        cfg.rope_parameters = yarn
    else:
        cfg.rope_scaling = yarn
    cfg.max_position_embeddings = max(n, context)
    rotary = type(model.model.rotary_emb)
    try:
        model.model.rotary_emb = rotary(config=cfg, device=model.device)
    except TypeError:  # transformers >= 5.2x: no device argument
        model.model.rotary_emb = rotary(config=cfg).to(model.device)
    return {"type": "yarn", "factor": factor}


@torch.no_grad()
def score_second_half(model, ids):
    """Perplexity of tokens [n/2, n) given their prefixes (logits of positions n/2-1 .. n-2)."""
    n = ids.shape[1]
    first = n // 2 - 1
    hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state[0]  # [n, dim], normed
    weight = model.lm_head.weight
    total, count = 0.0, 0
    for p0 in range(first, n - 1, 2048):
        p1 = min(p0 + 2048, n - 1)
        logits = (hidden[p0:p1] @ weight.T).float()
        lp = torch.log_softmax(logits, dim=-1)
        target = ids[0, p0 + 1:p1 + 1]
        total += float(lp.gather(1, target[:, None]).sum())
        count += p1 - p0
    return math.exp(-total / count)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="the GGUF our bench loaded")
    ap.add_argument("--random-shape", action="store_true",
                    help="random weights of SmolLM2-135M's shape instead of --model")
    ap.add_argument("--tokens", required=True, help="JSON from bench prefill --save-tokens")
    ap.add_argument("--lengths", default="8192,32768,131072")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--context", type=int, default=8192, help="the model's trained context")
    args = ap.parse_args()
    tokens = json.load(open(args.tokens))["tokens"]
    if args.random_shape:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                             num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                             max_position_embeddings=args.context, rms_norm_eps=1e-5,
                             tie_word_embeddings=True, attn_implementation="sdpa")
        model = LlamaForCausalLM(config)
    else:
        if not args.model:
            raise SystemExit("bench_prefill_hf.py: --model or --random-shape is needed")
        directory, name = os.path.split(os.path.abspath(args.model))
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32,
                                                     attn_implementation="sdpa")
    model = model.to(torch.bfloat16).cuda().eval()
    for n in (int(x) for x in args.lengths.split(",")):
        if n > len(tokens):
            raise SystemExit(f"bench_prefill_hf.py: {args.tokens} holds {len(tokens)} tokens, fewer than {n}")
        try:
            rope = set_rope(model, n, args.context)
        except Exception as e:  # timing stays comparable; the perplexity then is not
            rope = {"type": "none", "factor": 1.0, "yarn_failed": f"{type(e).__name__}: {e}"}
        ids = torch.tensor([tokens[:n]], device="cuda")

        def prefill():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model(input_ids=ids, logits_to_keep=1)
            out.logits[0, -1].float().cpu()
            return (time.perf_counter() - t0) * 1e3

        prefill()  # warm-up
        torch.cuda.reset_peak_memory_stats()
        times = sorted(prefill() for _ in range(args.repeats))
        peak = torch.cuda.max_memory_allocated()
        ms = times[len(times) // 2]
        ppl = None if args.random_shape else score_second_half(model, ids)
        print(json.dumps({"impl": "hf_sdpa", "n": n, "ttft_ms": ms, "ttft_ms_all": times,
                          "tokens_per_s": n / (ms * 1e-3), "peak_bytes": peak, "ppl": ppl,
                          "rope": rope, "transformers": __import__("transformers").__version__,
                          "torch": torch.__version__}), flush=True)
        del ids
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
