"""scripts/split_clusters.py: shared clusters split into runs of whole layers balanced by count,
each part with a medoid (the cluster's where it falls, else the part's first member); unshared
clusters and other fields untouched; --first-member-pivots sets pivot_is_medoid false in every
entry; bad arguments refused by name."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "split_clusters.py")

MAP = {
    "format": "shareprefill.clusters/7",
    "model": "toy",
    "clusters": {
        "a": [[1, 0], [1, 1], [2, 0], [3, 1], [4, 0], [4, 1], [5, 0], [6, 1]],
        "b": [[2, 1], [2, 2]],
        "c": [[0, 2], [7, 0]],
    },
    "shared_clusters": ["a", "b"],
    "medoids": {"a": [4, 0], "b": [2, 2], "c": [0, 2]},
    "thresholds": [{"from_tokens": 0, "tau_sim": 0.5, "pivot_is_medoid": True},
                   {"from_tokens": 100, "tau_sim": 0.1, "pivot_is_medoid": True}],
}


def run(tmp_path, *args, source=MAP):
    src = tmp_path / "map.json"
    src.write_text(json.dumps(source))
    out = tmp_path / "out.json"
    r = subprocess.run([sys.executable, SCRIPT, str(src), "--out", str(out), *args],
                       capture_output=True, text=True)
    return r, (json.loads(out.read_text()) if r.returncode == 0 else None)


def test_two_parts_cut_between_layers_by_count(tmp_path):
    r, m = run(tmp_path, "--parts", "2")
    assert r.returncode == 0, r.stderr
    assert m["shared_clusters"] == ["a.1", "a.2", "b"]
    assert m["clusters"]["a.1"] == [[1, 0], [1, 1], [2, 0], [3, 1]]
    assert m["clusters"]["a.2"] == [[4, 0], [4, 1], [5, 0], [6, 1]]
    assert m["clusters"]["b"] == [[2, 1], [2, 2]]      # one layer: one part
    assert m["clusters"]["c"] == [[0, 2], [7, 0]]      # unshared: as it was
    assert m["medoids"] == {"a.1": [1, 0], "a.2": [4, 0], "b": [2, 2], "c": [0, 2]}
    assert m["thresholds"] == MAP["thresholds"] and m["model"] == "toy"


def test_parts_never_share_a_layer_and_cover_every_member(tmp_path):
    for parts in (3, 4, 6, 10):
        r, m = run(tmp_path, "--parts", str(parts))
        assert r.returncode == 0, r.stderr
        names = [c for c in m["clusters"] if c.startswith("a.")]
        assert 1 < len(names) <= min(parts, 6)
        runs = [m["clusters"][c] for c in names]
        assert sorted(sum(runs, [])) == sorted(MAP["clusters"]["a"])
        for x, y in zip(runs, runs[1:]):
            assert max(l for l, _ in x) < min(l for l, _ in y)


def test_one_part_and_first_member_pivots(tmp_path):
    r, m = run(tmp_path, "--parts", "1", "--first-member-pivots")
    assert r.returncode == 0, r.stderr
    assert m["clusters"] == MAP["clusters"] and m["shared_clusters"] == ["a", "b"]
    assert [e["pivot_is_medoid"] for e in m["thresholds"]] == [False, False]
    assert [e["tau_sim"] for e in m["thresholds"]] == [0.5, 0.1]


def test_bad_arguments_are_named(tmp_path):
    r, _ = run(tmp_path, "--parts", "0")
    assert r.returncode != 0 and "--parts must be >= 1" in r.stderr
    r, _ = run(tmp_path, "--parts", "2", source={"format": "x"})
    assert r.returncode != 0 and "no \"clusters\" object" in r.stderr
    no_thresholds = {k: v for k, v in MAP.items() if k != "thresholds"}
    r, _ = run(tmp_path, "--parts", "2", "--first-member-pivots", source=no_thresholds)
    assert r.returncode != 0 and "needs a map with \"thresholds\"" in r.stderr
