#!/usr/bin/env python3
"""Needle results of several runs against dense, cell by cell (docs/RESULTS.md's needle tables).

Reads the JSON lines of `shareprefill eval needle --json FILE` runs over the same haystack and
needles (one file may hold several modes and gammas; the dense rows may sit in any of them) and
prints one line per (file, mode, gamma): the cells compared, retrieval as dense ("same"), correct
answers, the mean |answer log-probability - dense's| ("distance") and the mean density; with
--reference MODE (or one of the files) also in how many cells each run's answer log-probability
is closer to dense than that run's. A cell is (length, depth, needle index); a run that misses a cell dense has,
or two dense rows for one cell, is an error. Each cell whose retrieval differs from dense's is
listed under its run with the first greedy step where the two answers part and both runs'
margins there (the chosen logit's lead over the runner-up; rows written before eval needle kept
its tokens and margins show "-"): a small dense margin says the cell is a near-tie.

    scripts/needle_compare.py [--reference vslash|FILE] [--json] RUN.jsonl [RUN.jsonl ...]
"""
import argparse
import json
import sys


def cell(row):
    return (row["length"], row["depth"], row["needle_index"])


def load(paths):
    """{(file, mode, gamma): {cell: row}} for the sparse rows and {cell: row} for dense."""
    runs, dense = {}, {}
    for path in paths:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = cell(row)
                    row["answer_logprob"], row["correct"], row["mode"]
                except (ValueError, KeyError) as e:
                    sys.exit(f"{path}:{n}: not a needle row ({e})")
                if row["mode"] == "dense":
                    if key in dense:
                        sys.exit(f"{path}:{n}: a second dense row for cell {key}")
                    dense[key] = row
                else:
                    runs.setdefault((path, row["mode"], row.get("gamma")), {})[key] = row
    if not dense:
        sys.exit("no dense rows in " + ", ".join(paths))
    return runs, dense


def parting(row, ref):
    """The first greedy step where row's answer leaves ref's, with both margins there (None
    where the rows carry no tokens or margins)."""
    a, b = row.get("generated_tokens"), ref.get("generated_tokens")
    if a is None or b is None or "margins" not in row or "margins" not in ref:
        return {"step": None, "dense_margin": None, "margin": None}
    step = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    pick = lambda m: m[step] if step < len(m) else None
    return {"step": step, "dense_margin": pick(ref["margins"]), "margin": pick(row["margins"])}


def summarise(runs, dense, reference):
    ref_rows = None
    if reference:
        refs = [rows for (path, mode, _), rows in runs.items() if reference in (mode, path)]
        if len(refs) != 1:
            sys.exit(f"--reference {reference}: {len(refs)} runs of that mode or file, need "
                     "exactly one")
        ref_rows = refs[0]
    out = []
    for (path, mode, gamma), rows in runs.items():
        missing = sorted(set(dense) - set(rows))
        if missing:
            sys.exit(f"{path}: {mode} at gamma {gamma} has no row for cells {missing[:3]}")
        dist = {k: abs(rows[k]["answer_logprob"] - d["answer_logprob"]) for k, d in dense.items()}
        s = {"file": path, "mode": mode, "gamma": gamma, "cells": len(dense),
             "same": sum(rows[k]["correct"] == d["correct"] for k, d in dense.items()),
             "correct": sum(bool(rows[k]["correct"]) for k in dense),
             "dense_correct": sum(bool(d["correct"]) for d in dense.values()),
             "distance": sum(dist.values()) / len(dist),
             "density": sum(rows[k]["density"] for k in dense) / len(dense),
             "differing": [dict(cell=list(k), dense_correct=bool(d["correct"]),
                                **parting(rows[k], d))
                           for k, d in sorted(dense.items()) if rows[k]["correct"] != d["correct"]]}
        if ref_rows is not None and rows is not ref_rows:
            s["closer_than_reference"] = sum(
                dist[k] < abs(ref_rows[k]["answer_logprob"] - dense[k]["answer_logprob"])
                for k in dense)
        out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="eval needle JSON lines, same haystack and needles")
    ap.add_argument("--reference", help="a mode, or one of the files, to count cells closer to "
                    "dense than (its one run)")
    ap.add_argument("--json", action="store_true", help="one JSON object per run instead of text")
    a = ap.parse_args()
    runs, dense = load(a.runs)
    for s in summarise(runs, dense, a.reference):
        if a.json:
            print(json.dumps(s))
            continue
        closer = (f"  closer than {a.reference} in {s['closer_than_reference']}"
                  if "closer_than_reference" in s else "")
        gamma = "-" if s["gamma"] is None else f"{s['gamma']:.2f}"
        print(f"{s['mode']:12s} gamma {gamma}  same {s['same']}/{s['cells']}  correct "
              f"{s['correct']} (dense {s['dense_correct']})  distance {s['distance']:.3f}  "
              f"density {s['density']:.3f}{closer}  [{s['file']}]")
        show = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
        for c in s["differing"]:
            print(f"    differs at {tuple(c['cell'])} (dense {'right' if c['dense_correct'] else 'wrong'}):"
                  f" parts at step {show(c['step'])}, margin there dense {show(c['dense_margin'])},"
                  f" this run {show(c['margin'])}")


if __name__ == "__main__":
    main()
