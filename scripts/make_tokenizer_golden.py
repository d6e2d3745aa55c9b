#!/usr/bin/env python3
"""Write tests/data/tokenizer_golden.json: Hugging Face token ids for a fixed set of strings and an
~8K-token Austen passage, for the C++ tokenizer test (tests/model/test_tokenizer.cpp).

The reference tokenizer is built with the `tokenizers` library from the vocabulary and merges in
the model's GGUF, configured as SmolLM2's own tokenizer.json (GGUF `tokenizer.ggml.pre` =
"smollm"): BPE without unk, pre-tokenizer Sequence[Digits(individual_digits), ByteLevel(
add_prefix_space=False, use_regex=True)], the CONTROL tokens (token_type 3) as special added
tokens matched whole in the text. llama.cpp's "smollm" pre-tokenizer is the same (\\p{N} isolated,
then the GPT-2 regex). transformers' own GGUF loader (AutoTokenizer with gguf_file=, which needs
torch) has no "smollm" entry and falls back to the plain GPT-2 regex without the digit split; the
cases where that differs are recorded per case as "transformers_gguf_ids", for information.
A case whose HF decode differs from its text (bytes the vocabulary has no token for are dropped)
records that decode as "decoded".

Also dumps the vocabulary to $SP_CACHE/tokenizer_vocab.json (scripts/dump_vocab.py).
Needs: python3 -m venv V && V/bin/pip install gguf numpy tokenizers transformers
Usage: make_tokenizer_golden.py [MODEL.gguf]   (corpora from scripts/fetch_corpora.sh)
"""
import hashlib
import json
import os
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dump_vocab  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "data", "tokenizer_golden.json")
CORPORA = os.path.join(dump_vocab.CACHE, "corpora")
PASSAGE_FILE = "austen/emma.txt"
PASSAGE_ANCHOR = "CHAPTER I\n"
PASSAGE_TOKENS = 8192

CASES = [
    "",
    "Hello world",
    "Hello, world! How are you today?",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home\nand happy disposition.",
    "1234567",
    "3.14159",
    "The year 1815 had 365 days; 1,000,000 people and 42% of them paid $3.50 each.",
    "x  2",
    "a 1",
    "\n\n1. First\n2. Second",
    "phone: +1 (555) 010-9999, pi=3.14159265358979",
    "   leading spaces",
    "trailing spaces   ",
    "multiple     internal    spaces",
    "tabs\tand\ttabs\t\t\tthree",
    "line\nbreaks\n\n\nand\r\nwindows\rreturns",
    " \t \n mixed \n\t whitespace \t\n",
    "    ",
    "\n",
    "!!! ??? ... --- *** ### @@@ ~~~ ^^^",
    "(parens) [brackets] {braces} <angle> \"quotes\" 'single' `back`",
    "She's here, it's fine, we're sure, they've gone, I'm late, you'll see, he'd know.",
    "SHE'S IT'S WE'RE THEY'VE I'M YOU'LL HE'D",
    "don't can't won't isn't 'quoted' 'tis",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade \u00c5ngstr\u00f6m \u00fcber Stra\u00dfe",
    "e\u0301 combining acute, n\u0303",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4 \u0420\u043e\u0441\u0441\u0438\u044f "
    "\u0395\u03bb\u03bb\u03ac\u03b4\u03b1 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea "
    "\u0939\u093f\u0928\u094d\u0926\u0940",
    "emoji \U0001f600\U0001f680 family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f1ec\U0001f1e7 "
    "thumbs \U0001f44d\U0001f3fd",
    "math \u2211 \u222b \u221e \u2264 \u2260 \u00b2 \u00bd \u2163 \u0661\u0662\u0663 \uff11\uff12",
    "nbsp\u00a0here ideographic\u3000space line\u2028sep em\u2003space",
    "zero\u200bwidth soft\u00adhyphen",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<|im_start|><|im_end|><|endoftext|>",
    "text<|im_end|>more text <|im_start|> spaced",
    "<|im_start <|im_end| <im_start|> not special",
    "<file_sep><filename>main.py<gh_stars>10",
    "def f(x):\n    return x ** 2  # square\n\n\nif __name__ == '__main__':\n\tprint(f(3))",
    "https://example.org/path?q=1&r=two#frag user@example.com",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u0120 \u010a literal byte-map chars",
    "controls \x04\x06\x13 have no byte token; bell\x07 nul\x00 esc\x1b[0m do",
    "\u00c0\u00c1 and \U00050000 use lead bytes 0xc3 and 0xf1",
]


def build_reference(vocab):
    ids = {tok: i for i, tok in enumerate(vocab["tokens"])}
    merges = [tuple(m.split(" ")) for m in vocab["merges"]]
    tok = Tokenizer(models.BPE(ids, merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [AddedToken(t, special=True, normalized=False)
               for t, kind in zip(vocab["tokens"], vocab["token_types"]) if kind == 3]
    tok.add_special_tokens(control)
    user = [AddedToken(t, special=False, normalized=False)
            for t, kind in zip(vocab["tokens"], vocab["token_types"]) if kind == 4]
    if user:
        tok.add_tokens(user)
    return tok


def build_transformers_gguf(vocab):
    """transformers' GGUF tokenizer conversion, called directly (its AutoTokenizer path needs torch)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    except ImportError as e:
        print("make_tokenizer_golden: transformers GGUF converter unavailable (%s); skipping" % e)
        return None
    d = {"tokenizer_type": vocab["model"], "pre_tokenizer_type": vocab["pre"],
         "tokens": vocab["tokens"], "merges": vocab["merges"], "token_type": vocab["token_types"]}
    backend, _ = convert_gguf_tokenizer("llama", d)
    return backend


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_passage(tok):
    path = os.path.join(CORPORA, PASSAGE_FILE)
    if not os.path.exists(path):
        raise SystemExit("make_tokenizer_golden: %s missing; run scripts/fetch_corpora.sh" % path)
    text = open(path, encoding="utf-8").read()
    begin = text.index(PASSAGE_ANCHOR)
    # Grow the passage until it holds at least PASSAGE_TOKENS tokens, ending at a line break.
    end = begin + 4 * PASSAGE_TOKENS
    while len(tok.encode(text[begin:end], add_special_tokens=False).ids) < PASSAGE_TOKENS:
        end += 256
    end = text.index("\n", end) + 1
    passage = text[begin:end]
    ids = tok.encode(passage, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == passage
    return {
        "file": PASSAGE_FILE,
        "file_sha256": sha256_file(path),
        "char_begin": begin, "char_end": end,
        "byte_begin": len(text[:begin].encode("utf-8")),
        "byte_end": len(text[:end].encode("utf-8")),
        "text_sha256": hashlib.sha256(passage.encode("utf-8")).hexdigest(),
        "tokens": len(ids),
        "ids": ids,
    }


def format_golden(golden):
    """JSON with one line per case and the passage ids wrapped 32 to a line, for readable diffs."""
    def dumps(value):
        return json.dumps(value, ensure_ascii=True)

    lines = ["{"]
    for key, value in golden.items():
        if key == "cases":
            lines.append(' "cases": [')
            lines += ["  %s%s" % (dumps(c), "," if i + 1 < len(value) else "")
                      for i, c in enumerate(value)]
            lines.append(" ],")
        elif key == "passage":
            head = {k: v for k, v in value.items() if k != "ids"}
            lines.append(' "passage": %s, "ids": [' % dumps(head)[:-1])
            ids = value["ids"]
            rows = [", ".join(str(x) for x in ids[i:i + 32]) for i in range(0, len(ids), 32)]
            lines += ["  %s%s" % (row, "," if i + 1 < len(rows) else "") for i, row in enumerate(rows)]
            lines.append(" ]}")
        else:
            lines.append(" %s: %s," % (dumps(key), dumps(value)))
    return "\n".join(lines) + "\n}\n"


def main(argv):
    model = argv[1] if len(argv) > 1 else dump_vocab.DEFAULT_MODEL
    if not os.path.exists(model):
        raise SystemExit("make_tokenizer_golden: model %s not found" % model)
    vocab = dump_vocab.read_vocab(model)
    dump_vocab.write_vocab(vocab, dump_vocab.DEFAULT_OUT)
    print("make_tokenizer_golden: vocab dumped to %s" % dump_vocab.DEFAULT_OUT)
    if vocab["model"] != "gpt2" or vocab["pre"] != "smollm":
        raise SystemExit("make_tokenizer_golden: expected a gpt2/smollm vocabulary, got %s/%s"
                         % (vocab["model"], vocab["pre"]))
    tok = build_reference(vocab)
    other = build_transformers_gguf(vocab)
    cases, differing = [], 0
    for text in CASES:
        ids = tok.encode(text, add_special_tokens=False).ids
        case = {"text": text, "ids": ids}
        decoded = tok.decode(ids, skip_special_tokens=False)
        if decoded != text:  # only bytes without a token of their own are lost
            case["decoded"] = decoded
        if other is not None:
            alt = other.encode(text, add_special_tokens=False).ids
            if alt != ids:
                case["transformers_gguf_ids"] = alt
                differing += 1
        cases.append(case)
    golden = {
        "format": "shareprefill.tokenizer_golden/1",
        "generator": "scripts/make_tokenizer_golden.py",
        "reference": "tokenizers %s: BPE + Sequence[Digits(individual_digits), ByteLevel(no prefix "
                     "space, GPT-2 regex)] + CONTROL tokens as special added tokens"
                     % tokenizers.__version__,
        "model": {"file": os.path.basename(model), "sha256": sha256_file(model),
                  "tokenizer_model": vocab["model"], "pre": vocab["pre"],
                  "vocab_size": len(vocab["tokens"]), "merges": len(vocab["merges"]),
                  "bos": vocab["bos"], "eos": vocab["eos"]},
        "add_bos": False,
        "cases": cases,
        "passage": make_passage(tok),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(format_golden(golden))
    print("make_tokenizer_golden: %d cases (%d differ under transformers' GGUF loader), passage of "
          "%d tokens -> %s (%d bytes)" % (len(cases), differing, golden["passage"]["tokens"], OUT,
                                          os.path.getsize(OUT)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
