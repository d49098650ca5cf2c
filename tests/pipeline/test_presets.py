import numpy as np
import pandas as pd
import pytest

from pipeline.presets import (
    PRESETS,
    assign_stages,
    fixed_bins,
    model_levels,
    quantile_bins,
    quantile_edges,
    strict_band,
)
from pipeline.strata import SOLVED, UNSOLVED


def labels(counts, model="small", trials=None):
    """A PassRate-like frame for one model: counts are successes out of `trials` (default 8)."""
    n = trials or 8
    ids = [f"p{i}" for i in range(len(counts))]
    return pd.DataFrame({
        "problem_id": ids, "successes": counts, "trials": n,
        "pass_rate": [c / n for c in counts],
        "model_id": f"org/{model}", "revision": "r1", "label_key": f"{model}@r1/s/v",
    })


def stages(frame):
    return dict(zip(frame["problem_id"], frame["stage"]))


def test_quantile_bins_split_the_staged_pool_evenly():
    frame = quantile_bins(labels([12, 0, *range(1, 10)], trials=12), n_stages=3)
    got = stages(frame)
    assert got["p0"] == SOLVED and got["p1"] == UNSOLVED
    staged = frame[frame["stage"] > 0]
    assert staged.groupby("stage").size().tolist() == [3, 3, 3]
    # easier stages hold higher pass rates
    means = staged.groupby("stage")["pass_rate"].mean()
    assert means.is_monotonic_decreasing
    assert set(frame["stage_name"]) >= {"solved", "unsolved"}


def test_quantile_bins_send_ties_at_an_edge_to_the_harder_stage():
    # staged rates 1,1,2,2,4,4,6,6,7,7 / 8: the 1/3 and 2/3 quantiles land on 0.25 and 0.75 exactly
    frame = quantile_bins(labels([1, 1, 2, 2, 4, 4, 6, 6, 7, 7]), n_stages=3)
    by_stage = frame.groupby("stage")["pass_rate"].apply(sorted).to_dict()
    assert by_stage == {1: [0.875] * 2, 2: [0.5, 0.5, 0.75, 0.75], 3: [0.125, 0.125, 0.25, 0.25]}


def test_quantile_edges_merge_ties_and_stay_valid():
    assert quantile_edges([0.5] * 6, 4) == (1.0, 0.5, 0.0)
    edges = quantile_edges(np.linspace(0.1, 0.9, 9), 2)
    assert edges[0] == 1.0 and edges[-1] == 0.0 and len(edges) == 3
    assert edges[1] == pytest.approx(0.5)


def test_quantile_bins_can_keep_solved_and_unsolved():
    frame = quantile_bins(labels([8, 0, 4]), n_stages=2, include_solved=True, include_unsolved=True)
    got = stages(frame)
    assert got["p0"] == 1 and got["p1"] == frame["stage"].max()
    assert (frame["stage"] > 0).all()


def test_fixed_bins_follow_reasoning360():
    # p = 1, 0, 0.125, 0.25, 0.5, 0.75, 0.875 with width 0.2
    frame = fixed_bins(labels([8, 0, 1, 2, 4, 6, 7]))
    assert stages(frame) == {"p0": SOLVED, "p1": UNSOLVED, "p2": 5, "p3": 4, "p4": 3, "p5": 2, "p6": 1}
    names = dict(zip(frame["problem_id"], frame["stage_name"]))
    assert names["p6"] == "(0.8, 1)" and names["p2"] == "(0, 0.2]"

    both = fixed_bins(labels([8, 0, 1, 7]), include_solved=True, include_unsolved=True)
    got = stages(both)
    assert got["p0"] == 1 and got["p3"] == 2 and got["p2"] == 6 and got["p1"] == 7
    assert dict(zip(both["problem_id"], both["stage_name"]))["p1"] == "p = 0"


def test_fixed_bins_reject_uneven_width():
    with pytest.raises(ValueError):
        fixed_bins(labels([1]), width=0.3)


def test_strict_band_keeps_only_mixed_outcomes():
    frame = strict_band(labels([8, 0, 1, 4, 7]))
    assert stages(frame) == {"p0": SOLVED, "p1": UNSOLVED, "p2": 1, "p3": 1, "p4": 1}
    narrow = strict_band(labels([8, 0, 1, 4, 7]), low=0.2, high=0.8)
    assert stages(narrow) == {"p0": SOLVED, "p1": UNSOLVED, "p2": UNSOLVED, "p3": 1, "p4": SOLVED}


def test_single_model_presets_refuse_mixed_label_keys():
    mixed = pd.concat([labels([1, 2], "small"), labels([3, 4], "large")])
    with pytest.raises(ValueError, match="label keys"):
        strict_band(mixed)
    picked = strict_band(mixed, label_key="large@r1/s/v")
    assert picked["pass_rate"].tolist() == [3 / 8, 4 / 8]


def test_model_levels_l1_l2_l3():
    # problems:      p0 p1 p2 p3 p4 p5
    small = labels([3, 8, 0, 0, 0, 0], "small")
    medium = labels([8, 8, 2, 0, 0, 0], "medium")
    large = labels([8, 8, 6, 4, 1, 0], "large")
    pool = pd.concat([small, medium, large])
    frame = model_levels(pool, ["small@r1/s/v", "org/medium", "org/large"])
    assert stages(frame) == {"p0": 1, "p1": SOLVED, "p2": 2, "p3": 2, "p4": 2, "p5": 3}
    assert dict(zip(frame["problem_id"], frame["stage_name"]))["p5"] == "L3"
    assert frame.set_index("problem_id").loc["p0", "pass_rate"] == 3 / 8

    # "rarely": the large model solving 1 in 8 no longer lifts a problem out of L3
    rare = model_levels(pool, ["org/small", "org/medium", "org/large"], rarely=0.125)
    assert stages(rare)["p4"] == 3 and stages(rare)["p3"] == 2


def test_model_levels_leave_out_problems_a_model_did_not_label():
    small = labels([3, 0, 0], "small")
    large = labels([8, 4, 0], "large").iloc[:2]
    frame = model_levels(pd.concat([small, large]), ["org/small", "org/large"])
    assert sorted(frame["problem_id"]) == ["p0", "p1"]


def test_model_levels_need_distinct_known_models():
    pool = pd.concat([labels([1], "small"), labels([2], "large")])
    with pytest.raises(ValueError):
        model_levels(pool, ["org/small"])
    with pytest.raises(ValueError, match="matches no labels"):
        model_levels(pool, ["org/small", "org/missing"])
    with pytest.raises(ValueError, match="twice"):
        model_levels(pool, ["org/small", "small@r1/s/v"])


def test_presets_are_selectable_by_name():
    pool = labels([8, 0, 4])
    assert set(PRESETS) == {"quantile", "fixed", "strict_band", "model_levels"}
    pd.testing.assert_frame_equal(assign_stages(pool, "strict_band", low=0.0), strict_band(pool))
    with pytest.raises(ValueError, match="unknown strata preset"):
        assign_stages(pool, "nope")
