#!/usr/bin/env python3
"""Layer-level check of the per-head error measures (issue 17).

Reads the JSON lines of `shareprefill eval heads --json` (one row per head: rel_err, out_err) and
the single-layer ablation that calibration recorded in a cluster map
(calibration.dense_layer_selection.gains: perplexity gain in % when only that layer is dense),
aggregates each measure per layer (out_err: root of the sum of squares over the layer's heads,
the size of the layer's total error in the residual stream; rel_err: mean over heads) and prints
the Spearman rank correlation of each aggregate with the ablation gains over all layers.

usage: head_measures_by_layer.py HEADS.jsonl CLUSTER_MAP.json
"""
import json
import math
import sys


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for m in range(i, j + 1):
            r[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    rows = [r for r in rows if r.get("eval") == "heads" and r.get("head") is not None]
    gains = json.load(open(sys.argv[2]))["calibration"]["dense_layer_selection"]["gains"]
    gain = {g["layer"]: g["gain_pct"] for g in gains}
    layers = sorted(gain)
    out_sq = {l: 0.0 for l in layers}
    rel = {l: [] for l in layers}
    for r in rows:
        if r["layer"] in gain:
            out_sq[r["layer"]] += r["out_err"] ** 2
            rel[r["layer"]].append(r["rel_err"])
    out_l = [math.sqrt(out_sq[l]) for l in layers]
    rel_l = [sum(rel[l]) / len(rel[l]) for l in layers]
    g = [gain[l] for l in layers]
    print("layer  gain%   out_err(layer)  mean rel_err")
    for l, a, b, c in zip(layers, g, out_l, rel_l):
        print(f"{l:5d} {a:+7.3f} {b:14.5f} {c:12.4f}")
    print(f"Spearman vs the single-layer ablation over {len(layers)} layers: "
          f"out_err {spearman(out_l, g):.3f}, rel_err {spearman(rel_l, g):.3f}")


if __name__ == "__main__":
    main()
