#!/usr/bin/env python3
"""Issue 17 on the GPU: the planner's thresholds chosen on calibration texts, then evaluated.

Stage 1 (calibration texts only): for each mode, a coordinate search over the thresholds the
device planner takes (tau_sim, tau_fb, tau_qa, min_budget, medoid pivots; the ones that mode
reads), starting from the defaults. Each candidate is one `eval ppl --device cuda` over the
calibration windows at several gammas; its score is the perplexity change vs dense at the
target density, interpolated on its (density, change) curve (linearly extrapolated from the
nearest segment when the gammas do not reach it). Per dimension the best value is kept.
Stage 2 (evaluation texts, never used for a choice): each mode with its defaults and with its
chosen thresholds, curves at 8K on the evaluation novels, at 32K (YaRN x4) and at 8K on the
held-out genre; the table at the end gives every curve's change interpolated at fixed densities.

Usage: scripts/gpu_threshold_sweep.py --bin BIN --model GGUF --texts DIR [--out DIR] [--quick]
  DIR holds sensesensibility, mansfieldpark, northangerabbey (calibration), prideprejudice, emma,
  persuasion (evaluation) and kjv-heldout (held-out genre), each NAME.txt.
"""
import argparse
import json
import os
import subprocess
import sys
import time

MAP = "data/clusters/smollm2-135m-instruct-dense-heads.json"
YARN = ["--rope-scaling", "yarn", "--rope-factor", "4"]
# Thresholds per mode: (option, default, alternatives). A flag is (option, False, [True]).
SEARCH = {
    "shareprefill": [("--tau-sim", 0.5, [0.3, 0.7]), ("--tau-fb", 0.95, [0.9, 0.99]),
                     ("--tau-qa", 0.1, [0.05, 0.2]), ("--min-budget", 1024, [512, 2048]),
                     ("--pivot-medoid", True, [False])],
    "flexprefill": [("--tau-qa", 0.1, [0.05, 0.2]), ("--min-budget", 1024, [512, 2048])],
    "vslash": [("--min-budget", 1024, [512, 2048])],
}


def options_of(setting):
    out = []
    for name, value in setting.items():
        if isinstance(value, bool):
            out += [name] if value else []
        else:
            out += [name, str(value)]
    return out


def run_ppl(args, tag, texts, length, windows, mode, gammas, setting, extra=()):
    """One eval ppl (dense and `mode`); returns the dense ppl and [(gamma, density, change %)]."""
    path = os.path.join(args.out, f"{tag}.jsonl")
    if os.path.exists(path):
        os.remove(path)
    cmd = [os.path.join(args.bin, "shareprefill"), "eval", "ppl", "--device", "cuda", "--model",
           args.model, "--texts", ",".join(texts), "--lengths", str(length), "--windows",
           str(windows), "--clusters", MAP, "--modes", f"dense,{mode}", "--gammas",
           ",".join(str(g) for g in gammas), "--json", path, *options_of(setting), *extra]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{tag}: eval ppl failed ({proc.returncode}): {tail}")
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    dense = next(r["ppl"] for r in rows if r["mode"] == "dense")
    curve = sorted((r["gamma"], r["density"], r["delta_vs_dense_pct"]) for r in rows if r["mode"] != "dense")
    print(f"  {tag:44s} {time.time() - start:5.1f} s  " +
          "  ".join(f"{d:.3f}:{c:+.2f}%" for _, d, c in curve), flush=True)
    return dense, curve


def at_density(curve, density):
    """Change (%) at `density` on the curve's points sorted by density (linear, extrapolated)."""
    pts = sorted((d, c) for _, d, c in curve)
    if len(pts) == 1:
        return pts[0][1]
    for (d0, c0), (d1, c1) in zip(pts, pts[1:]):
        if density <= d1 or (d1, c1) == pts[-1]:
            if d1 == d0:
                return c1
            return c0 + (c1 - c0) * (density - d0) / (d1 - d0)
    return pts[-1][1]


def calibrate(args, mode, texts):
    best = {name: default for name, default, _ in SEARCH[mode]}
    _, curve = run_ppl(args, f"cal-{mode}-defaults", texts, 8192, args.cal_windows, mode,
                       args.gammas, best)
    best_score = at_density(curve, args.target)
    print(f"  score at density {args.target}: {best_score:+.3f}%")
    for name, _, alternatives in SEARCH[mode]:
        for value in alternatives:
            trial = dict(best, **{name: value})
            tag = f"cal-{mode}{name}={value}"
            _, curve = run_ppl(args, tag, texts, 8192, args.cal_windows, mode, args.gammas, trial)
            score = at_density(curve, args.target)
            print(f"  score at density {args.target}: {score:+.3f}%")
            if score < best_score:
                best, best_score = trial, score
    print(f"== {mode}: chosen {options_of(best) or 'defaults'} (calibration score {best_score:+.3f}%)")
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--out", default="/tmp/sp-sweep")
    p.add_argument("--target", type=float, default=0.44, help="density the choice is made at")
    p.add_argument("--cal-windows", type=int, default=6)
    p.add_argument("--quick", action="store_true", help="calibration only, fewer gammas")
    args = p.parse_args()
    args.gammas = [0.92, 0.94, 0.96] if args.quick else [0.92, 0.94, 0.95, 0.96, 0.98]
    os.makedirs(args.out, exist_ok=True)
    t = lambda names: [os.path.join(args.texts, f"{n}.txt") for n in names]
    calib = t(["sensesensibility", "mansfieldpark", "northangerabbey"])
    novels = t(["prideprejudice", "emma", "persuasion"])
    heldout = t(["kjv-heldout"])
    for f in calib + novels + heldout:
        if not os.path.isfile(f):
            sys.exit(f"missing {f}")

    print("== stage 1: thresholds chosen on the calibration texts (8K, "
          f"{args.cal_windows} windows, target density {args.target})")
    chosen = {mode: calibrate(args, mode, calib) for mode in SEARCH}
    if args.quick:
        return
    print("== stage 2: evaluation (texts never used for a choice)")
    table = []
    for mode in SEARCH:
        defaults = {name: default for name, default, _ in SEARCH[mode]}
        settings = [("defaults", defaults)]
        if chosen[mode] != defaults:
            settings.append(("chosen", chosen[mode]))
        for label, setting in settings:
            for name, texts, length, windows, extra, densities in (
                    ("novels 8K", novels, 8192, 8, (), (0.40, 0.44)),
                    ("novels 32K", novels, 32768, 4, YARN, (0.20, 0.25)),
                    ("KJV 8K", heldout, 8192, 6, (), (0.40, 0.44))):
                tag = f"eval-{mode}-{label}-{name.replace(' ', '')}"
                _, curve = run_ppl(args, tag, texts, length, windows, mode, args.gammas, setting, extra)
                table.append((name, mode, label, [(d, at_density(curve, d)) for d in densities]))
    print("== change vs dense interpolated at fixed densities (evaluation texts)")
    print(f"{'texts':12s} {'mode':13s} {'thresholds':10s} changes")
    for name, mode, label, points in table:
        print(f"{name:12s} {mode:13s} {label:10s} " +
              "  ".join(f"{c:+.3f}% at {d:.2f}" for d, c in points))
    print("chosen: " + "; ".join(f"{m} {' '.join(options_of(s)) or 'defaults'}" for m, s in chosen.items()))


if __name__ == "__main__":
    main()
