import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from pipeline.core.model import ModelSpec
from pipeline.engines.base import SamplingConfig
from pipeline.labels.pass_rates import LabelTarget, check_rewards, count_passes, pass_rates, pass_rates_from_counts

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


def test_truncations_are_counted_per_problem_with_the_failed_ones():
    from pipeline.labels.pass_rates import count_truncations

    rollouts = pd.DataFrame({"problem_id": list("aaabbc"), "sample_index": [0, 1, 2, 0, 1, 0],
                             "finish_reason": ["length", "length", "stop", "length", "stop", "stop"]})
    # a/0 was cut yet passed (its answer came before the cap); a/1 and b/0 were cut and failed.
    rewards = pd.DataFrame({"problem_id": list("aaabbc"), "sample_index": [0, 1, 2, 0, 1, 0],
                            "passed": [True, False, False, False, True, False]})
    ids = ["a", "b", "c", "never"]
    cut, cut_failed = count_truncations(pa.Table.from_pandas(rollouts).to_batches(max_chunksize=4),
                                        pa.Table.from_pandas(rewards.iloc[::-1]).to_batches(max_chunksize=2), ids)
    assert cut.tolist() == [2, 1, 0, 0] and cut_failed.tolist() == [1, 1, 0, 0]
    streamed = pass_rates_from_counts(ids, *count_passes(pa.Table.from_pandas(rewards).to_batches(), ids), TARGET,
                                      truncations=(cut, cut_failed)).set_index("problem_id")
    assert streamed["truncated"].tolist() == [2, 1, 0] and streamed["truncated_failures"].tolist() == [1, 1, 0]
    whole = pass_rates(rewards.merge(rollouts), TARGET).set_index("problem_id")
    assert whole["truncated"].tolist() == [2, 1, 0] and whole["truncated_failures"].tolist() == [1, 1, 0]
    # Rewards without the rollouts' finish reasons: not counted, not zero.
    assert pass_rates(rewards, TARGET)["truncated"].isna().all()


def test_truncation_bound_means_most_failures_were_cut():
    from pipeline.labels.pass_rates import truncation_bound

    # failures 4 (3 cut), 3 (1 cut), 1 (1 cut), 0, and 4 with uncounted truncations
    got = truncation_bound([0, 1, 3, 4, 0], [4, 4, 4, 4, 4], pd.array([3, 1, 1, 0, None], dtype="Int64"))
    assert got.tolist() == [True, False, True, False, False]


def test_the_token_cap_report_names_the_setting_to_raise():
    from pipeline.labels.pass_rates import token_cap_report

    over = token_cap_report(112, 43, 9, 256)
    assert not over["passed"] and over["share"] == 0.3839
    assert over["message"] == (
        "43 of 112 rollouts (38%) stopped at the token cap (max_tokens=256) and count as failures, more than 10%; "
        "most failures of 9 problem(s) are such cuts. Raise target_model's max_tokens and relabel: these pass rates measure "
        "the cap, not difficulty")
    assert token_cap_report(100, 10, 0, 256)["passed"]  # a tenth exactly is still fine


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


def test_labels_written_a_slice_at_a_time_are_the_frame_stored_whole(tmp_path):
    """`LabelStream`'s batches, through the Parquet writer, read back as the frame the IO manager
    stores for `pass_rates_from_counts`: same schema, same rows, sorted by id."""
    import pyarrow.parquet as pq

    from pipeline.core.storage import write_parquet_batches_checksummed
    from pipeline.labels.pass_rates import LabelStream

    ids = ["p9", "p10", "p1", "q", "none", "p2"]
    successes, trials = np.array([1, 2, 0, 4, 0, 3]), np.array([4, 4, 4, 4, 0, 4])
    cut = (np.array([1, 0, 2, 0, 0, 1]), np.array([1, 0, 2, 0, 0, 0]))
    stream = LabelStream(pa.array(ids), successes, trials, TARGET, truncations=cut, batch_rows=2)
    assert stream.rows == 5
    write_parquet_batches_checksummed(stream.batches(), stream.schema, tmp_path / "streamed.parquet")
    whole = pass_rates_from_counts(ids, successes, trials, TARGET, truncations=cut)
    pq.write_table(pa.Table.from_pandas(whole, preserve_index=False), tmp_path / "whole.parquet")
    streamed, stored = pq.read_table(tmp_path / "streamed.parquet"), pq.read_table(tmp_path / "whole.parquet")
    assert streamed.schema == stored.schema
    assert streamed.drop_columns(["labelled_at"]).equals(stored.drop_columns(["labelled_at"]))
    assert streamed.column("problem_id").to_pylist() == sorted(i for i in ids if i != "none")
    assert len(set(streamed.column("labelled_at").to_pylist())) == 1  # one labelling, one time
