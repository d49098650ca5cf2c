import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.engines.base import SamplingConfig
import pyarrow as pa

from pipeline.labels.pass_rates import (LabelTarget, check_rewards, count_passes, pass_rates,
                                       pass_rates_from_counts)
from pipeline.core.model import ModelSpec

TARGET = LabelTarget(ModelSpec("/m", "org/m", "r1"), SamplingConfig(), "v1")


def test_pass_rates_per_problem_with_beta_interval():
    rewards = pd.DataFrame({"problem_id": ["a"] * 4 + ["b"] * 4, "passed": [1, 1, 0, 1, 0, 0, 0, 0]})
    frame = pass_rates(rewards.astype({"passed": bool}), TARGET, level=0.9).set_index("problem_id")
    assert frame.loc["a", "successes"] == 3 and frame.loc["a", "trials"] == 4
    assert frame.loc["a", "pass_rate"] == 0.75 and frame.loc["b", "pass_rate"] == 0.0
    lo, hi = stats.beta.ppf([0.05, 0.95], 1 + 3, 1 + 1)
    assert np.isclose(frame.loc["a", "ci_low"], lo) and np.isclose(frame.loc["a", "ci_high"], hi)
    assert (frame["label_key"] == TARGET.key).all() and (frame["revision"] == "r1").all()


def test_label_key_changes_with_model_and_sampling():
    other_rev = LabelTarget(ModelSpec("/m", "org/m", "r2"), SamplingConfig(), "v1")
    other_t = LabelTarget(ModelSpec("/m", "org/m", "r1"), SamplingConfig(temperature=1.0), "v1")
    assert len({TARGET.key, other_rev.key, other_t.key}) == 3


def test_empty_rewards_give_an_empty_frame():
    assert pass_rates(pd.DataFrame({"problem_id": [], "passed": []}), TARGET).empty


def test_streamed_counts_give_the_same_labels_as_the_frame():
    rewards = pd.DataFrame({"problem_id": list("bbaacb"), "passed": [True, False, True, True, False, True]})
    batches = pa.Table.from_pandas(rewards).to_batches(max_chunksize=4)
    ids = ["a", "b", "c", "never"]
    successes, trials = count_passes(batches, ids)
    assert successes.tolist() == [2, 2, 0, 0] and trials.tolist() == [2, 3, 1, 0]
    streamed = pass_rates_from_counts(ids, successes, trials, TARGET)
    whole = pass_rates(rewards, TARGET)
    columns = [c for c in whole.columns if c != "labelled_at"]
    pd.testing.assert_frame_equal(streamed[columns], whole[columns])


def test_label_key_covers_extraction_policy_and_verifier_version():
    tagged = LabelTarget(TARGET.model, TARGET.sampling, "v1", extraction_policy="answer_tag")
    newer = LabelTarget(TARGET.model, TARGET.sampling, "v2")
    assert len({TARGET.key, tagged.key, newer.key}) == 3
    assert tagged.key.startswith(f"{TARGET.model.key}/{TARGET.sampling.key}/answer_tag/")


def test_rewards_scored_for_another_key_are_refused_naming_the_difference():
    tagged = LabelTarget(TARGET.model, TARGET.sampling, "v1", extraction_policy="answer_tag")
    check_rewards(TARGET.key, TARGET)
    with pytest.raises(ValueError, match="extraction_policy auto → answer_tag.*rematerialize rewards"):
        check_rewards(TARGET.key, tagged)
    old = f"{TARGET.model.key}/{TARGET.sampling.key}"  # the key before extraction and verifier were in it
    with pytest.raises(ValueError, match="older label key.*rematerialize rewards"):
        check_rewards(old, TARGET)
