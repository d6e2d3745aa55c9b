#!/usr/bin/env python3
"""Dump the tokenizer vocabulary of a GGUF model to JSON, for tests that run before the C++ GGUF
reader is wired to the tokenizer.

Reads tokenizer.ggml.{model,pre,tokens,merges,token_type,bos_token_id,eos_token_id} with gguf-py
and writes {"model", "pre", "tokens", "merges", "token_types", "bos", "eos"}: exactly the fields
of sp::tokenizer_vocab (include/shareprefill/tokenizer.h).
Needs: pip install gguf.   Usage: dump_vocab.py [MODEL.gguf] [OUT.json]
Defaults: $SP_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf -> $SP_CACHE/tokenizer_vocab.json
(SP_CACHE defaults to ~/.cache/shareprefill).
"""
import json
import os
import sys

CACHE = os.environ.get("SP_CACHE", os.path.expanduser("~/.cache/shareprefill"))
DEFAULT_MODEL = os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(CACHE, "tokenizer_vocab.json")


def read_vocab(model_path):
    from gguf import GGUFReader

    reader = GGUFReader(model_path)

    def field(key):
        if key not in reader.fields:
            raise KeyError("%s: GGUF key %s is missing" % (model_path, key))
        return reader.fields[key]

    def string(key):
        f = field(key)
        return bytes(f.parts[f.data[0]]).decode("utf-8")

    def strings(key):
        f = field(key)
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = field(key)
        return int(f.parts[f.data[0]][0])

    types = field("tokenizer.ggml.token_type")
    return {
        "model": string("tokenizer.ggml.model"),
        "pre": string("tokenizer.ggml.pre"),
        "tokens": strings("tokenizer.ggml.tokens"),
        "merges": strings("tokenizer.ggml.merges"),
        "token_types": [int(types.parts[i][0]) for i in types.data],
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
    }


def write_vocab(vocab, out_path):
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    os.replace(out_path + ".tmp", out_path)


def main(argv):
    model = argv[1] if len(argv) > 1 else DEFAULT_MODEL
    out = argv[2] if len(argv) > 2 else DEFAULT_OUT
    if not os.path.exists(model):
        print("dump_vocab: error: model %s not found" % model, file=sys.stderr)
        return 1
    vocab = read_vocab(model)
    write_vocab(vocab, out)
    print("dump_vocab: %d tokens, %d merges, pre=%s -> %s"
          % (len(vocab["tokens"]), len(vocab["merges"]), vocab["pre"], out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
