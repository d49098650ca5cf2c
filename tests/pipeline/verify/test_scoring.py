"""`score_rollouts` on real rollout and problem frames with the real verifier pool."""

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.core.model import ModelSpec
from pipeline.core.records import Problem, Reward, Rollout
from pipeline.core.storage import write_parquet_checksummed
from pipeline.engines.base import Completion, GenerationRequest, SamplingConfig
from pipeline.rollouts.handles import DatasetHandle
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import GOLD_COLUMNS, score_dataset, score_rollouts
from pipeline.verify.verification import VERIFIER_VERSION


def problems():
    return Problem.to_frame([
        Problem("add", "test", [{"role": "user", "content": "What is 2 + 3?"}], "5", "math", "t"),
        Problem("half", "test", [{"role": "user", "content": "What is 1 / 2?"}], "\\frac{1}{2}", "math", "t"),
    ])


def rollouts(*rows):
    return Rollout.to_frame([Rollout(pid, i, text, 8, "stop", "m", "r", "s", "transformers") for pid, i, text in rows])


def test_each_rollout_gets_its_problems_verdict(verifier_pool):
    frame = rollouts(
        ("add", 0, "2 + 3 = 5, so the answer is 5."),
        ("add", 1, "The answer is 6."),
        ("half", 0, "That is \\boxed{0.5}"),
        ("half", 1, "I am not sure."),
        ("add", 2, "\\boxed{5}"),
    )
    seen = []
    rewards = score_rollouts(problems(), frame, verifier_pool, progress=lambda d, t: seen.append((d, t)))

    assert list(rewards.columns) == Reward.SCHEMA.names
    assert list(zip(rewards["problem_id"], rewards["sample_index"])) == list(
        zip(frame["problem_id"], frame["sample_index"]))  # input order, not grouped
    assert rewards["passed"].tolist() == [True, False, True, False, True]
    # math keeps a box as math-verify reads it
    assert [None if pd.isna(x) else x for x in rewards["extracted"]] == ["5", "6", "\\boxed{0.5}", None, "\\boxed{5}"]
    assert rewards["status"].tolist() == ["ok", "ok", "ok", "no_answer", "ok"]
    assert rewards["score"].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert set(rewards["verifier"]) == {"math"} and set(rewards["verifier_version"]) == {VERIFIER_VERSION}
    assert seen[-1] == (5, 5)


def test_the_extraction_policy_decides_what_is_verified(verifier_pool):
    frame = rollouts(("add", 0, "\\boxed{5} but 2 + 3 is 7"))
    assert score_rollouts(problems(), frame, verifier_pool, policy="boxed")["passed"].tolist() == [True]
    assert score_rollouts(problems(), frame, verifier_pool, policy="last_number")["passed"].tolist() == [False]


def test_no_rollouts_give_an_empty_reward_frame(verifier_pool):
    empty = score_rollouts(problems(), Rollout.empty_frame(), verifier_pool)
    assert empty.empty and list(empty.columns) == Reward.SCHEMA.names


def test_rollouts_of_unknown_problems_are_refused(verifier_pool):
    with pytest.raises(ValueError, match="not in the pool"):
        score_rollouts(problems(), rollouts(("gone", 0, "5")), verifier_pool)


def test_a_streamed_dataset_scores_like_the_frame_batch_by_batch(verifier_pool, tmp_path):
    texts = ["the answer is 5", "6", "\\boxed{0.5}", "no idea", "\\boxed{5}"]
    keys = [("add", 0), ("add", 1), ("half", 0), ("half", 1), ("add", 2)]
    store = RolloutStore(tmp_path, ModelSpec("/m", "org/m", "r"), SamplingConfig())
    store.append([GenerationRequest.of(p, i, []) for p, i in keys], [Completion(t, 3, "stop") for t in texts])
    selection = tmp_path / "selection.parquet"
    write_parquet_checksummed(pa.table({"problem_id": ["add", "half"], "trials": [3, 2]}), selection)
    handle = DatasetHandle("rollouts", str(store.root), 5, "org-m@r/key", str(selection))
    folder = tmp_path / "rewards"
    lines = []
    streamed, summary = score_dataset(pa.Table.from_pandas(problems()[GOLD_COLUMNS]), handle, verifier_pool, folder,
                                      log=lines.append, show_failures=1, batch_rows=2, home=tmp_path)
    assert streamed == DatasetHandle("parts", str(folder), 5, "org-m@r/key")
    assert len(streamed.parts()) == 3  # 5 rows in batches of 2
    expected = score_rollouts(problems(), rollouts(*[(p, i, t) for (p, i), t in zip(keys, texts)]), verifier_pool)
    got = streamed.to_frame()
    want = expected.sort_values(["problem_id", "sample_index"], ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert (summary.rows, summary.passed, summary.statuses["no_answer"]) == (5, 3, 1)
    assert sum(len(f) for f in summary.failed) == 1
    assert lines[-1].startswith("verifying: 5/5 answers (100%)")

    again, _ = score_dataset(pa.Table.from_pandas(problems()[GOLD_COLUMNS]), handle, verifier_pool, folder,
                             home=tmp_path)
    assert len(again.parts()) == 1  # replaced whole, no parts left from the first run
