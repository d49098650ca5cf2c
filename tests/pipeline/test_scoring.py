"""`score_rollouts` on real rollout and problem frames with the real verifier pool."""

import pandas as pd
import pytest

from pipeline.records import Problem, Reward, Rollout
from pipeline.scoring import score_rollouts
from pipeline.verification import VERIFIER_VERSION


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
    assert [None if pd.isna(x) else x for x in rewards["extracted"]] == ["5", "6", "0.5", None, "5"]
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
