from dataclasses import replace
from datetime import datetime, timezone

import pandas as pd
import pytest

from pipeline.core.model import ModelSpec
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig
from pipeline.labels.history import LabelHistory, counts_of, difficulty_drift, stale_or_new, staleness, version_id
from pipeline.labels.pass_rates import LabelTarget, pass_rates

TARGET = LabelTarget(ModelSpec("/m", "org/m", "r1"), SamplingConfig(), "v1")


def labels_for(target: LabelTarget, outcomes: dict[str, list[bool]]) -> pd.DataFrame:
    """Real `PassRate` rows for `target` from per-problem pass/fail outcomes."""
    rewards = pd.DataFrame(
        [(pid, passed) for pid, results in outcomes.items() for passed in results], columns=["problem_id", "passed"]
    )
    return pass_rates(rewards, target)


def problems(*ids: str) -> pd.DataFrame:
    return pd.DataFrame({"problem_id": list(ids)})


def test_current_labels_are_not_stale_and_missing_ones_are_new():
    labels = labels_for(TARGET, {"a": [True, False], "b": [False, False]})
    assert stale_or_new(problems("a", "b"), labels, TARGET) == []
    assert staleness(problems("a", "b", "c"), labels, TARGET).to_dict("records") == [{"problem_id": "c", "reason": "new"}]
    assert stale_or_new(problems("a"), labels.iloc[:0], TARGET) == ["a"]


@pytest.mark.parametrize(
    "changed, reason",
    [
        (replace(TARGET, model=ModelSpec("/m", "org/other", "r1")), "model_id"),
        (replace(TARGET, model=ModelSpec("/m", "org/m", "r2")), "revision"),
        (replace(TARGET, sampling=SamplingConfig(temperature=1.0)), "sampling_key"),
        (replace(TARGET, verifier_version="v2"), "verifier_version"),
    ],
)
def test_any_provenance_change_makes_every_label_stale_with_its_reason(changed, reason):
    labels = labels_for(TARGET, {"a": [True], "b": [False]})
    why = staleness(problems("a", "b", "c"), labels, changed).set_index("problem_id")["reason"].to_dict()
    assert why == {"a": reason, "b": reason, "c": "new"}


def test_a_matching_label_in_an_older_version_keeps_a_problem_current():
    old = labels_for(TARGET, {"a": [True], "b": [True]})
    newer = labels_for(replace(TARGET, verifier_version="v2"), {"a": [True]})
    newer["labelled_at"] = "2999-01-01T00:00:00+00:00"
    mixed = pd.concat([old, newer])
    assert stale_or_new(problems("a", "b"), mixed, TARGET) == []
    # For the new verifier only `a` has a label; `b`'s latest label is the old verifier's.
    why = staleness(problems("a", "b"), mixed, replace(TARGET, verifier_version="v2"))
    assert why.to_dict("records") == [{"problem_id": "b", "reason": "verifier_version"}]


def test_drift_counts_stratum_changes_and_builds_the_transition_matrix():
    strata = Strata()  # solved | stage_1 (2/3, 1] | stage_2 (1/3, 2/3] | stage_3 (0, 1/3] | unsolved
    before = labels_for(TARGET, {"a": [True] * 4, "b": [True, True, True, False], "c": [False] * 4,
                                 "d": [True, False, False, False], "gone": [True]})
    after = labels_for(TARGET, {"a": [True] * 4, "b": [True, False, False, False], "c": [True, True, False, False],
                                "d": [True, False, False, False], "new": [False]})
    drift = difficulty_drift(before, after, strata)
    assert (drift.common, drift.changed, drift.added, drift.removed) == (4, 2, 1, 1)
    t = drift.transitions
    assert list(t.index) == list(t.columns) == ["solved", "stage_1", "stage_2", "stage_3", "unsolved"]
    assert t.loc["stage_1", "stage_3"] == 1 and t.loc["unsolved", "stage_2"] == 1
    assert t.loc["solved", "solved"] == 1 and t.loc["stage_3", "stage_3"] == 1
    assert int(t.to_numpy().sum()) == 4


def test_version_id_depends_on_counts_and_provenance_only():
    labels = labels_for(TARGET, {"a": [True, False], "b": [False]})
    relabelled_later = labels.assign(labelled_at="2999-01-01T00:00:00+00:00").iloc[::-1]
    assert version_id(labels) == version_id(relabelled_later)
    assert version_id(labels) != version_id(labels_for(TARGET, {"a": [True, True], "b": [False]}))
    assert version_id(labels) != version_id(labels_for(replace(TARGET, verifier_version="v2"),
                                                       {"a": [True, False], "b": [False]}))


def test_history_appends_versions_with_drift_and_skips_repeats(tmp_path):
    history = LabelHistory(tmp_path)
    strata = Strata()
    first = labels_for(TARGET, {"a": [True, False], "b": [False, False]})
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    one = history.record(first, strata, now=t0)
    assert one.appended and one.drift is None
    assert counts_of(one.summary) == {"solved": 0, "stage_1": 0, "stage_2": 1, "stage_3": 0, "unsolved": 1}
    assert (one.summary["added"], one.summary["changed_stratum"]) == (2, 0)

    assert not history.record(first, strata).appended  # a nightly run that changed nothing

    target2 = replace(TARGET, model=ModelSpec("/m", "org/m", "r2"))
    second = labels_for(target2, {"a": [True, True], "b": [False, False], "c": [True, False]})
    two = history.record(second, strata)
    assert two.appended and two.drift is not None
    assert (two.summary["changed_stratum"], two.summary["added"], two.summary["removed"]) == (1, 1, 0)
    assert two.summary["previous_version"] == one.summary["version"]

    table = history.summaries()
    assert list(table["label_key"]) == [TARGET.key, target2.key]
    assert list(table["problems"]) == [2, 3]
    assert table["recorded_at"].iloc[0] == t0.isoformat()
    pd.testing.assert_frame_equal(history.labels(two.summary["version"]), second.reset_index(drop=True))
