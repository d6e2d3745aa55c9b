#!/usr/bin/env python3
"""Write tests/data/rope_golden.json: Hugging Face transformers' rotary inverse frequencies and
attention factor (transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS) for the scalings the
C++ rope table implements, for tests/model/test_rope.cpp. Cases: SmolLM2's rotary shape (dim 64,
theta 100000, context 8192) with YaRN x4 and x16 and linear x4; a Llama-3-like one (dim 128,
theta 500000) with YaRN x8 and x32; a small-context one (dim 32, theta 10000, context 256).

Needs: python3 -m venv V && V/bin/pip install torch transformers
Usage: make_rope_golden.py [OUT.json]
"""
import json
import os
import sys

import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CASES = [  # (rope type, rotary dim, theta, trained context, factor)
    ("yarn", 64, 100000.0, 8192, 4.0),
    ("yarn", 64, 100000.0, 8192, 16.0),
    ("linear", 64, 100000.0, 8192, 4.0),
    ("yarn", 128, 500000.0, 8192, 8.0),
    ("yarn", 128, 500000.0, 8192, 32.0),
    ("yarn", 32, 10000.0, 256, 4.0),
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "rope_golden.json")
    cases = []
    for kind, dim, theta, context, factor in CASES:
        params = {"rope_type": kind, "factor": factor, "rope_theta": theta}
        if kind == "yarn":
            params["original_max_position_embeddings"] = context
        cfg = LlamaConfig(hidden_size=dim * 4, num_attention_heads=4, head_dim=dim,
                          max_position_embeddings=int(context * factor), rope_parameters=params)
        inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[kind](cfg, "cpu")
        cases.append({"type": kind, "rope_dim": dim, "theta": theta, "context": context,
                      "factor": factor, "attention_factor": float(attention_factor),
                      "inv_freq": [float(x) for x in inv_freq]})
    with open(out, "w") as f:
        json.dump({"transformers": transformers.__version__, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
