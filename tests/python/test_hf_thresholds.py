"""Planner thresholds per prompt length (a format-4 cluster map) in the HF backend, without
torch: the planner factory enable() uses and the Backend's planners per batch row."""
import os

import pytest

import shareprefill as sp
import shareprefill.hf as hf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS_MAP = os.path.join(REPO, "data", "clusters", "smollm2-135m-instruct-head-settings.json")


def settings_map():
    cmap = sp.ClusterMap.load(SETTINGS_MAP)
    assert [e["from_tokens"] for e in cmap.thresholds] == [0, 24576]
    return cmap


def test_each_length_takes_the_maps_entry():
    cmap = settings_map()
    new_planner, entry_for = hf.planner_factory(cmap, "shareprefill", 30, {"gamma": 0.9})
    assert entry_for(8192)["from_tokens"] == 0 and entry_for(24575)["from_tokens"] == 0
    assert entry_for(24576)["from_tokens"] == 24576 and entry_for(131072)["from_tokens"] == 24576
    short, long = new_planner(8192).params, new_planner(32768).params
    want = {e["from_tokens"]: e for e in cmap.thresholds}
    for params, entry in ((short, want[0]), (long, want[24576])):
        for key in ("tau_sim", "tau_qa", "min_budget"):
            assert params[key] == pytest.approx(entry[key]), key
        assert params["gamma"] == pytest.approx(0.9)  # the caller's other settings stay
    assert long["tau_sim"] != short["tau_sim"]


def test_the_maps_entries_set_medoid_pivots():
    new_planner, _ = hf.planner_factory(settings_map(), "shareprefill", 30, {})
    assert new_planner(8192).params["pivot_is_medoid"]
    assert new_planner(32768).params["pivot_is_medoid"]
    # Naming the pivot rule makes the map's entries give way, thresholds included.
    new_planner, entry_for = hf.planner_factory(settings_map(), "shareprefill", 30,
                                                {"pivot_is_medoid": False})
    assert entry_for is None
    params = new_planner(32768).params
    assert not params["pivot_is_medoid"] and params["min_budget"] == 1024


def test_explicit_thresholds_replace_the_maps_for_every_length():
    new_planner, entry_for = hf.planner_factory(settings_map(), "shareprefill", 30,
                                                {"min_budget": 512})
    assert entry_for is None
    for tokens in (8192, 32768):
        params = new_planner(tokens).params
        assert params["min_budget"] == 512 and params["tau_sim"] == pytest.approx(0.5)


def test_maps_without_thresholds_plan_as_before():
    cmap = sp.ClusterMap.load(os.path.join(REPO, "data", "clusters", "smollm2-135m-instruct.json"))
    assert cmap.thresholds == []
    new_planner, entry_for = hf.planner_factory(cmap, "shareprefill", 30, {})
    assert entry_for is None and new_planner(32768).params["min_budget"] == 1024


def test_backend_refits_a_rows_planner_when_its_length_crosses_an_entry():
    new_planner, entry_for = hf.planner_factory(settings_map(), "shareprefill", 30, {})
    backend = hf.Backend(new_planner(0), 2, new_planner, entry_for)
    backend.begin_layer(0, (8192,))
    first = backend.planner
    backend.begin_layer(1, (8192,))
    backend.begin_layer(0, (8000,))  # a new prompt, same entry: the planner stays
    assert backend.planner is first
    backend.begin_layer(0, (32768, 8192))  # a new prompt of two rows
    row0, row1 = backend.planners_for(2)
    assert row0 is not first and row0.params["min_budget"] == 2048
    assert row1.params["min_budget"] == 1024
    backend.begin_layer(0, (1000, 30000))
    row0, row1 = backend.planners_for(2)
    assert row0.params["min_budget"] == 1024 and row1.params["min_budget"] == 2048


def test_gate_bins_is_not_a_length_threshold():
    # The pooled sharing gate rides along with the map's entries instead of replacing them.
    new_planner, entry_for = hf.planner_factory(settings_map(), "shareprefill", 30,
                                                {"gate_bins": 64})
    assert entry_for is not None
    assert new_planner(32768).params["gate_bins"] == 64
    assert new_planner(32768).params["min_budget"] == 2048
    with pytest.raises(sp.Error, match="gate_bins must be in"):
        sp.Planner(mode="vslash", gate_bins=-1)


def settings_map_with_entry_dense_heads(tmp_path):
    """The settings map as format 6, with dense heads 10:0 and 28:4 in its entry from 0 tokens."""
    data = settings_map().to_json()
    data["format"] = "shareprefill.clusters/6"
    data["thresholds"][0]["dense_heads"] = [[10, 0], [28, 4]]
    path = tmp_path / "v6.json"
    path.write_text(__import__("json").dumps(data))
    return sp.ClusterMap.load(str(path))


def test_an_entrys_dense_heads_run_dense_at_its_lengths(tmp_path):
    """Format 6: a settings entry's dense heads join the map's own for prompts it covers, and a
    Planner takes more dense heads by keyword."""
    cmap = settings_map_with_entry_dense_heads(tmp_path)
    assert cmap.thresholds_for(8192)["dense_heads"] == [(10, 0), (28, 4)]
    assert "dense_heads" not in cmap.thresholds_for(32768)
    new_planner, _ = hf.planner_factory(cmap, "shareprefill", 30, {})
    own = [list(h) for h in cmap.dense_heads]
    short, long = new_planner(8192).params, new_planner(32768).params
    assert sorted(map(list, short["dense_heads"])) == sorted(own + [[10, 0], [28, 4]])
    assert sorted(map(list, long["dense_heads"])) == sorted(own)
    assert [10, 0] not in [g[:2] for g in map(list, short["head_gammas"])]
    with pytest.raises(sp.Error):
        sp.Planner(cmap, "shareprefill", layers=30, dense_heads=[(30, 0)])  # no layer 30


def test_thresholds_given_say_the_entries_dense_heads_go_too(tmp_path):
    """Naming a threshold makes every entry give way, its dense heads too: a warning says so."""
    cmap = settings_map_with_entry_dense_heads(tmp_path)
    with pytest.warns(UserWarning, match="tau_qa given.*with the 2 dense heads of its entries"):
        new_planner, entry_for = hf.planner_factory(cmap, "shareprefill", 30, {"tau_qa": 0.1})
    assert entry_for is None
    assert sorted(map(list, new_planner(8192).params["dense_heads"])) == sorted(
        map(list, cmap.dense_heads))



def test_the_default_maps_entries_plan_the_exact_last_row():
    """Format 7: the default map's entries turn exact_last_row on at every length; an
    exact_last_row given to enable() wins over the entry's alone (the entry still applies)."""
    cmap = sp.ClusterMap.load(os.path.join(REPO, "data", "clusters",
                                           "smollm2-135m-instruct-dense-gain.json"))
    assert [e["exact_last_row"] for e in cmap.thresholds] == [True, True]
    assert [e["last_row_gamma"] for e in cmap.thresholds] == [0.99, 0.99]
    new_planner, _ = hf.planner_factory(cmap, "shareprefill", 30, {})
    assert new_planner(8192).params["exact_last_row"]
    assert new_planner(32768).params["exact_last_row"]
    assert new_planner(32768).params["last_row_gamma"] == pytest.approx(0.99)
    new_planner, entry_for = hf.planner_factory(cmap, "shareprefill", 30,
                                                {"exact_last_row": False})
    assert entry_for is not None
    params = new_planner(32768).params
    assert not params["exact_last_row"] and params["min_budget"] == 2048
    new_planner, _ = hf.planner_factory(cmap, "shareprefill", 30, {"last_row_gamma": 1.0})
    assert new_planner(8192).params["last_row_gamma"] == 1.0
    # Maps without the key leave the Planner's default (off).
    new_planner, _ = hf.planner_factory(settings_map(), "shareprefill", 30, {})
    assert not new_planner(8192).params["exact_last_row"]
