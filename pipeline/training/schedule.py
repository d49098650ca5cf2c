"""When a training phase ends (`StageSchedule`), and the phase bookkeeping that drives a sampler
through the phases step by step (`PhaseController`). Pure: no torch or TRL.

Training runs in phases, one per non-empty curriculum stage. A schedule ends a phase after a fixed
number of steps, or once the rolling mean train reward passes a threshold, with a cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.training.samplers import CurriculumSampler

SCHEDULES = ("fixed", "threshold")


@dataclass(frozen=True)
class StageSchedule:
    """When a phase (stage) ends."""

    kind: str = field(
        default="fixed",
        metadata={"help": "`fixed`: after `steps_per_stage` steps; `threshold`: once the rolling mean reward "
                          "passes `threshold`, or after `max_steps_per_stage` steps."},
    )
    steps_per_stage: int = field(default=2, metadata={"help": "fixed: optimizer steps per stage."})
    threshold: float = field(
        default=0.5,
        metadata={"help": "threshold: the rolling mean train reward that ends a stage."},
    )
    window: int = field(
        default=2,
        metadata={"help": "threshold: steps in the rolling mean; a stage runs at least this many steps."},
    )
    max_steps_per_stage: int = field(default=8, metadata={"help": "threshold: the cap on a stage's steps."})

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        if min(self.steps_per_stage, self.window, self.max_steps_per_stage) < 1:
            raise ValueError("steps_per_stage, window and max_steps_per_stage must be at least 1")

    @property
    def max_steps(self) -> int:
        """The most steps one stage can take."""
        return self.steps_per_stage if self.kind == "fixed" else self.max_steps_per_stage

    def done(self, stage_rewards: Sequence[float]) -> bool:
        """Whether a stage whose steps earned `stage_rewards` (mean reward per step) is over."""
        steps = len(stage_rewards)
        if steps >= self.max_steps:
            return True
        if self.kind == "threshold" and steps >= self.window:
            return float(np.mean(stage_rewards[-self.window :])) >= self.threshold
        return False


class PhaseController:
    """Runs the phases in order: hands out batches from the sampler, books each batch's rewards,
    and says when the schedule ends a phase. One `record` per optimizer step."""

    def __init__(self, sampler: CurriculumSampler, schedule: StageSchedule, phases: int) -> None:
        if phases < 1:
            raise ValueError("need at least one phase")
        self.sampler, self.schedule, self.phases = sampler, schedule, phases
        self.phase = 1
        self.records: list[dict[str, Any]] = []
        self._state: dict[str, float] = {}
        self._drawn = 0
        sampler.begin_phase(1)

    @property
    def finished(self) -> bool:
        return self.phase > self.phases

    def draw(self, n: int) -> np.ndarray:
        """The next batch's rows (each then sampled `num_generations` times)."""
        if self.finished:
            raise RuntimeError("every phase is done")
        self._state = self.sampler.state()
        rows = self.sampler.draw(n)
        self._drawn = len(rows)
        return rows

    def record(self, rows: Sequence[int], rewards: Sequence[float]) -> None:
        """Book one step's rewards, one per completion."""
        rows, rewards = np.asarray(rows, dtype=np.int64), np.asarray(rewards, dtype=float)
        self.sampler.observe(rows, rewards)
        stages, counts = np.unique(self.sampler.stage[rows], return_counts=True)
        self.records.append(
            {
                "step": len(self.records) + 1,
                "phase": self.phase,
                "phase_step": len(self.phase_rewards()) + 1,
                "stage": int(stages[np.argmax(counts)]),
                "batch_pass_rate": float(self.sampler.pass_rate[rows].mean()),
                "reward": float(rewards.mean()),
                "reward_std": float(rewards.std()),
                "prompts": self._drawn or len(np.unique(rows)),
                "completions": len(rows),
                **self._state,
            }
        )

    def annotate(self, step: int, values: dict[str, float]) -> None:
        """Add figures known only later (losses, KL, timings) to step `step`'s record."""
        if 1 <= step <= len(self.records):
            self.records[step - 1].update(values)

    def phase_rewards(self) -> list[float]:
        return [r["reward"] for r in self.records if r["phase"] == self.phase]

    def phase_done(self) -> bool:
        return self.schedule.done(self.phase_rewards())

    def advance(self) -> None:
        self.phase += 1
        if not self.finished:
            self.sampler.begin_phase(self.phase)

    def frame(self) -> pd.DataFrame:
        """The training log so far, one row per step, with cumulative samples seen."""
        frame = pd.DataFrame(self.records)
        if not frame.empty:
            frame["prompts_seen"] = frame["prompts"].cumsum()
            frame["samples_seen"] = frame["completions"].cumsum()
        return frame
