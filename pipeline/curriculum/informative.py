"""Informative batches: how many GRPO groups carry gradient, from labels or from real rollouts.

GRPO's advantage is each completion's reward minus its group's mean, so a group whose G
completions all pass or all fail has zero advantage everywhere and teaches nothing (DAPO's
dynamic sampling, PCL). For a problem with pass rate p, a group of G independent binary rewards
is informative with probability

    1 - p^G - (1 - p)^G,

and a batch drawn uniformly from a set of problems is informative on average by the mean of that
over the set. `rollouts_per_informative_group` is what one useful group costs: G rollouts per
group over the informative fraction (inf when no group is informative).

Computed from labels, the figure for a curriculum is optimistic: its problems were selected
because their sampled pass rate was strictly between 0 and 1, and a problem observed at 1/8 may
be nearly unsolvable. `measured_informative` counts groups of real rollouts (fresh samples, or
the groups a trainer actually drew) and has no such bias.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class InformativeBatch:
    """The share of GRPO groups with non-zero reward variance, and what one such group costs."""

    group_size: int
    fraction: float
    """Expected (from labels) or observed (from rollouts) fraction of informative groups."""
    groups: float
    """Problems (label-based) or groups counted (measured) behind the figure."""

    @property
    def rollouts_per_informative_group(self) -> float:
        return self.group_size / self.fraction if self.fraction > 0 else math.inf

    def record(self) -> dict[str, Any]:
        """The figures as plain JSON-able values, rounded for reports."""
        cost = self.rollouts_per_informative_group
        return {**asdict(self), "fraction": round(self.fraction, 4),
                "rollouts_per_informative_group": round(cost, 2) if math.isfinite(cost) else None}


def informative_probability(pass_rate: ArrayLike, group_size: int) -> np.ndarray:
    """P(a group of `group_size` rewards of a problem with this pass rate is not all equal)."""
    if group_size < 2:
        raise ValueError(f"a GRPO group needs at least 2 completions, got group_size={group_size}")
    p = np.asarray(pass_rate, dtype=float)
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("pass rates must lie in [0, 1]")
    return 1.0 - p**group_size - (1.0 - p) ** group_size


def expected_informative(pass_rate: ArrayLike, group_size: int) -> InformativeBatch:
    """The informative fraction of groups drawn uniformly from problems with these pass rates."""
    probability = informative_probability(pass_rate, group_size)
    fraction = float(probability.mean()) if probability.size else 0.0
    return InformativeBatch(group_size, fraction, float(probability.size))


def measured_informative(rewards: pd.DataFrame, group_size: int) -> InformativeBatch:
    """The informative fraction of real rollouts, cut into groups of `group_size` per problem.

    `rewards` needs `problem_id`, `sample_index` and `passed` (a `Reward` frame): each problem's
    samples, in index order, form consecutive groups; a last incomplete group is dropped.
    """
    if group_size < 2:
        raise ValueError(f"a GRPO group needs at least 2 completions, got group_size={group_size}")
    if rewards.empty:
        return InformativeBatch(group_size, 0.0, 0.0)
    ordered = rewards.sort_values(["problem_id", "sample_index"])
    position = ordered.groupby("problem_id").cumcount().to_numpy()
    groups = pd.DataFrame({
        "problem_id": ordered["problem_id"].to_numpy(),
        "group": position // group_size,
        "passed": ordered["passed"].astype(float).to_numpy(),
    })
    sizes = groups.groupby(["problem_id", "group"])["passed"].agg(["size", "std"])
    full = sizes[sizes["size"] == group_size]
    if full.empty:
        return InformativeBatch(group_size, 0.0, 0.0)
    return InformativeBatch(group_size, float((full["std"] > 0).mean()), float(len(full)))


def pool_versus_curriculum(
    pass_rate: ArrayLike, in_curriculum: ArrayLike, group_size: int
) -> dict[str, Any]:
    """Label-based figures for groups drawn from the whole labelled pool and from the staged
    problems only, and their ratio (the curriculum's gain in informative groups per batch)."""
    p = np.asarray(pass_rate, dtype=float)
    staged = np.asarray(in_curriculum, dtype=bool)
    pool = expected_informative(p, group_size)
    curriculum = expected_informative(p[staged], group_size)
    return {
        "group_size": group_size,
        "pool": pool.record(),
        "curriculum": curriculum.record(),
        "ratio": round(curriculum.fraction / pool.fraction, 3) if pool.fraction > 0 else None,
        "basis": "labels (selection-biased upward for the curriculum; see pipeline.curriculum.informative)",
    }
