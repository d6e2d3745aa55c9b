"""scripts/needle_compare.py on made-up needle rows: retrieval as dense, distances, densities and
the cells closer than a reference mode, per file, mode and gamma; missing cells and files without
dense rows are refused by name."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "needle_compare.py")


def row(mode, depth, needle, logp, correct, density=1.0, gamma=None):
    return {"mode": mode, "length": 8192, "depth": depth, "needle_index": needle, "gamma": gamma,
            "answer_logprob": logp, "correct": correct, "density": density}


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_runs_are_compared_cell_by_cell(tmp_path):
    sp = write(tmp_path / "sp.jsonl", [
        row("dense", 0.25, 0, -10.0, True), row("dense", 0.75, 1, -4.0, False),
        row("shareprefill", 0.25, 0, -10.5, True, 0.4, 0.95),   # 0.5 off, same retrieval
        row("shareprefill", 0.75, 1, -3.0, True, 0.5, 0.95),    # 1.0 off, retrieval differs
        row("shareprefill", 0.25, 0, -10.1, True, 0.5, 0.96),
        row("shareprefill", 0.75, 1, -4.1, False, 0.6, 0.96)])
    vs = write(tmp_path / "vs.jsonl", [
        row("vslash", 0.25, 0, -10.2, True, 0.45, 0.95), row("vslash", 0.75, 1, -4.4, False, 0.45, 0.95)])
    p = run("--json", "--reference", "vslash", sp, vs)
    assert p.returncode == 0, p.stderr
    got = {(s["mode"], s["gamma"]): s for s in map(json.loads, p.stdout.splitlines())}
    a, b, v = got[("shareprefill", 0.95)], got[("shareprefill", 0.96)], got[("vslash", 0.95)]
    assert (a["cells"], a["same"], a["correct"], a["dense_correct"]) == (2, 1, 2, 1)
    assert abs(a["distance"] - 0.75) < 1e-12 and abs(a["density"] - 0.45) < 1e-12
    assert a["closer_than_reference"] == 0  # vslash is 0.2 and 0.4 off
    assert b["closer_than_reference"] == 2 and abs(b["distance"] - 0.1) < 1e-12
    assert "closer_than_reference" not in v and v["same"] == 2
    text = run("--reference", "vslash", sp, vs)
    assert text.returncode == 0 and "closer than vslash in 2" in text.stdout
    # Two vslash runs: the mode is ambiguous, the file is not.
    vs2 = write(tmp_path / "vs2.jsonl", [
        row("vslash", 0.25, 0, -10.0, True, 0.5, 0.95), row("vslash", 0.75, 1, -4.0, False, 0.5, 0.95)])
    p = run("--reference", "vslash", sp, vs, vs2)
    assert p.returncode != 0 and "2 runs of that mode or file" in p.stderr
    p = run("--json", "--reference", vs, sp, vs, vs2)
    assert p.returncode == 0, p.stderr
    got = [json.loads(l) for l in p.stdout.splitlines()]
    assert [s["closer_than_reference"] for s in got if s["file"] == vs2] == [2]


def test_bad_inputs_are_named(tmp_path):
    dense = row("dense", 0.5, 0, -1.0, True)
    no_dense = write(tmp_path / "a.jsonl", [row("vslash", 0.5, 0, -1.0, True, 0.4, 0.9)])
    p = run(no_dense)
    assert p.returncode != 0 and "no dense rows" in p.stderr
    short = write(tmp_path / "b.jsonl", [dense, row("dense", 0.9, 0, -2.0, True),
                                         row("vslash", 0.5, 0, -1.0, True, 0.4, 0.9)])
    p = run(short)
    assert p.returncode != 0 and "has no row for cells" in p.stderr
    twice = write(tmp_path / "c.jsonl", [dense, dense])
    p = run(twice)
    assert p.returncode != 0 and "a second dense row" in p.stderr
    junk = tmp_path / "d.jsonl"
    junk.write_text('{"mode": "dense"}\n')
    p = run(str(junk))
    assert p.returncode != 0 and "d.jsonl:1: not a needle row" in p.stderr


def test_differing_cells_name_where_the_answers_part(tmp_path):
    dense = dict(row("dense", 0.5, 0, -13.5, True), generated_tokens=[5, 6, 7],
                 margins=[4.0, 0.25, 3.0, 1.0])
    near = dict(row("shareprefill", 0.5, 0, -13.4, False, 0.45, 0.95), generated_tokens=[5, 9],
                margins=[3.5, 0.125, 2.0])
    same = dict(row("dense", 0.9, 0, -9.0, False), generated_tokens=[1], margins=[2.0])
    also = dict(row("shareprefill", 0.9, 0, -9.5, False, 0.45, 0.95), generated_tokens=[1],
                margins=[1.5])
    p = run("--json", write(tmp_path / "a.jsonl", [dense, near, same, also]))
    assert p.returncode == 0, p.stderr
    (s,) = map(json.loads, p.stdout.splitlines())
    assert s["differing"] == [{"cell": [8192, 0.5, 0], "dense_correct": True, "step": 1,
                               "dense_margin": 0.25, "margin": 0.125}]
    # Rows without tokens (older runs) still compare, the parting unknown.
    old = run(write(tmp_path / "b.jsonl", [row("dense", 0.5, 0, -1.0, True),
                                           row("vslash", 0.5, 0, -1.5, False, 0.4, 0.9)]))
    assert old.returncode == 0 and "parts at step -, margin there dense -" in old.stdout
