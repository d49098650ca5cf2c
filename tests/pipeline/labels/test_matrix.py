import math
from dataclasses import replace

import pandas as pd
import pytest

from pipeline.core.model import ModelSpec
from pipeline.engines.base import SamplingConfig
from pipeline.labels.matrix import CrossModelSelection, difficulty_matrix, model_difficulty
from pipeline.labels.pass_rates import LabelTarget, pass_rates

SMOL = LabelTarget(ModelSpec("/s", "smol", "r1"), SamplingConfig(), "v1")
GEMMA = replace(SMOL, model=ModelSpec("/g", "gemma", "g1"))


def labels_for(target: LabelTarget, outcomes: dict[str, list[bool]], at: str) -> pd.DataFrame:
    rewards = pd.DataFrame([(pid, ok) for pid, results in outcomes.items() for ok in results],
                           columns=["problem_id", "passed"])
    return pass_rates(rewards, target).assign(labelled_at=at)


def test_one_column_group_per_model_with_rates_intervals_and_trials():
    smol = labels_for(SMOL, {"a": [True, False], "b": [False, False]}, "2026-01-01")
    gemma = labels_for(GEMMA, {"a": [True, True, True, True], "c": [False, True, True, True]}, "2026-01-02")
    matrix = difficulty_matrix([smol, gemma])
    assert matrix.groups[["name", "model_id", "revision", "problems"]].to_dict("records") == [
        {"name": "smol", "model_id": "smol", "revision": "r1", "problems": 2},
        {"name": "gemma", "model_id": "gemma", "revision": "g1", "problems": 2}]
    assert matrix.groups["mean_pass_rate"].tolist() == [0.25, 0.875]
    assert list(matrix.values.index) == ["a", "b", "c"]
    assert matrix.values[("smol", "pass_rate")].tolist()[:2] == [0.5, 0.0]
    assert math.isnan(matrix.values.loc["c", ("smol", "pass_rate")])  # unknown, not 0
    assert matrix.values[("gemma", "trials")].astype(float).fillna(-1).tolist() == [4.0, -1.0, 4.0]
    low, high = matrix.values.loc["a", ("smol", "ci_low")], matrix.values.loc["a", ("smol", "ci_high")]
    assert low == smol.set_index("problem_id").loc["a", "ci_low"] and high == smol.set_index("problem_id").loc["a", "ci_high"]
    assert list(matrix.flat().columns) == ["problem_id", "smol.pass_rate", "smol.ci_low", "smol.ci_high", "smol.trials",
                                           "gemma.pass_rate", "gemma.ci_low", "gemma.ci_high", "gemma.trials"]


def test_two_revisions_of_one_model_are_named_by_revision_and_the_latest_label_wins():
    base = labels_for(SMOL, {"a": [False, False]}, "2026-01-01")
    again = labels_for(SMOL, {"a": [True, False]}, "2026-01-03")
    step = labels_for(replace(SMOL, model=ModelSpec("/c", "smol", "ckpt")), {"a": [True, True]}, "2026-01-02")
    hot = labels_for(replace(SMOL, sampling=SamplingConfig(temperature=1.0)), {"a": [True, True]}, "2026-01-04")
    matrix = difficulty_matrix([base, step, again, hot])
    names = matrix.groups["name"].tolist()
    # In order of each key's current labels: the checkpoint's (Jan 2) before the relabelled base's (Jan 3).
    assert names == ["smol@ckpt", SMOL.key, hot["label_key"].iloc[0]]
    assert matrix.rates(SMOL.key).tolist() == [0.5]
    assert matrix.rates("smol@ckpt").tolist() == [1.0]
    with pytest.raises(KeyError, match="no labelled model named 'gemma'.*known: "):
        matrix.rates("gemma")


def test_model_difficulty_maps_other_models_rates_and_leaves_out_unknowns():
    smol = labels_for(SMOL, {"a": [True, False], "b": [False, False]}, "2026-01-01")
    gemma = labels_for(GEMMA, {"a": [True, True, True, False]}, "2026-01-02")
    matrix = difficulty_matrix([smol, gemma])
    assert model_difficulty(matrix, ["a", "b", "z"]) == [{"smol": 0.5, "gemma": 0.75}, {"smol": 0.0}, {}]
    assert model_difficulty(matrix, ["a", "b"], exclude="smol") == [{"gemma": 0.75}, {}]


def test_selection_keeps_problems_the_target_fails_and_the_named_model_solves():
    smol = labels_for(SMOL, {"a": [False] * 4, "b": [False] * 4, "c": [True] * 4, "d": [False] * 4}, "2026-01-01")
    gemma = labels_for(GEMMA, {"a": [True] * 4, "b": [True, False, False, False], "c": [True] * 4}, "2026-01-02")
    matrix = difficulty_matrix([smol, gemma])
    target = matrix.rates("smol")
    keep = CrossModelSelection(solved_by="gemma", min_other_pass_rate=0.5, max_target_pass_rate=0.0).keep(target, matrix)
    assert keep.to_dict() == {"a": True, "b": False, "c": False, "d": False}
    assert CrossModelSelection().keep(target, matrix).all()
    with pytest.raises(ValueError, match="min_other_pass_rate must lie in"):
        CrossModelSelection(min_other_pass_rate=1.5)


def test_no_labels_give_an_empty_matrix():
    matrix = difficulty_matrix([])
    assert len(matrix.groups) == 0 and len(matrix.values) == 0 and list(matrix.flat().columns) == ["problem_id"]


def test_latest_labels_folded_a_version_at_a_time_equal_one_sort_of_all():
    """Read one version at a time, the latest labels are what one stable sort of every version
    gives: the latest `labelled_at` wins, a later version wins a tie, order and all."""
    from pipeline.labels.matrix import latest_labels

    versions = [labels_for(SMOL, {"a": [True], "b": [False]}, "2026-01-02"),
                labels_for(GEMMA, {"a": [True, True], "c": [False]}, "2026-01-01"),
                labels_for(SMOL, {"b": [True], "c": [True, False]}, "2026-01-02"),
                labels_for(SMOL, {"a": [False, False]}, "2026-01-01")]
    whole = (pd.concat(versions, ignore_index=True).sort_values("labelled_at", kind="stable")
             .drop_duplicates(["label_key", "problem_id"], keep="last").reset_index(drop=True))
    pd.testing.assert_frame_equal(latest_labels(iter(versions)), whole)


def test_other_models_rates_built_by_column_equal_the_maps():
    from pipeline.labels.matrix import OtherModels, model_difficulty_array

    smol = labels_for(SMOL, {"a": [True, False], "b": [False, False]}, "2026-01-01")
    gemma = labels_for(GEMMA, {"a": [True, True, True, True], "c": [False, True, True, True]}, "2026-01-02")
    others = OtherModels(difficulty_matrix([smol, gemma]), GEMMA.key)
    ids = ["c", "a", "z", "b"]
    maps = model_difficulty(others.matrix, ids, exclude="gemma")
    assert others.rates_array(ids, ["smol"]).equals(model_difficulty_array(maps, ["smol"]))
