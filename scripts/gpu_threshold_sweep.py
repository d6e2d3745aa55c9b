#!/usr/bin/env python3
"""Issue 17 on the GPU: the planner's thresholds chosen on calibration texts, then evaluated.

Stage 1 (calibration texts only): for each mode, a coordinate search over the options the
device planner takes (cluster map, tau_sim, tau_qa, min_budget, medoid pivots; the ones that
mode reads), first at 8K (6 windows, target density 0.44) from the defaults, then at 32K with YaRN x4 (3 windows, target 0.30) from the 8K choice. Each
candidate is one `eval ppl --device cuda` over the calibration windows at 8 gammas; its score is
the perplexity change vs dense at the target density, linear between the two measured points
around it. A candidate whose curve does not reach the target is not taken (no extrapolation).
Stage 2 (evaluation texts, never used for a choice): each mode with its defaults and with its
choice for that length, curves at 8K on the evaluation novels (8 windows), at 32K (4 windows) and
at 8K on the held-out genre (6 windows); the table at the end gives each curve's measured
density range and its change at fixed densities inside that range ("n/a" outside it).

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
SETTINGS_MAP = "data/clusters/smollm2-135m-instruct-head-settings.json"  # per-head gammas
YARN = ["--rope-scaling", "yarn", "--rope-factor", "4"]
# Thresholds per mode: (option, default, alternatives). A flag is (option, False, [True]).
# tau_sim 0.3-0.9 and tau_fb 0.9-0.99 changed nothing on the GPU (2026-12-03: every shared head
# passed the gates), so the similarity gate is searched below 0.3 and tau_fb is left alone.
SEARCH = {
    "shareprefill": [("--clusters", MAP, [SETTINGS_MAP]), ("--tau-sim", 0.5, [0.1, 0.2]),
                     ("--tau-qa", 0.1, [0.05, 0.2]),
                     ("--min-budget", 1024, [512, 1536, 2048]), ("--pivot-medoid", True, [False])],
    "flexprefill": [("--tau-qa", 0.1, [0.05, 0.2]), ("--min-budget", 1024, [512, 1536, 2048])],
    "vslash": [("--min-budget", 1024, [512, 1536, 2048])],
}
# Where the choice is made: (name, length, windows, target density, extra options).
CALIBRATION = [("8K", 8192, 6, 0.44, ()), ("32K", 32768, 3, 0.30, YARN)]


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
           str(windows), "--modes", f"dense,{mode}", "--gammas",
           ",".join(str(g) for g in gammas), "--json", path, *options_of(dict({"--clusters": MAP}, **setting)),
           *extra]
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
    """Change (%) at `density`, linear between the curve's two neighbouring points, or None when
    `density` lies outside the measured densities (no extrapolation)."""
    pts = sorted((d, c) for _, d, c in curve)
    if not pts or density < pts[0][0] or density > pts[-1][0]:
        return None
    for (d0, c0), (d1, c1) in zip(pts, pts[1:]):
        if d0 <= density <= d1:
            return c1 if d1 == d0 else c0 + (c1 - c0) * (density - d0) / (d1 - d0)
    return pts[0][1]  # a single point equal to `density`


def density_range(curve):
    ds = [d for _, d, _ in curve]
    return f"{min(ds):.3f}-{max(ds):.3f}"


def calibrate(args, mode, texts, start, where):
    """Coordinate search from `start`: per dimension the value with the lowest change at the target
    density (candidates whose curve does not reach it, or whose run fails, are not taken)."""
    name_, length, windows, target, extra = where
    def score_of(tag, setting):
        try:
            _, curve = run_ppl(args, tag, texts, length, windows, mode, args.gammas, setting, extra)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"  {tag}: {e}")
            return None
        score = at_density(curve, target)
        print(f"  score at density {target}: " +
              (f"{score:+.3f}%" if score is not None else f"not reached ({density_range(curve)})"))
        return score
    best = dict(start)
    best_score = score_of(f"cal{name_}-{mode}-start", best)
    for name, default, alternatives in SEARCH[mode]:
        for value in [default] + alternatives:
            if value == best[name]:
                continue
            trial = dict(best, **{name: value})
            score = score_of(f"cal{name_}-{mode}{name}={os.path.basename(str(value))}", trial)
            if score is not None and (best_score is None or score < best_score):
                best, best_score = trial, score
    shown = f"{best_score:+.3f}%" if best_score is not None else "target not reached"
    print(f"== {mode} at {name_}: chosen {' '.join(options_of(best))} (calibration score {shown})")
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--out", default="/tmp/sp-sweep")
    p.add_argument("--quick", action="store_true", help="8K calibration only, fewer gammas")
    args = p.parse_args()
    args.gammas = ([0.9, 0.94, 0.98] if args.quick else [0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.98])
    os.makedirs(args.out, exist_ok=True)
    t = lambda names: [os.path.join(args.texts, f"{n}.txt") for n in names]
    calib = t(["sensesensibility", "mansfieldpark", "northangerabbey"])
    novels = t(["prideprejudice", "emma", "persuasion"])
    heldout = t(["kjv-heldout"])
    for f in calib + novels + heldout:
        if not os.path.isfile(f):
            sys.exit(f"missing {f}")

    chosen = {}
    for where in CALIBRATION[:1] if args.quick else CALIBRATION:
        name, length, windows, target, _ = where
        print(f"== stage 1: thresholds chosen on the calibration texts ({name}, {windows} windows, "
              f"target density {target})")
        for mode in SEARCH:
            start = chosen.get((mode, "8K")) or {n: d for n, d, _ in SEARCH[mode]}
            chosen[(mode, name)] = calibrate(args, mode, calib, start, where)
    if args.quick:
        return
    print("== stage 2: evaluation (texts never used for a choice)")
    table = []
    for mode in SEARCH:
        defaults = {n: d for n, d, _ in SEARCH[mode]}
        for name, texts, length, windows, extra, densities, chosen_at in (
                ("novels 8K", novels, 8192, 8, (), (0.40, 0.44), "8K"),
                ("novels 32K", novels, 32768, 4, YARN, (0.25, 0.30), "32K"),
                ("KJV 8K", heldout, 8192, 6, (), (0.40, 0.44), "8K")):
            settings = [("defaults", defaults)]
            if chosen[(mode, chosen_at)] != defaults:
                settings.append((f"chosen {chosen_at}", chosen[(mode, chosen_at)]))
            for label, setting in settings:
                tag = f"eval-{mode}-{label.replace(' ', '')}-{name.replace(' ', '')}"
                try:
                    _, curve = run_ppl(args, tag, texts, length, windows, mode, args.gammas,
                                       setting, extra)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"  {tag}: {e}")
                    continue
                table.append((name, mode, label, density_range(curve),
                              [(d, at_density(curve, d)) for d in densities]))
    print("== change vs dense at fixed densities, linear between measured points (evaluation texts)")
    print(f"{'texts':11s} {'mode':13s} {'thresholds':11s} {'measured':12s} changes")
    for name, mode, label, measured, points in table:
        print(f"{name:11s} {mode:13s} {label:11s} {measured:12s} " + "  ".join(
            f"{c:+.3f}% at {d:.2f}" if c is not None else f"   n/a   at {d:.2f}" for d, c in points))
    for (mode, where), setting in chosen.items():
        print(f"chosen at {where}: {mode} {' '.join(options_of(setting))}")


if __name__ == "__main__":
    main()
