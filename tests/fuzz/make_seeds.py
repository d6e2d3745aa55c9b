#!/usr/bin/env python3
"""Writes the fuzz seed corpora under tests/fuzz/seeds/<target>/: small valid inputs plus the
bad shapes of issue 18, so each fuzzer starts next to the edges that matter.
  gguf/llama_tiny.gguf   a 1-layer Llama-shaped GGUF (dim 32, GQA 2/1, F32, Q8_0 and Q4_1
                         tensors, a tokenizer array) that reaches the Llama configuration checks
                         (needs `pip install gguf numpy`; skipped without them); gguf/tiny.gguf is
                         a copy of tests/data/tiny.gguf
  safetensors/           valid F32/F16/BF16 files, offsets near 2^63, an element count that
                         overflows int64, a deeply nested header value, truncations
  cluster_map/           our format (1 and 6) and the reference format, deep nesting, trailing
                         garbage
  capture/               a valid capture, counts beyond the file, NaN masses, trailing bytes
The finding_*.{st,json} files beside them are inputs the fuzzers found (each fixed, with a
regression test); they are committed as they were found, not written here.
"""
import json
import os
import struct

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def write(folder, name, data):
    path = os.path.join(SEEDS, folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(header, data=b""):
    h = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("<Q", len(h)) + h.encode() + data


def safetensors_seeds():
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    write("safetensors", "valid_f32.st",
          safetensors({"layer0.q": {"dtype": "F32", "shape": [1, 2, 3], "data_offsets": [0, 24]},
                       "__metadata__": {"k": "v"}}, f32))
    write("safetensors", "valid_halves.st",
          safetensors({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                       "b": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]}}, bytes(8)))
    write("safetensors", "offsets_near_2_63.st",
          safetensors({"t": {"dtype": "F32", "shape": [1],
                             "data_offsets": [9223372036854775800, 9223372036854775804]}}, bytes(16)))
    write("safetensors", "count_overflow.st",
          safetensors({"t": {"dtype": "F32", "shape": [4611686018427387904, 4, 4],
                             "data_offsets": [0, 0]}}))
    write("safetensors", "deep_dtype.st",
          safetensors('{"t": {"shape": [1], "data_offsets": [0, 4], "dtype": ' + "[" * 2000 +
                      "]" * 2000 + "}}", bytes(4)))
    write("safetensors", "truncated.st", safetensors(
        {"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)))


def cluster_map_seeds():
    ours = {"format": "shareprefill.clusters/1",
            "model": {"name": "m", "layers": 2, "heads": 2, "kv_heads": 1, "head_dim": 16},
            "calibration": {"texts": ["a"], "tokens": 256},
            "clusters": {"0": [[0, 0], [1, 0]], "1": [[0, 1]], "2": [[1, 1]]},
            "shared_clusters": ["0"], "medoids": {"0": [1, 0]}, "dense_layers": [1]}
    write("cluster_map", "ours.json", json.dumps(ours, indent=1))
    write("cluster_map", "reference.json",
          json.dumps({"clusters": {"9": [[0, 0], [0, 1]], "4": [[1, 0], [1, 1]]},
                      "shared_clusters": [9]}))
    write("cluster_map", "deep_member.json",
          '{"clusters": {"a": ' + "[" * 2000 + "]" * 2000 + '}, "shared_clusters": []}')
    write("cluster_map", "deep_model.json", '{"model": ' + "[" * 2000 + "]" * 2000 +
          ', "clusters": {}}')
    write("cluster_map", "trailing_garbage.json", json.dumps(ours) + "\n{}")
    v6 = dict(ours, format="shareprefill.clusters/6", dense_heads=[[0, 1]],
              head_gammas=[[1, 1, 0.9]],
              thresholds=[{"from_tokens": 0, "tau_sim": 0.5, "min_budget": 1024,
                           "pivot_is_medoid": True, "dense_heads": [[1, 0], [1, 1]]},
                          {"from_tokens": 24576, "tau_qa": 0.2}])
    write("cluster_map", "settings_v6.json", json.dumps(v6, indent=1))


def capture(inputs, count=None, trailing=b""):
    b = b"SPCALIB1" + struct.pack("<q", len(inputs) if count is None else count)
    for text, n_tokens, block, blocks, layers, heads, attention, coverage in inputs:
        b += struct.pack("<q", len(text)) + text.encode()
        b += struct.pack("<5q", n_tokens, block, blocks, layers, heads)
        b += struct.pack("<%df" % len(attention), *attention)
        b += struct.pack("<%df" % len(coverage), *coverage)
    return b + trailing


def capture_seeds():
    # Two layers x one head, two blocks: causal rows summing to 1.
    good = ("t", 256, 128, 2, 2, 1, [1, 0, 0.5, 0.5, 1, 0, 0.25, 0.75], [0.9, 0.5])
    write("capture", "valid.bin", capture([good, ("u",) + good[1:]]))
    write("capture", "count_beyond_file.bin", capture([good], count=9999))
    write("capture", "blocks_beyond_file.bin",
          capture([("t", 65535 * 128, 128, 65535, 1, 1, [], [])]))
    nan = float("nan")
    write("capture", "nan_masses.bin", capture([good[:6] + ([nan] * 8, [nan, nan])]))
    write("capture", "trailing.bin", capture([good], trailing=b"\0"))


def gguf_seed():
    try:
        import numpy as np
        import gguf
    except ImportError:
        print("gguf/numpy not installed: gguf/llama_tiny.gguf left as committed")
        return
    out = os.path.join(SEEDS, "gguf", "llama_tiny.gguf")
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


safetensors_seeds()
cluster_map_seeds()
capture_seeds()
gguf_seed()
