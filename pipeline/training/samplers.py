"""Curriculum samplers: which problems each batch trains on, given the rewards so far.

- `sequential`: phase k trains on stage k only, easy → hard;
- `target_difficulty` (AdaRFT, arXiv 2504.05520): the problems whose labelled pass rate is closest
  to a target that moves with the train reward: harder when the reward is above the aim, easier
  when below;
- `ucb` (DUMP, arXiv 2504.09710): a bandit over strata whose payoff is a learnability signal (the
  mean absolute group-relative advantage, or the reward variance), with UCB exploration.

Pure numpy: no torch or TRL, so the samplers are testable on fake reward streams.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SAMPLERS = ("sequential", "target_difficulty", "ucb")
SIGNALS = ("abs_advantage", "reward_variance")


class CurriculumSampler(abc.ABC):
    """Picks the problems (row indices into the curriculum pool) of each batch, and sees the
    rewards each batch earned."""

    def __init__(self, pass_rate: Sequence[float], stage: Sequence[int], seed: int = 0) -> None:
        self.pass_rate = np.asarray(pass_rate, dtype=float)
        self.stage = np.asarray(stage, dtype=np.int64)
        if self.pass_rate.size == 0 or self.pass_rate.shape != self.stage.shape:
            raise ValueError("a sampler needs a non-empty pool with one pass rate and one stage per row")
        self.stages = [int(s) for s in np.unique(self.stage)]
        self.rng = np.random.default_rng(seed)

    def begin_phase(self, phase: int) -> None:
        """Phase `phase` (1-based, one per non-empty stage) starts."""

    @abc.abstractmethod
    def draw(self, n: int) -> np.ndarray:
        """The rows of the next batch of `n` problems."""

    def observe(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        """Rewards of one batch, one per completion (`rows[i]` is the problem of `rewards[i]`)."""

    def state(self) -> dict[str, float]:
        """Figures that explain the next draw, for the training log."""
        return {}


class SequentialSampler(CurriculumSampler):
    """Phase k draws from the k-th non-empty stage only, in shuffled passes over its problems."""

    def __init__(self, pass_rate: Sequence[float], stage: Sequence[int], seed: int = 0) -> None:
        super().__init__(pass_rate, stage, seed)
        self._members = np.array([], dtype=np.int64)
        self._queue: list[int] = []

    def begin_phase(self, phase: int) -> None:
        self._members = np.flatnonzero(self.stage == self.stages[phase - 1])
        self._queue = []

    def draw(self, n: int) -> np.ndarray:
        if self._members.size == 0:
            raise RuntimeError("begin_phase must be called before drawing")
        rows = []
        for _ in range(n):
            if not self._queue:
                self._queue = self.rng.permutation(self._members).tolist()
            rows.append(self._queue.pop())
        return np.asarray(rows, dtype=np.int64)


class TargetDifficultySampler(CurriculumSampler):
    """AdaRFT on the pass-rate scale: a batch is the problems whose labelled pass rate is closest
    to a target (ties broken at random), and after each batch

        target ← clip(target − step · tanh(sensitivity · (mean reward − target_reward)), lo, hi)

    so a reward above the aim moves the target to lower pass rates (harder problems) and a reward
    below it to higher ones. `lo` / `hi` are the pool's lowest and highest pass rates."""

    def __init__(
        self,
        pass_rate: Sequence[float],
        stage: Sequence[int],
        seed: int = 0,
        initial_target: float | None = None,
        step: float = 0.1,
        sensitivity: float = 2.0,
        target_reward: float = 0.5,
    ) -> None:
        super().__init__(pass_rate, stage, seed)
        self.low, self.high = float(self.pass_rate.min()), float(self.pass_rate.max())
        start = self.high if initial_target is None else initial_target
        self.target = float(np.clip(start, self.low, self.high))
        self.step, self.sensitivity, self.target_reward = step, sensitivity, target_reward

    def draw(self, n: int) -> np.ndarray:
        distance = np.abs(self.pass_rate - self.target)
        order = np.lexsort((self.rng.random(distance.size), distance))
        return np.resize(order, n).astype(np.int64)

    def observe(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        gap = float(np.mean(rewards)) - self.target_reward
        moved = self.target - self.step * np.tanh(self.sensitivity * gap)
        self.target = float(np.clip(moved, self.low, self.high))

    def state(self) -> dict[str, float]:
        return {"target_pass_rate": self.target}


class UCBStrataSampler(CurriculumSampler):
    """DUMP: each stratum is a bandit arm. An arm's payoff is the learnability of the problem
    groups drawn from it (mean |reward − group mean|, or the group's reward variance), averaged
    over its last `window` groups; its score adds `exploration · sqrt(2 ln N / n_arm)`. Arms never
    played come first; then each slot of a batch picks an arm by softmax(score / temperature)
    (temperature 0: the best arm), and a problem uniformly within it."""

    def __init__(
        self,
        pass_rate: Sequence[float],
        stage: Sequence[int],
        seed: int = 0,
        exploration: float = 1.0,
        window: int = 16,
        temperature: float = 0.0,
        signal: str = "abs_advantage",
    ) -> None:
        super().__init__(pass_rate, stage, seed)
        if signal not in SIGNALS:
            raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
        self.exploration, self.temperature, self.signal = exploration, temperature, signal
        self._members = {s: np.flatnonzero(self.stage == s) for s in self.stages}
        self._payoffs: dict[int, deque[float]] = {s: deque(maxlen=window) for s in self.stages}
        self.plays = {s: 0 for s in self.stages}

    def scores(self) -> np.ndarray:
        """UCB score per arm, in `stages` order (inf for arms never played)."""
        total = sum(self.plays.values())
        out = np.full(len(self.stages), np.inf)
        for i, s in enumerate(self.stages):
            if self.plays[s]:
                bonus = self.exploration * np.sqrt(2.0 * np.log(total) / self.plays[s])
                out[i] = float(np.mean(self._payoffs[s])) + bonus
        return out

    def _arms(self, n: int) -> list[int]:
        unplayed = [s for s in self.stages if not self.plays[s]]
        if unplayed:
            return [unplayed[i % len(unplayed)] for i in range(n)]
        scores = self.scores()
        if self.temperature <= 0:
            best = np.flatnonzero(scores == scores.max())
            return [self.stages[int(self.rng.choice(best))]] * n
        weights = np.exp((scores - scores.max()) / self.temperature)
        picks = self.rng.choice(len(self.stages), size=n, p=weights / weights.sum())
        return [self.stages[int(i)] for i in picks]

    def draw(self, n: int) -> np.ndarray:
        return np.asarray([self.rng.choice(self._members[arm]) for arm in self._arms(n)], dtype=np.int64)

    def observe(self, rows: np.ndarray, rewards: np.ndarray) -> None:
        rows, rewards = np.asarray(rows), np.asarray(rewards, dtype=float)
        for row in np.unique(rows):
            group = rewards[rows == row]
            if self.signal == "abs_advantage":
                payoff = float(np.mean(np.abs(group - group.mean())))
            else:
                payoff = float(np.var(group))
            arm = int(self.stage[row])
            self._payoffs[arm].append(payoff)
            self.plays[arm] += 1


@dataclass(frozen=True)
class SamplerSpec:
    """Which sampler picks the batches, and its settings."""

    kind: str = field(
        default="sequential",
        metadata={"help": "`sequential`, `target_difficulty` (AdaRFT) or `ucb` (DUMP)."},
    )
    initial_target: float | None = field(
        default=None,
        metadata={"help": "target_difficulty: starting target pass rate "
                          "(None: the pool's highest, i.e. easiest first)."},
    )
    target_step: float = field(
        default=0.1,
        metadata={"help": "target_difficulty: the most the target pass rate moves per step."},
    )
    sensitivity: float = field(
        default=2.0,
        metadata={"help": "target_difficulty: how sharply the move responds to the reward gap (tanh slope)."},
    )
    target_reward: float = field(
        default=0.5,
        metadata={"help": "target_difficulty: the mean reward the target steers towards."},
    )
    exploration: float = field(default=1.0, metadata={"help": "ucb: weight of the exploration bonus."})
    window: int = field(
        default=16,
        metadata={"help": "ucb: recent problem groups per stratum in its payoff mean."},
    )
    temperature: float = field(
        default=0.0,
        metadata={"help": "ucb: softmax temperature over scores (0: always the best stratum)."},
    )
    signal: str = field(
        default="abs_advantage",
        metadata={"help": "ucb: payoff per problem group, `abs_advantage` or `reward_variance`."},
    )

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.kind!r}; expected one of {', '.join(SAMPLERS)}")

    def build(self, pass_rate: Sequence[float], stage: Sequence[int], seed: int) -> CurriculumSampler:
        if self.kind == "sequential":
            return SequentialSampler(pass_rate, stage, seed)
        if self.kind == "target_difficulty":
            return TargetDifficultySampler(
                pass_rate, stage, seed, self.initial_target, self.target_step, self.sensitivity, self.target_reward
            )
        return UCBStrataSampler(
            pass_rate, stage, seed, self.exploration, self.window, self.temperature, self.signal
        )
