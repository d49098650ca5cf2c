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

Trainers that drop uninformative groups (verl's DAPO `filter_groups`, OpenRLHF's dynamic
filtering) keep generating until a train batch is full and stop when too few groups survive:
`GroupFilter.prediction` gives a stage's surviving fraction and the generation batch size that
fills a train batch with 95 % probability (`generation_batch_size`, an exact binomial bound).
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


@dataclass(frozen=True)
class GroupFilter:
    """A trainer that drops groups whose rewards are all equal (verl's DAPO `filter_groups`,
    OpenRLHF's dynamic filtering) and trains on `train_batch_size` surviving prompts per step."""

    group_size: int
    """Rollouts per prompt (verl `actor_rollout_ref.rollout.n`, OpenRLHF `--rollout.n_samples_per_prompt`)."""
    train_batch_size: int
    """Prompts per train batch (verl `data.train_batch_size`)."""
    confidence: float = 0.95
    """How surely one generation batch must fill a train batch."""

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"a group needs at least 2 rollouts, got group_size={self.group_size}")
        if self.train_batch_size < 1:
            raise ValueError(f"train_batch_size must be at least 1, got {self.train_batch_size}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie strictly between 0 and 1, got {self.confidence}")

    def prediction(self, pass_rate: ArrayLike, ci_low: ArrayLike, ci_high: ArrayLike) -> dict[str, Any]:
        """What the filter does to groups drawn uniformly from problems with these labels: the
        expected surviving fraction (and its range when each pass rate may be anywhere in its
        interval), and the generation batch sizes that fill a train batch with `confidence` at
        the expected fraction and at the range's low end (None: no group can survive)."""
        expected = expected_informative(pass_rate, self.group_size).fraction
        low, high = surviving_range(ci_low, ci_high, self.group_size)
        return {
            "group_size": self.group_size,
            "train_batch_size": self.train_batch_size,
            "confidence": self.confidence,
            "surviving_fraction": round(expected, 4),
            "surviving_fraction_range": [round(low, 4), round(high, 4)],
            "generation_batch_size": generation_batch_size(expected, self.train_batch_size, self.confidence),
            "generation_batch_size_at_low": generation_batch_size(low, self.train_batch_size, self.confidence),
        }


def surviving_range(ci_low: ArrayLike, ci_high: ArrayLike, group_size: int) -> tuple[float, float]:
    """The least and the most mean informative probability over problems whose pass rates lie
    anywhere in [ci_low, ci_high]. 1 - p^G - (1-p)^G rises to its peak at p = 1/2 and falls
    symmetrically, so its least value on an interval is at an end and its most at 1/2 when the
    interval holds it, else at the end nearer 1/2."""
    lo, hi = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    if not lo.size:
        return 0.0, 0.0
    at_lo, at_hi = informative_probability(lo, group_size), informative_probability(hi, group_size)
    peak = informative_probability(np.clip(0.5, lo, hi), group_size)
    return float(np.minimum(at_lo, at_hi).mean()), float(peak.mean())


def generation_batch_size(fraction: float, train_batch_size: int, confidence: float = 0.95) -> int | None:
    """The fewest prompts N to generate so that at least `train_batch_size` of their groups
    survive with probability `confidence`, each surviving independently with `fraction`: the
    least N with P(Binomial(N, fraction) >= train_batch_size) >= confidence, exactly (None when
    fraction is 0: no N is enough)."""
    from scipy.stats import binom

    if fraction <= 0:
        return None
    if fraction >= 1:
        return train_batch_size

    def fills(n: int) -> bool:
        return float(binom.sf(train_batch_size - 1, n, fraction)) >= confidence

    high = max(train_batch_size, math.ceil(train_batch_size / fraction))
    while not fills(high):
        high *= 2
    low = train_batch_size - 1  # too few: fewer prompts than the batch never fill it
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fills(middle) else (middle, high)
    return high
