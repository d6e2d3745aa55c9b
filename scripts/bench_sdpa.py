#!/usr/bin/env python3
"""Times PyTorch's cuDNN SDPA (causal, bf16, batch 1) on the shapes of our CUDA attention bench,
with K/V expanded to the query heads (cuDNN's path has no native GQA here). Median of CUDA-event
timings after warm-up; prints one JSON object per shape: impl, n, heads, kv_heads, dim, ms,
tflops (causal dense FLOPs 2*N^2*D*H / time, the convention of DESIGN.md section 6)."""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", action="append", required=True, help="n,heads,kv_heads,dim")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    for shape in args.shape:
        n, h, hkv, d = (int(x) for x in shape.split(","))
        q = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
        k = k.repeat_interleave(h // hkv, dim=1).contiguous()
        v = v.repeat_interleave(h // hkv, dim=1).contiguous()
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 2,
                         args.repeats)
        print(json.dumps({"impl": "cudnn_sdpa", "n": n, "heads": h, "kv_heads": hkv, "dim": d,
                          "ms": ms, "tflops": 2.0 * n * n * d * h / ms * 1e-9}), flush=True)
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
