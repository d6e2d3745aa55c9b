"""Per-kernel table of the device planner from an Nsight Compute CSV (gpu-planner-profile.sh).

Usage: planner_kernel_table.py CSV SHAPE KEEP
CSV: `ncu --csv --print-kernel-base function --metrics gpu__time_duration.sum` of the Timing
test in profile mode (2 shareprefill layers). A layer starts at the first statistics kernel after
any other kernel; publish kernels are those of plan_publish.cu. Prints per kernel name the
launches and microseconds per layer, and appends every launch (layer, order, name, grid, block,
us) to KEEP.
"""
import csv
import sys

PUBLISH = {"pattern_rows_kernel", "vs_ratio_kernel", "publish_segments_kernel", "pattern_kernel"}
SCALE = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
         "second": 1e6, "s": 1e6}


def launches(path):
    rows = [line for line in open(path, errors="replace") if line.startswith('"')]
    out = []
    for r in csv.DictReader(rows):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        out.append((r["Kernel Name"], r["Grid Size"], r["Block Size"],
                    value * SCALE.get(r["Metric Unit"], 1.0)))
    return out


def main():
    path, shape, keep = sys.argv[1:4]
    layer, prev, table, order = -1, None, {}, []
    with open(keep, "a") as f:
        for i, (name, grid, block, us) in enumerate(launches(path)):
            if name.startswith("last_block_stats_kernel") and not (prev or "").startswith("last_block_stats"):
                layer += 1
            prev = name
            phase = "publish" if name in PUBLISH else "plan"
            f.write(f"KERNEL shape={shape} layer={layer} i={i} phase={phase} {name} grid={grid} "
                    f"block={block} us={us:.2f}\n")
            key = (phase, name)
            if key not in table:
                order.append(key)
            t = table.setdefault(key, {})
            n, s = t.get(layer, (0, 0.0))
            t[layer] = (n + 1, s + us)
    layers = sorted({l for t in table.values() for l in t})
    head = " ".join(f"{'n L' + str(l):>5} {'us L' + str(l):>9}" for l in layers)
    print(f"shape {shape}: {'phase':<8}{'kernel':<44}{head}")
    totals = {l: [0, 0.0, 0.0] for l in layers}
    for key in order:
        cells = []
        for l in layers:
            n, s = table[key].get(l, (0, 0.0))
            cells.append(f"{n:>5} {s:>9.1f}")
            totals[l][0] += n
            totals[l][1 if key[0] == "plan" else 2] += s
        print(f"{'':9}{key[0]:<8}{key[1][:43]:<44}{' '.join(cells)}")
    for l in layers:
        n, plan, pub = totals[l]
        print(f"shape {shape} layer {l}: {n} launches, plan kernels {plan:.1f} us, "
              f"publish kernels {pub:.1f} us")


if __name__ == "__main__":
    main()
