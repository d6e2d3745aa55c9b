#!/usr/bin/env python3
"""Writes tests/fuzz/seeds/llama_tiny.gguf, a 1-layer Llama-shaped GGUF (dim 8, GQA 2/1, F32 and
Q8_0 tensors, a tokenizer array) so fuzz_gguf starts from an input that reaches the Llama
configuration checks. The other seed is tests/data/tiny.gguf. Needs `pip install gguf numpy`."""
import os

import numpy as np
import gguf

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "llama_tiny.gguf")
os.makedirs(os.path.dirname(out), exist_ok=True)
w = gguf.GGUFWriter(out, arch="llama")
w.add_block_count(1)
w.add_embedding_length(32)
w.add_feed_forward_length(32)
w.add_head_count(2)
w.add_head_count_kv(1)
w.add_context_length(64)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(10000.0)
w.add_token_list(["a", "b", "ab"])
rng = np.random.default_rng(7)


def add(name, shape, qtype=gguf.GGMLQuantizationType.F32):
    x = rng.standard_normal(shape).astype(np.float32)
    if qtype != gguf.GGMLQuantizationType.F32:
        x = gguf.quants.quantize(x, qtype)
    w.add_tensor(name, x, raw_dtype=qtype)


add("token_embd.weight", (3, 32), gguf.GGMLQuantizationType.Q8_0)
add("output_norm.weight", (32,))
add("blk.0.attn_norm.weight", (32,))
add("blk.0.ffn_norm.weight", (32,))
for name, shape in [("attn_q", (32, 32)), ("attn_k", (16, 32)), ("attn_v", (16, 32)),
                    ("attn_output", (32, 32)), ("ffn_gate", (32, 32)), ("ffn_up", (32, 32)),
                    ("ffn_down", (32, 32))]:
    add(f"blk.0.{name}.weight", shape, gguf.GGMLQuantizationType.Q4_1)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out, os.path.getsize(out))
