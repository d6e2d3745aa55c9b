#!/usr/bin/env python3
"""Writes tests/data/model_golden.json: reference numerics of SmolLM2-135M-Instruct (the same
GGUF our C++ runner loads) computed by Hugging Face transformers + torch in fp32.

Stored: the prompt's token ids (so the C++ test feeds exactly the same ids), for a few
positions the top-20 logits and 256 fixed random vocabulary entries, and the RMS of the hidden
state after every layer at those positions.

Run (needs torch, transformers, gguf, numpy; e.g. in a venv, or on the GPU machine):
    python3 scripts/make_model_golden.py --model ~/.cache/shareprefill/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import json
import os
import random

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", default=os.path.join(os.path.dirname(__file__), "..", "data",
                                                      "prompts", "golden_prompt.txt"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                   "data", "model_golden.json"))
    args = ap.parse_args()
    directory, name = os.path.split(os.path.abspath(os.path.expanduser(args.model)))
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name,
                                                 dtype=torch.float32)
    model.eval()
    text = open(args.prompt, encoding="utf-8").read()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = len(ids)
    positions = sorted({0, 1, 7, 63, 127, 128, 200, n // 2, n - 2, n - 1})
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    logits = out.logits[0]
    vocab = logits.shape[1]
    rng = random.Random(1234)
    probe = sorted(rng.sample(range(vocab), 256))
    rows = []
    for p in positions:
        row = logits[p]
        top = torch.topk(row, 20)
        rows.append({
            "position": p,
            "top_ids": top.indices.tolist(),
            "top_logits": [round(float(x), 6) for x in top.values],
            "probe_logits": [round(float(row[i]), 6) for i in probe],
            # hidden_states[0] is the embedding output, [l+1] the output of layer l (the last
            # one after the final norm in HF's Llama, so it is left out here).
            "hidden_rms": [round(float(h[0, p].pow(2).mean().sqrt()), 6)
                           for h in out.hidden_states[:-1]],
        })
    golden = {
        "format": "shareprefill.model_golden/1",
        "model": name,
        "generator": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, fp32",
        "prompt_file": "data/prompts/golden_prompt.txt",
        "token_ids": ids,
        "probe_ids": probe,
        "positions": rows,
    }
    with open(args.out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
    print(f"wrote {args.out}: {n} tokens, {len(rows)} positions")


if __name__ == "__main__":
    main()
