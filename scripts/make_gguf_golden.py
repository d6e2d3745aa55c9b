#!/usr/bin/env python3
"""Writes the GGUF reader's golden test data with the reference `gguf` package (gguf-py).

(a) tests/data/tiny.gguf: a few-KB GGUF with one small tensor per supported element type and
    metadata of every GGUF value type. F32/F16/BF16 and Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 tensors are
    quantised by gguf-py; gguf-py cannot quantise K-quants, and SmolLM2's file has none, so the
    Q4_K/Q5_K/Q6_K tensors are random block bytes with sane fp16 scales (every byte pattern is a
    valid K-quant block as long as the scales are finite).
(b) tests/data/gguf_golden.json: what gguf-py reads back: metadata, the tensor table, every
    tiny tensor dequantised by gguf-py, and rows / checksums of the real model's tensors.

Usage (needs `pip install gguf numpy`, tested with gguf 0.19.0 and numpy 2.4):
    python3 scripts/make_gguf_golden.py [--model PATH] [--out-dir tests/data]
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

SEED = 20251128
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FORMAT = "shareprefill.gguf_golden/1"


def f32(x):
    return [float(v) for v in np.asarray(x, dtype=np.float32).ravel()]


def random_kquant_blocks(rng, qtype, n_blocks):
    """Random K-quant blocks whose fp16 scale fields are finite and of moderate size."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    scale = rng.uniform(1e-3, 2e-2, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    if qtype in (QT.Q4_K, QT.Q5_K):
        raw[:, 0:4] = scale.reshape(n_blocks, 4)  # d, dmin
    elif qtype == QT.Q6_K:
        raw[:, type_size - 2:] = scale[:, 0:2]  # d is the last field
    else:
        raise ValueError(qtype)
    return raw


def tiny_tensors(rng):
    """(name, ggml type, numpy data as stored) for tiny.gguf; quantised data is uint8 blocks."""
    out = []
    x = rng.standard_normal((3, 32)).astype(np.float32)
    out.append(("t_f32", QT.F32, x))
    x = rng.standard_normal((2, 2, 32)).astype(np.float32)
    out.append(("t_f32_3d", QT.F32, x))
    x = rng.standard_normal((2, 32)).astype(np.float16)
    x[0, 0] = np.float16(6.0e-8)    # fp16 subnormal
    x[0, 1] = np.float16(-65504.0)  # largest fp16 magnitude
    x[0, 2] = np.float16(-0.0)
    out.append(("t_f16", QT.F16, x))
    x = rng.standard_normal((2, 32)).astype(np.float32)
    x[0, 0] = 1e-40  # fp32 subnormal, bf16 keeps part of it
    out.append(("t_bf16", QT.BF16, gguf.quants.quantize(x, QT.BF16)))
    for qt in (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0):
        x = (rng.standard_normal((2, 64)) * 0.05).astype(np.float32)
        out.append(("t_" + qt.name.lower(), qt, gguf.quants.quantize(x, qt)))
    for qt in (QT.Q4_K, QT.Q5_K, QT.Q6_K):
        out.append(("t_" + qt.name.lower(), qt, random_kquant_blocks(rng, qt, 2)))
    x = np.arange(8, dtype=np.int32).reshape(1, 8)
    out.append(("t_i32", QT.I32, x))
    return out


METADATA = [
    ("test.u8", VT.UINT8, 200), ("test.i8", VT.INT8, -100),
    ("test.u16", VT.UINT16, 60000), ("test.i16", VT.INT16, -30000),
    ("test.u32", VT.UINT32, 4000000000), ("test.i32", VT.INT32, -2000000000),
    ("test.u64", VT.UINT64, 2**63 + 5), ("test.i64", VT.INT64, -(2**62)),
    ("test.f32", VT.FLOAT32, 0.1), ("test.f64", VT.FLOAT64, 2.718281828459045),
    ("test.bool_true", VT.BOOL, True), ("test.bool_false", VT.BOOL, False),
    ("test.string", VT.STRING, "h\u00e9llo \u4e16\u754c"),
    ("test.string_nul", VT.STRING, "a\x00b"),
]
ARRAYS = [
    ("test.arr_u8", VT.UINT8, [0, 1, 255]), ("test.arr_i8", VT.INT8, [-128, 0, 127]),
    ("test.arr_u16", VT.UINT16, [0, 65535]), ("test.arr_i16", VT.INT16, [-32768, 32767]),
    ("test.arr_u32", VT.UINT32, [0, 4294967295]), ("test.arr_i32", VT.INT32, [-7, 0, 7, 2**31 - 1]),
    ("test.arr_u64", VT.UINT64, [0, 2**40]), ("test.arr_i64", VT.INT64, [-(2**40), 3]),
    ("test.arr_f32", VT.FLOAT32, [0.5, -1.25, 3.0e-5]), ("test.arr_f64", VT.FLOAT64, [1e300, -0.1]),
    ("test.arr_bool", VT.BOOL, [True, False, True]),
    ("test.arr_str", VT.STRING, ["", "\u0120the", "<|im_start|>", "a b"]),
]


def write_tiny(path, rng):
    writer = gguf.GGUFWriter(path, arch="tiny")
    writer.add_custom_alignment(64)
    for key, vt, val in METADATA:
        writer.add_key_value(key, val, vt)
    for key, vt, vals in ARRAYS:
        writer.add_key_value(key, vals, VT.ARRAY, sub_type=vt)
    for name, qt, data in tiny_tensors(rng):
        writer.add_tensor(name, data, raw_dtype=qt)  # byte shape -> element shape
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def field_json(field):
    types = field.types
    if types[0] == VT.ARRAY:
        return {"type": "array", "array_type": types[1].name.lower(), "value": field.contents()}
    return {"type": types[0].name.lower(), "value": field.contents()}


def tensor_table(reader):
    return [{"name": t.name, "type": t.tensor_type.name, "ne": [int(v) for v in t.shape],
             "file_offset": int(t.data_offset), "n_bytes": int(t.n_bytes)} for t in reader.tensors]


def dequant(t):
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)


def golden_tiny(path):
    reader = gguf.GGUFReader(path)
    meta = {k: field_json(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    values = {t.name: f32(dequant(t)) for t in reader.tensors if t.tensor_type != QT.I32}
    return {"file": os.path.basename(path), "version": int(reader.fields["GGUF.version"].contents()),
            "alignment": int(reader.alignment), "data_offset": int(reader.data_offset),
            "metadata": meta, "tensors": tensor_table(reader), "values": values}


def golden_model(path):
    reader = gguf.GGUFReader(path)
    by_name = {t.name: t for t in reader.tensors}
    rows = []
    picks = [("token_embd.weight", [0, 1, 1000, 49151]), ("blk.0.attn_q.weight", [0, 575]),
             ("blk.0.attn_k.weight", [191]), ("blk.29.ffn_down.weight", [0, 575]),
             ("blk.0.attn_norm.weight", [0]), ("output_norm.weight", [0])]
    for name, want in picks:
        full = dequant(by_name[name]).reshape(-1, int(by_name[name].shape[0]))
        for r in want:
            rows.append({"name": name, "row": r, "values": f32(full[r, :32])})
    sums = []
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.15.ffn_up.weight",
                 "blk.29.attn_v.weight", "output_norm.weight"):
        full = dequant(by_name[name]).astype(np.float64)
        sums.append({"name": name, "n": int(full.size), "sum": float(full.sum()),
                     "sum_abs": float(np.abs(full).sum())})
    table = tensor_table(reader)
    keep = [t for t in table if t["name"] in {p[0] for p in picks} or t["name"] == "blk.29.ffn_up.weight"]
    sizes = {k: len(reader.fields[k].data) for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                                                     "tokenizer.ggml.token_type")}
    return {"file": MODEL_NAME, "version": int(reader.fields["GGUF.version"].contents()),
            "alignment": int(reader.alignment), "data_offset": int(reader.data_offset),
            "n_tensors": len(reader.tensors), "n_kv": len(reader.fields) - 3,
            "type_counts": {q: sum(t.tensor_type.name == q for t in reader.tensors)
                            for q in sorted({t.tensor_type.name for t in reader.tensors})},
            "tensors": keep, "rows": rows, "sums": sums, "array_sizes": sizes,
            "tokens_first": [str(reader.fields["tokenizer.ggml.tokens"].contents(i)) for i in range(3)]}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cache = os.environ.get("SP_CACHE", os.path.expanduser("~/.cache/shareprefill"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(cache, MODEL_NAME))
    ap.add_argument("--out-dir", default=os.path.join(root, "tests", "data"))
    args = ap.parse_args()
    if not os.path.exists(args.model):
        sys.exit(f"model file {args.model} not found: run scripts/fetch_model.sh first")
    os.makedirs(args.out_dir, exist_ok=True)
    tiny = os.path.join(args.out_dir, "tiny.gguf")
    write_tiny(tiny, np.random.default_rng(SEED))
    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    golden = {"format": FORMAT, "generator": f"scripts/make_gguf_golden.py, gguf {importlib.metadata.version('gguf')}",
              "tiny": golden_tiny(tiny), "model": dict(golden_model(args.model), sha256=sha)}
    out = os.path.join(args.out_dir, "gguf_golden.json")
    with open(out, "w") as f:
        json.dump(golden, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print(f"wrote {tiny} ({os.path.getsize(tiny)} bytes) and {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
