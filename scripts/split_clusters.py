#!/usr/bin/env python3
"""Several pivots per shared cluster (issue 17, item 4): a copy of a cluster map whose shared
clusters are each split into up to PARTS clusters of consecutive layers (cut only between layers,
members balanced by count), so each part gets a pivot of its own, nearer in depth to its members.

Each part's medoid is the cluster's medoid where it falls in that part, else the part's first
member (the map has no distances to choose a better one); with --first-member-pivots every
thresholds entry sets pivot_is_medoid false, so every part's pivot is its first member the
planner meets (the paper's rule), the same rule for one part and for several. Parts are named
ID.1, ID.2, ... (a cluster within one layer stays whole, under its id); unshared clusters and
every other field are copied as they are.

usage: split_clusters.py MAP --parts K --out OUT [--first-member-pivots]
"""
import argparse
import json
import sys


def split_members(members, parts):
    """Members (sorted [layer, head] pairs) in up to `parts` runs of whole layers, by count."""
    layers = sorted({m[0] for m in members})
    parts = max(1, min(parts, len(layers)))
    runs = [[]]
    for i, layer in enumerate(layers):
        runs[-1] += [m for m in members if m[0] == layer]
        done = sum(len(r) for r in runs)
        layers_left, runs_left = len(layers) - i - 1, parts - len(runs)
        # Close the run at its share of the members, or when each later run needs a layer left.
        if runs_left and (done * parts >= len(members) * len(runs) or layers_left == runs_left):
            runs.append([])
    return runs


def split_map(m, parts, first_member_pivots):
    out = dict(m)
    clusters, medoids, shared = {}, {}, []
    for cid, members in m["clusters"].items():
        members = sorted(members)
        runs = split_members(members, parts)
        if cid not in m.get("shared_clusters", []) or len(runs) == 1:
            clusters[cid] = members
            if cid in m.get("medoids", {}):
                medoids[cid] = m["medoids"][cid]
            if cid in m.get("shared_clusters", []):
                shared.append(cid)
            continue
        for i, run in enumerate(runs, start=1):
            pid = f"{cid}.{i}"
            clusters[pid] = run
            shared.append(pid)
            medoid = m.get("medoids", {}).get(cid)
            medoids[pid] = medoid if medoid in run else run[0]
    out["clusters"] = clusters
    out["shared_clusters"] = shared
    if "medoids" in m:
        out["medoids"] = medoids
    if first_member_pivots:
        out["thresholds"] = [dict(e, pivot_is_medoid=False) for e in m.get("thresholds", [])]
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("map")
    ap.add_argument("--parts", type=int, required=True, help="parts per shared cluster (>= 1)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--first-member-pivots", action="store_true",
                    help="every thresholds entry: pivot_is_medoid false")
    a = ap.parse_args(argv)
    if a.parts < 1:
        ap.error(f"--parts must be >= 1, got {a.parts}")
    with open(a.map) as f:
        m = json.load(f)
    if not isinstance(m.get("clusters"), dict):
        ap.error(f"{a.map}: no \"clusters\" object (not a cluster map?)")
    if a.first_member_pivots and not m.get("thresholds"):
        ap.error(f"{a.map}: --first-member-pivots needs a map with \"thresholds\" entries")
    out = split_map(m, a.parts, a.first_member_pivots)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    before = len(m.get("shared_clusters", []))
    print(f"{a.out}: {before} shared clusters -> {len(out['shared_clusters'])} "
          f"({a.parts} parts at most each)")


if __name__ == "__main__":
    main(sys.argv[1:])
