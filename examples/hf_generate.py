#!/usr/bin/env python3
"""Generate with a Hugging Face Llama model whose prefill runs on SharePrefill.

    pip install .  &&  pip install torch transformers gguf accelerate
    python3 examples/hf_generate.py --model ~/.cache/shareprefill/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --prompt-file ~/.cache/shareprefill/corpora/austen/emma.txt --tokens 8192

--model is a GGUF file (dequantised by transformers) or a Hugging Face model folder/id. The
prompt (the first --tokens tokens of the file) is prefilled with the planner and block-sparse
kernel (on the GPU when --device cuda), then continued greedily with SDPA decoding. The same
prompt runs once more with attn_implementation="sdpa" to compare time and continuation.
"""
import argparse
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import shareprefill.hf

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def load(model, device, dtype):
    kwargs = {"dtype": dtype}
    if model.endswith(".gguf"):
        kwargs["gguf_file"] = os.path.basename(model)
        model = os.path.dirname(os.path.abspath(os.path.expanduser(model)))
    tokenizer = AutoTokenizer.from_pretrained(model, gguf_file=kwargs.get("gguf_file"))
    return tokenizer, AutoModelForCausalLM.from_pretrained(model, **kwargs).to(device).eval()


def generate(model, ids, new_tokens, device):
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)
    if device == "cuda":
        torch.cuda.synchronize()
    return out[0, ids.shape[1]:], time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-file", required=True)
    ap.add_argument("--tokens", type=int, default=8192, help="prompt tokens taken from the file")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--mode", default="shareprefill", help="dense | vslash | flexprefill | shareprefill")
    ap.add_argument("--clusters", default=os.path.join(REPO, "data", "clusters",
                                                     "smollm2-135m-instruct-head-settings.json"),
                    help="cluster map for --mode shareprefill")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    tokenizer, model = load(args.model, args.device, dtype)
    text = open(args.prompt_file, encoding="utf-8").read()
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :args.tokens]
    ids = ids.to(args.device)

    backend = shareprefill.hf.enable(model, cluster_map=args.clusters if args.mode == "shareprefill" else None,
                                     mode=args.mode)
    ours, ours_s = generate(model, ids, args.new_tokens, args.device)
    layers = backend.prefill_layers
    model.set_attn_implementation("sdpa")
    ref, ref_s = generate(model, ids, args.new_tokens, args.device)

    print(f"prompt: {ids.shape[1]} tokens; {layers} layers prefilled by shareprefill ({args.mode})")
    print(f"shareprefill: {ours_s:.2f} s  {tokenizer.decode(ours)!r}")
    print(f"sdpa:         {ref_s:.2f} s  {tokenizer.decode(ref)!r}")
    print("same continuation" if torch.equal(ours, ref) else "the continuations differ")


if __name__ == "__main__":
    main()
