"""How many rollouts each problem gets: uniform, or adaptive rounds that stop once a class is settled.

Rollouts are the cost of labelling. A problem's label is the class `Strata.observed_class` assigns
from its counts, so the adaptive policy asks, per problem and per round, two questions of the
posterior (`pipeline.difficulty.estimators`):

- how likely is the class it would be assigned now to be its true class (its score, see
  `objective` below)? At `confidence` it stops;
- is another batch worth its cost? `min_gain` is the price of one rollout in score. The value of
  continuing is computed exactly by backward induction over every count the problem can still
  reach (up to `max_samples`), continuing after each batch only while that pays: the Bayes-optimal
  stopping rule for that price. It stops once the expected rise in score from continuing, per
  rollout, is at most `min_gain`. This is what stops problems that every rollout passes (or
  fails), whose label is right with a probability that grows only slowly with more rollouts, and
  problems sitting on a stratum edge, which no affordable number of rollouts settles.

Both questions use a prior fitted to the whole pool by default, with point masses at p = 0 and
p = 1 (`BetaPrior.fit_pool`), so "solved" and "unsolved" have real posterior probability. A relabel
can give each problem its own prior instead (`ProblemPriors`, from earlier labels: see
`pipeline.labels.priors`); the rule then stops each problem Bayes-optimally under its own, and a
problem whose first round contradicts it falls back to the pool's.

`objective` says what "right" is worth. Under `accuracy` every class counts the same, so telling
p = 1 from p = 0.99 costs as many rollouts as telling 0.5 from 0.2, and problems whose rollouts all
pass (or fail) often run to `max_samples`. Under `signal` (the default) the probability is replaced by
the learning signal at stake, 1 - E[4p(1 - p) if the class is wrong]: in RL with binary rewards a
problem teaches in proportion to p(1 - p), so calling p = 0.99 solved loses almost nothing. In
simulation (`bench/adaptive_budget.py`, 10,000 problems) the cheapest setting matching uniform-64's
p(1 - p)-weighted accuracy spent 0.44 of its rollouts under `signal` and 0.63 under `accuracy`; the
Bayes-optimal rule with the pool's true prior, one rollout at a time, is expected to need 0.45, so
the defaults (a price of 0.001, no confidence stop, cap 256: expected 0.48 for 0.884 against
uniform-64's 0.878) spend within 7 % of what any rule labelling by observed pass rate is expected to.

`plan_round` covers every problem at once so the generation engine gets one batch per round; the
`rollouts` asset calls it with real generation, and `run_allocation` drives it in simulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from pipeline.difficulty.estimators import (
    BetaPrior,
    class_index,
    log_marginal,
    posterior_mean,
    stratum_probabilities,
    stratum_signal,
)
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import SamplingConfig

POLICIES = ("adaptive", "uniform")
OBJECTIVES = ("accuracy", "signal")
MAX_SAMPLES_PER_PROBLEM = 4096
"""Sanity cap on rollouts per problem: beyond it a pass-rate label gains nothing measurable, and a
typo (an extra zero or three) would fill memory and disk before anything else fails."""
MIN_POOL_TO_FIT = 50
"""Fewest sampled problems an empirical-Bayes prior is fitted to: one or two problems would make
the pool's prior a copy of their own pass rates."""


@dataclass(frozen=True)
class AllocationConfig:
    """How rollouts are spread over problems."""

    policy: Literal["uniform", "adaptive"] = field(default="uniform", metadata={
        "help": "uniform (samples_per_problem each) or adaptive (rounds until each problem's class is settled)"})
    samples_per_problem: int = field(default=8, metadata={"help": "uniform: rollouts per problem"})
    min_samples: int = field(default=4, metadata={
        "help": "adaptive: rollouts every problem gets in the first round, before any stopping rule"})
    max_samples: int = field(default=256, metadata={"help": "adaptive: cap on a problem's rollouts"})
    batch_per_problem: int = field(default=4, metadata={
        "help": "adaptive: rollouts added per round to each problem still open"})
    objective: Literal["accuracy", "signal"] = field(default="signal", metadata={
        "help": "adaptive: what a problem's score is. accuracy: the posterior probability that the assigned "
        "class is true. signal: 1 - E[4p(1-p) if the assigned class is wrong], a misclassification costing "
        "the problem's learning signal p(1-p) (4p(1-p) is 1 at p = 1/2, 0 at p = 0 or 1), so problems whose "
        "rollouts all pass or all fail stop sooner and mixed ones get the rollouts"})
    confidence: float = field(default=1.0, metadata={
        "help": "adaptive: stop once the score (see objective) of the assigned class reaches this (1: only "
        "min_gain stops)"})
    min_gain: float = field(default=0.001, metadata={
        "help": "adaptive: the price of one rollout in score: a problem gets more while continuing (and stopping "
        "when it pays) is expected to raise its score by more than this per rollout"})
    prior_check: float = field(default=0.05, metadata={
        "help": "adaptive with per-problem priors: a problem whose first round is this improbable under its own "
        "prior (two-sided, prior-predictive) continues under the pool prior: a wrong prior costs rollouts, never a "
        "wrong stop"})
    total_budget: int | None = field(default=None, metadata={
        "help": "cap on the total rollouts over all problems (counting those already done); empty: no cap"})
    prior: BetaPrior | None = None
    """Prior over pass rates; None fits one to the pool every round (`BetaPrior.fit_pool`), or uses
    a uniform Beta while fewer than 50 problems have trials (too few to fit; with no point masses,
    problems whose rollouts all pass or all fail then take long to settle: 84 rollouts at the
    default price, where the fitted prior of the bench's simulated pool stops them after 20 to 28)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError(
                f"need 1 <= min_samples <= max_samples, got {self.min_samples}, {self.max_samples}"
            )
        if self.samples_per_problem < 1 or self.batch_per_problem < 1:
            raise ValueError("samples_per_problem and batch_per_problem must be >= 1")
        for name in ("samples_per_problem", "max_samples", "batch_per_problem"):
            if getattr(self, name) > MAX_SAMPLES_PER_PROBLEM:
                raise ValueError(
                    f"{name} = {getattr(self, name)} exceeds {MAX_SAMPLES_PER_PROBLEM} rollouts per problem, more "
                    "than any pass-rate label needs: is it a typo?"
                )
        if not 0 < self.confidence <= 1:
            raise ValueError(f"confidence must be in (0, 1], got {self.confidence}")
        if not 0 <= self.prior_check < 1:
            raise ValueError(f"prior_check must be in [0, 1), got {self.prior_check}")
        if self.min_gain < 0:
            raise ValueError(f"min_gain must be >= 0, got {self.min_gain}")
        if self.total_budget is not None and self.total_budget < 0:
            raise ValueError(f"total_budget must be >= 0, got {self.total_budget}")


PRIOR_STRENGTHS = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
"""Pseudo-trials a per-problem prior is rounded to (the nearest on a log scale; 0: no evidence).
Above 64 a prior would stop problems on its own say: no measured drift between label versions
justifies more than a few dozen rollouts' worth."""
PRIOR_RATE_STEPS = 16
"""Pseudo pass rates are rounded to multiples of 1/16, keeping exact 0 and 1 (the point masses):
with `PRIOR_STRENGTHS`, at most 14 x 17 distinct priors, so the stopping rule's tables are built a
bounded number of times whatever the pool's size."""


@dataclass(frozen=True)
class ProblemPriors:
    """Per-problem priors: `base` (the pool's prior) updated with each problem's evidence from
    elsewhere (earlier labels, other models, a probe) as pseudo-counts, already discounted by how far
    that evidence is to be trusted (`pipeline.labels.priors`). Rounded on construction (see
    `PRIOR_STRENGTHS`); a problem with no pseudo-trials is allocated under the pool prior.

    Only when a problem stops depends on its prior: its label is still the class of its own counts.
    """

    base: BetaPrior
    successes: NDArray[np.float64]
    trials: NDArray[np.float64]
    source: NDArray[np.str_] | None = None
    """What each problem's evidence came from (for reports); "" where none."""
    rejected: NDArray[np.bool_] | None = None
    """Problems whose first round contradicted their prior (see `AllocationConfig.prior_check`)."""
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        s, n = np.asarray(self.successes, dtype=float), np.asarray(self.trials, dtype=float)
        if s.shape != n.shape or s.ndim != 1 or np.any(n < 0) or np.any((s < 0) | (s > n)):
            raise ValueError("pseudo-counts must be 1-d, of one length, with 0 <= successes <= trials")
        grid = np.asarray(PRIOR_STRENGTHS)
        nearest = np.abs(np.log1p(n)[:, None] - np.log1p(grid)[None, :]).argmin(axis=1)
        trials = grid[nearest]
        rate = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
        steps = np.round(rate * PRIOR_RATE_STEPS)
        # Some evidence either way is kept as such: rounding 1/20 down to 0 would invent a point mass.
        steps = np.where((s > 0) & (steps == 0), 1, np.where((s < n) & (steps == PRIOR_RATE_STEPS),
                                                             PRIOR_RATE_STEPS - 1, steps))
        object.__setattr__(self, "trials", trials)
        object.__setattr__(self, "successes", trials * steps / PRIOR_RATE_STEPS)
        if self.rejected is None:
            object.__setattr__(self, "rejected", np.zeros(n.shape, dtype=bool))

    @property
    def informed(self) -> NDArray[np.bool_]:
        """Problems allocated under their own prior: evidence, and a first round that agreed with it."""
        return (self.trials > 0) & ~self.rejected

    def prior(self, i: int) -> BetaPrior:
        return self.base.updated(float(self.successes[i]), float(self.trials[i]))

    def groups(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The distinct (pseudo-successes, pseudo-trials) pairs as columns, and each problem's pair."""
        pairs, inverse = np.unique(np.stack([self.successes, self.trials]), axis=1, return_inverse=True)
        return pairs, inverse.ravel()

    def means(self) -> NDArray[np.float64]:
        """Each problem's prior mean pass rate (the base prior's where it has no evidence)."""
        pairs, inverse = self.groups()
        return np.array([float(posterior_mean(0, 0, self.base.updated(*pair))[()]) for pair in pairs.T])[inverse]

    def checked(self, successes: ArrayLike, trials: ArrayLike, level: float) -> ProblemPriors:
        """These priors with `rejected` set where the counts so far have prior-predictive probability at
        most `level` / 2 in either tail: the first round says the evidence was wrong about this problem."""
        s, n = _as_counts(successes, trials)
        rejected = self.rejected.copy()
        pairs, inverse = self.groups()
        for g, pair in enumerate(pairs.T):
            rows = np.flatnonzero((inverse == g) & (n > 0))
            if pair[1] == 0 or rows.size == 0:
                continue
            prior = self.base.updated(*pair)
            for k in np.unique(n[rows]):
                pmf = np.exp(_log_binom(int(k)) + log_marginal(np.arange(k + 1), np.full(k + 1, k), prior))
                low, high = np.cumsum(pmf), np.cumsum(pmf[::-1])[::-1]
                at = rows[n[rows] == k]
                rejected[at] |= np.minimum(low[s[at]], high[s[at]]) <= level / 2
        return replace(self, rejected=rejected, _tables=self._tables)

    def tables(self, pair: NDArray[np.float64], strata: Strata, top: int, config: AllocationConfig) -> _Tables:
        """The stopping rule's tables under one pair's prior, built once per pair (the base prior is
        fixed, unlike the pool's refit)."""
        key = (float(pair[0]), float(pair[1]), strata, top, config)
        if key not in self._tables:
            self._tables[key] = _Tables.build(self.base.updated(*key[:2]), strata, top, config)
        return self._tables[key]


PriorsFromFirstRound = Callable[[NDArray[np.int64], NDArray[np.int64]], ProblemPriors]
"""Builds per-problem priors from every problem's first-round (successes, trials): sources fit how
far to trust their evidence on it (`pipeline.labels.priors`)."""


def first_round_priors(
    make: PriorsFromFirstRound, successes: NDArray[np.int64], trials: NDArray[np.int64], config: AllocationConfig
) -> ProblemPriors:
    """`make`'s priors, each checked against its problem's first round (`AllocationConfig.prior_check`)."""
    priors = make(successes, trials)
    if priors.trials.shape != trials.shape:
        raise ValueError(f"priors for {priors.trials.size} problems, but {trials.size} are allocated")
    return priors.checked(successes, trials, config.prior_check)


def check_independent_trials(allocation: AllocationConfig, sampling: SamplingConfig) -> None:
    """Refuse greedy decoding with more than one rollout per problem: at temperature 0 every
    sample of a problem is the same completion, so its n samples are one trial counted n times (a
    4/4 whose credible interval claims four independent passes)."""
    most = allocation.samples_per_problem if allocation.policy == "uniform" else allocation.max_samples
    if sampling.temperature == 0 and most > 1:
        raise ValueError(
            f"temperature 0 with {most} samples per problem: greedy decoding gives every sample the same "
            "completion, so they are one trial, not independent ones. Sample at a temperature above 0 "
            "(the one your RL trainer uses), or label greedily with one sample per problem (policy: uniform, "
            "samples_per_problem: 1)"
        )


@dataclass(frozen=True)
class AllocationResult:
    """What `run_allocation` ends with."""

    successes: NDArray[np.int64]
    trials: NDArray[np.int64]
    stop_reasons: NDArray[np.str_]
    """Per problem: `settled`, `max_samples` or `budget` (see `stop_reason`)."""
    round_rollouts: list[int]
    """Rollouts requested in each round (each round is one batch for the engine)."""
    priors: ProblemPriors | None = None
    """The per-problem priors allocated under, as checked against the first round."""

    @property
    def rounds(self) -> int:
        return len(self.round_rollouts)

    @property
    def total_rollouts(self) -> int:
        return int(self.trials.sum())


@dataclass(frozen=True)
class _Assessment:
    """The adaptive policy's view of each problem after its current trials."""

    gain: NDArray[np.float64]
    """Expected rise, per rollout, of the assigned class's score (`AllocationConfig.objective`) from
    the next batch on, continuing optimally after it (0 at max_samples)."""
    settled: NDArray[np.bool_]
    """Confident in the class assigned now, or not worth more rollouts."""


def plan_round(
    successes: ArrayLike,
    trials: ArrayLike,
    strata: Strata,
    config: AllocationConfig,
    budget_left: int | None = None,
    rng: np.random.Generator | None = None,
    priors: ProblemPriors | None = None,
) -> NDArray[np.int64]:
    """Extra rollouts per problem for the next round; all zeros when allocation is done.

    `budget_left` defaults to `config.total_budget - trials.sum()` (unlimited without a budget).
    When the budget cannot cover the whole round, the uniform policy spreads it evenly (every
    problem gets the same count, give or take one); the adaptive policy serves problems below
    `min_samples` first, then those with the largest expected gain per rollout. `rng` breaks ties
    at random (else by index), so a pool sorted by source does not favour its first sources.
    `priors` (adaptive only) replaces the pool prior for the problems it informs.
    """
    s, n = _as_counts(successes, trials)
    budget = _budget_left(n, config, budget_left)
    if config.policy == "uniform":
        want = np.maximum(config.samples_per_problem - n, 0)
        priority = np.zeros(n.shape)
    else:
        want = np.maximum(config.min_samples - n, 0)
        assessment = _assess(s, n, strata, config, priors)
        topping_up = want > 0
        more = ~topping_up & ~assessment.settled & (n < config.max_samples)
        want[more] = np.minimum(config.batch_per_problem, config.max_samples - n[more])
        priority = np.where(topping_up, np.inf, assessment.gain)
    if budget is None or want.sum() <= budget:
        return want
    tie = rng.random(n.shape) if rng is not None else np.arange(n.size)
    if config.policy == "uniform":
        return _even_share(want, budget, tie)
    order = np.lexsort((tie, -priority))
    spent_before = np.cumsum(want[order]) - want[order]
    granted = np.zeros_like(want)
    granted[order] = np.clip(budget - spent_before, 0, want[order])
    return granted


def stop_reason(
    successes: ArrayLike,
    trials: ArrayLike,
    strata: Strata,
    config: AllocationConfig,
    priors: ProblemPriors | None = None,
) -> NDArray[np.str_]:
    """Why each problem gets no more rollouts: `settled`, `max_samples`, `budget`, or "" (still open).

    `settled`: the adaptive rule stops it (confident, or more samples are not worth it).
    `max_samples`: it reached the cap (`samples_per_problem` under the uniform policy) unsettled.
    `budget`: it is still open but `config.total_budget` is spent.
    """
    s, n = _as_counts(successes, trials)
    if config.policy == "uniform":
        capped, settled = n >= config.samples_per_problem, np.zeros(n.shape, dtype=bool)
    else:
        capped = n >= config.max_samples
        settled = (n >= config.min_samples) & _assess(s, n, strata, config, priors).settled
    reasons = np.full(n.shape, "", dtype="<U11")
    if _budget_left(n, config, None) == 0:
        reasons[:] = "budget"
    reasons[capped] = "max_samples"
    reasons[settled] = "settled"
    return reasons


def run_allocation(
    sample_fn: Callable[[NDArray[np.int64]], ArrayLike],
    n_problems: int,
    strata: Strata,
    config: AllocationConfig,
    rng: np.random.Generator | None = None,
    priors: PriorsFromFirstRound | None = None,
) -> AllocationResult:
    """Drive `plan_round` to the end; `sample_fn(extra)` returns the successes among `extra[i]` new
    rollouts of each problem i. `priors` is called once, after the first round (adaptive only)."""
    successes = np.zeros(n_problems, dtype=np.int64)
    trials = np.zeros(n_problems, dtype=np.int64)
    round_rollouts: list[int] = []
    checked: ProblemPriors | None = None
    while (extra := plan_round(successes, trials, strata, config, rng=rng, priors=checked)).any():
        new = np.asarray(sample_fn(extra), dtype=np.int64)
        if new.shape != extra.shape or np.any((new < 0) | (new > extra)):
            raise ValueError("sample_fn must return, per problem, 0 <= successes <= extra")
        successes += new
        trials += extra
        round_rollouts.append(int(extra.sum()))
        if priors is not None and checked is None and config.policy == "adaptive":
            checked = first_round_priors(priors, successes, trials, config)
    return AllocationResult(
        successes=successes,
        trials=trials,
        stop_reasons=stop_reason(successes, trials, strata, config, checked),
        round_rollouts=round_rollouts,
        priors=checked,
    )


def expected_outcome(prior: BetaPrior, strata: Strata, config: AllocationConfig) -> tuple[float, float]:
    """Expected rollouts and expected final score (see `AllocationConfig.objective`) of `config`'s
    rule on one problem whose pass rate is drawn from `prior`.

    Exact, not sampled: the distribution of (successes, trials) is carried through the rule batch by
    batch. The prior is held fixed (no refit between rounds) and there is no total budget, so with
    the pool's true prior this is what the rule spends and reaches on an endless pool. Under the
    `signal` objective, 1 - score is the expected learning signal lost to a wrong class, in units of
    the most a problem carries (p(1 - p) = 1/4).
    """
    uniform = config.policy == "uniform"
    cap = config.samples_per_problem if uniform else config.max_samples
    start = cap if uniform else config.min_samples
    tables = _Tables.build(prior, strata, cap, config)
    pending = {start: np.exp(_log_binom(start) + tables.log_marginal[: start + 1, start])}
    rollouts = score = 0.0
    for k in sorted(range(start, cap + 1)):
        mass = pending.pop(k, None)
        if mass is None:
            continue
        now = tables.score[: k + 1, k]
        stop = np.ones(k + 1, dtype=bool) if k >= cap else (
            (now >= config.confidence) | (tables.gain[: k + 1, k] <= config.min_gain)
        )
        rollouts += k * float(mass[stop].sum())
        score += float((mass * now)[stop].sum())
        if stop.all():
            continue
        h = min(config.batch_per_problem, cap - k)
        s = np.arange(k + 1)[:, None]
        predictive = np.exp(_log_binom(h) + tables.log_marginal[s + np.arange(h + 1), k + h]
                            - tables.log_marginal[s, k])
        after = np.zeros(k + h + 1)
        for j in range(h + 1):
            after[j : j + k + 1] += np.where(stop, 0.0, mass) * predictive[:, j]
        pending[k + h] = pending.get(k + h, 0.0) + after
    return rollouts, score


def _even_share(want: NDArray[np.int64], budget: int, tie: NDArray) -> NDArray[np.int64]:
    """`budget` rollouts spread as evenly as `want` allows: every problem gets min(want, level),
    the highest level the budget covers, and the remainder goes one each in `tie` order."""
    lo, hi = 0, int(want.max())
    while lo < hi:  # the highest level whose capped total fits the budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(want, mid).sum() <= budget else (lo, mid - 1)
    granted = np.minimum(want, lo)
    room = np.flatnonzero(want > lo)
    extra = room[np.argsort(tie[room], kind="stable")][: budget - int(granted.sum())]
    granted[extra] += 1
    return granted


def _as_counts(successes: ArrayLike, trials: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    s, n = np.asarray(successes, dtype=np.int64), np.asarray(trials, dtype=np.int64)
    if s.shape != n.shape or s.ndim != 1:
        raise ValueError("successes and trials must be 1-d arrays of the same length")
    if np.any(n < 0) or np.any((s < 0) | (s > n)):
        raise ValueError("need 0 <= successes <= trials")
    return s, n


def _budget_left(
    trials: NDArray[np.int64], config: AllocationConfig, budget_left: int | None
) -> int | None:
    if budget_left is not None:
        return max(int(budget_left), 0)
    if config.total_budget is None:
        return None
    return max(config.total_budget - int(trials.sum()), 0)


def _assess(
    s: NDArray[np.int64],
    n: NDArray[np.int64],
    strata: Strata,
    config: AllocationConfig,
    priors: ProblemPriors | None = None,
) -> _Assessment:
    """Confidence and lookahead gain per problem, computed once per distinct (prior, successes, trials)."""
    sampled = n > 0
    gain, settled = np.zeros(n.shape), np.zeros(n.shape, dtype=bool)
    if not sampled.any():
        return _Assessment(gain, settled)
    top = max(config.max_samples, int(n.max()))
    own = sampled & priors.informed if priors is not None else np.zeros(n.shape, dtype=bool)
    if (sampled & ~own).any():
        if config.prior is not None:
            prior = config.prior
        elif sampled.sum() < MIN_POOL_TO_FIT:
            prior = BetaPrior()
        else:
            prior = BetaPrior.fit_pool(s, n)
        _settle(_Tables.build(prior, strata, top, config), s, n, sampled & ~own, config, gain, settled)
    if own.any():
        pairs, inverse = priors.groups()
        for g in np.unique(inverse[own]):
            _settle(priors.tables(pairs[:, g], strata, top, config), s, n, own & (inverse == g), config, gain,
                    settled)
    return _Assessment(gain, settled)


def _settle(
    tables: _Tables,
    s: NDArray[np.int64],
    n: NDArray[np.int64],
    rows: NDArray[np.bool_],
    config: AllocationConfig,
    gain: NDArray[np.float64],
    settled: NDArray[np.bool_],
) -> None:
    """Fill `gain` and `settled` at `rows` from one prior's tables."""
    pairs, inverse = np.unique(np.stack([s[rows], n[rows]]), axis=1, return_inverse=True)
    ps, pn = pairs
    conf = tables.score[ps, pn]
    room = np.maximum(config.max_samples - pn, 0)
    pair_gain = tables.gain[ps, pn]
    # A problem at max_samples can gain nothing more; it is capped, not settled, unless confident.
    pair_settled = (conf >= config.confidence) | ((pair_gain <= config.min_gain) & (room > 0))
    inverse = inverse.ravel()
    gain[rows], settled[rows] = pair_gain[inverse], pair_settled[inverse]


@dataclass(frozen=True)
class _Tables:
    """Per-(successes, trials) quantities for every count up to a trial cap, indexed [s, n]."""

    score: NDArray[np.float64]
    """The assigned class's score (0 where n == 0): under `accuracy` the posterior probability that
    the class the counts assign is the true class; under `signal` 1 - E[4p(1 - p) * 1{class wrong}],
    the posterior expected learning signal lost to a wrong label, as a share of the most a problem
    can carry (1/4 at p = 1/2), so both live in [0, 1] and share thresholds."""
    gain: NDArray[np.float64]
    """Expected rise in score per rollout from drawing the next batch and continuing optimally
    after it (0 from max_samples on)."""
    log_marginal: NDArray[np.float64]
    """`estimators.log_marginal`, for predictive probabilities."""

    @classmethod
    def build(cls, prior: BetaPrior, strata: Strata, top: int, config: AllocationConfig) -> _Tables:
        s, n = np.nonzero(np.tri(top + 1, dtype=bool).T)  # all 0 <= s <= n <= top
        score = np.zeros((top + 1, top + 1))
        log_m = np.full((top + 1, top + 1), -np.inf)
        log_m[s, n] = log_marginal(s, n, prior)
        s, n = s[n > 0], n[n > 0]
        assigned = np.arange(s.size), class_index(strata, strata.observed_class(s, n))
        if config.objective == "signal":
            signal = stratum_signal(s, n, prior, strata)
            score[s, n] = 1.0 - 4.0 * (signal.sum(axis=1) - signal[assigned])
        else:
            score[s, n] = stratum_probabilities(s, n, prior, strata)[assigned]
        return cls(score, _continuation_gain(score, log_m, config), log_m)


def _continuation_gain(
    score: NDArray[np.float64], log_m: NDArray[np.float64], config: AllocationConfig
) -> NDArray[np.float64]:
    """Per (s, n): (E[value after the next batch] - score now) / batch size, where a problem's value
    is what it ends with under the optimal rule for the price `min_gain` per rollout: its score
    once it stops (at `confidence`, at `max_samples`, or when continuing does not pay), else the
    expected value after one more batch less that batch's price. Backward induction from
    `max_samples` down; the posterior predictive of j passes in h more rollouts is
    C(h, j) * exp(log_marginal(s + j, n + h) - log_marginal(s, n)).

    Looking one batch ahead alone would undervalue a problem near a stratum edge, where no single
    batch moves its observed pass rate across; the induction credits every run of batches that pays.
    """
    top = score.shape[0] - 1
    cap = min(config.max_samples, top)
    value = score.copy()
    gain = np.zeros_like(score)
    for k in range(cap - 1, 0, -1):
        h = min(config.batch_per_problem, cap - k)
        s = np.arange(k + 1)[:, None]
        j = np.arange(h + 1)
        predictive = np.exp(_log_binom(h) + log_m[s + j, k + h] - log_m[s, k])
        expected = (predictive * value[s + j, k + h]).sum(axis=1)
        now = score[: k + 1, k]
        gain[: k + 1, k] = (expected - now) / h
        go = (now < config.confidence) & (gain[: k + 1, k] > config.min_gain)
        value[: k + 1, k] = np.where(go, expected - config.min_gain * h, now)
    return gain


def _log_binom(h: int) -> NDArray[np.float64]:
    j = np.arange(h + 1)
    return special.gammaln(h + 1) - special.gammaln(j + 1) - special.gammaln(h - j + 1)
