"""Train rewards from the verifiers that labelled the data, so a stage's mean train reward is
directly comparable with its labelled pass rate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.verify.extraction import extract_answer
from pipeline.training.schedule import PhaseController
from pipeline.verify.verification import VerificationTask, VerifierPool


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """A completion as text: TRL passes chat completions as a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role") == "assistant")


def verifier_rewards(
    completions: Sequence[str],
    ground_truths: Sequence[str],
    verifiers: Sequence[str],
    metadata: Sequence[str],
    pool: VerifierPool,
    policy: str = "auto",
) -> list[float]:
    """1.0 for each completion whose extracted answer the problem's verifier passes, else 0.0:
    the rule that labelled the pass rates, so mean train reward and pass rate are comparable."""
    tasks = [
        VerificationTask(verifier, gold, extract_answer(text, policy, verifier=verifier), meta)
        for text, gold, verifier, meta in zip(completions, ground_truths, verifiers, metadata, strict=True)
    ]
    return [1.0 if v.passed else 0.0 for v in pool.verify_many(tasks)]


def reward_function(
    pool: VerifierPool, policy: str, controller: PhaseController
) -> Callable[..., list[float]]:
    """`verifier_rewards` with TRL's calling convention; books every batch with the controller."""

    def verifier_reward(
        prompts: list[Any],
        completions: list[Any],
        reward_model: list[dict[str, str]],
        extra_info: list[dict[str, str]],
        row: list[int],
        **_: Any,
    ) -> list[float]:
        rewards = verifier_rewards(
            [completion_text(c) for c in completions],
            [r["ground_truth"] for r in reward_model],
            [e["verifier"] for e in extra_info],
            [e["metadata"] for e in extra_info],
            pool,
            policy,
        )
        controller.record(row, rewards)
        return rewards

    return verifier_reward
