"""Train rewards from the verifiers that labelled the data, so a stage's mean train reward is
directly comparable with its labelled pass rate: the TRL entry point users get
(`pipeline.rewards.trainers.trl_reward_function`), booking every batch with the phase controller."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.rewards.trainers import trl_reward_function
from pipeline.training.schedule import PhaseController
from pipeline.verify.verification import VerifierPool


def reward_function(
    pool: VerifierPool, policy: str, controller: PhaseController
) -> Callable[..., list[float]]:
    """The TRL reward on `pool` with extraction `policy`; books every batch with the controller
    (the rows' `row` column says which problems the batch drew)."""
    return trl_reward_function(pool, policy, lambda rewards, columns: controller.record(columns["row"], rewards))
