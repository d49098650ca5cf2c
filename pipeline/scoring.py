"""Rewards: extract each rollout's final answer and verify it against the problem's gold."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from pipeline.extraction import extract_answer
from pipeline.records import Reward
from pipeline.verification import VERIFIER_VERSION, VerificationTask, VerifierPool


def score_rollouts(
    problems: pd.DataFrame,
    rollouts: pd.DataFrame,
    pool: VerifierPool,
    policy: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """One `Reward` row per rollout. Pure in the stored rollouts: rescoring never touches an engine."""
    if rollouts.empty:
        return Reward.empty_frame()
    info = problems.set_index("problem_id")[["answer", "verifier", "metadata"]]
    missing = set(rollouts["problem_id"]) - set(info.index)
    if missing:
        raise ValueError(f"{len(missing)} rollouts belong to problems not in the pool, e.g. {sorted(missing)[:3]}")
    joined = info.loc[rollouts["problem_id"]]
    extracted = [extract_answer(text, policy) for text in rollouts["text"]]
    tasks = [
        VerificationTask(verifier, gold, answer, metadata)
        for verifier, gold, answer, metadata in zip(
            joined["verifier"], joined["answer"], extracted, joined["metadata"]
        )
    ]
    verdicts = pool.verify_many(tasks, progress)
    frame = pd.DataFrame(
        {
            "problem_id": rollouts["problem_id"].to_numpy(),
            "sample_index": rollouts["sample_index"].to_numpy(np.int32),
            "extracted": extracted,
            "score": [v.score for v in verdicts],
            "passed": [v.passed for v in verdicts],
            "status": [v.status for v in verdicts],
            "verifier": joined["verifier"].to_numpy(),
            "verifier_version": VERIFIER_VERSION,
        }
    )
    return frame[[f.name for f in Reward.SCHEMA]]
