"""Per-problem priors for relabelling: what earlier labels, other models and a probe say about each
problem's pass rate under the new target, trusted as far as they are measured to hold.

A source is one set of evidence per problem as counts: a label version's (successes, trials), or a
probe's prediction as a pass rate worth `PREDICTION_TRIALS` trials. Evidence from another revision,
sampling or model is not the new target's: a source's counts enter as a power prior, scaled by
w = k / (n + k), so a problem it labelled with n trials counts as n k / (n + k) trials, never more
than k. k, the source's strength, says how far labels moved between it and the new target: a
source whose labels held gets a large k, one that moved a small k (0: unused). Every k is fitted
by maximum likelihood on the new target's own first round (every problem's first `min_samples`
rollouts, drawn before any stopping rule, so unselected): the k that makes the new counts most
probable under the beta-binomial predictive of the prior the sources give, all sources jointly
(their pseudo-counts add). Nothing here is a constant guess of drift; a source measured on too few
problems is not used.

The allocation then stops each problem by the Bayes-optimal rule under its own prior
(`pipeline.rollouts.allocation.ProblemPriors`), and a problem whose first round contradicts its
prior continues under the pool prior, so a wrong prior costs rollouts, not a wrong label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from pipeline.difficulty.estimators import BetaPrior, log_marginal
from pipeline.labels.history import COUNT_COLUMNS, LabelHistory
from pipeline.labels.pass_rates import LabelTarget
from pipeline.difficulty.strata import Strata
from pipeline.rollouts.allocation import MIN_POOL_TO_FIT, AllocationConfig, ProblemPriors, expected_outcome

PREDICTION_TRIALS = 1e6
"""Trials a prediction's pass rate stands for before discounting: its fitted strength k alone then
decides its weight (n k / (n + k) ~ k)."""
STRENGTH_BOUNDS = (0.05, 1e4)
"""Range of a fitted source strength k, in trials; a source whose fit hits the lower end is unused."""
UNUSED_BELOW = 0.5
"""A source fitted to less than half a trial's strength is dropped: it would shift no stopping decision."""


@dataclass(frozen=True)
class PriorSpec:
    """Where per-problem priors for adaptive allocation come from."""

    use_priors: bool = field(default=True, metadata={
        "help": "relabel under per-problem priors: where the label history holds labels of the pool under other "
        "revisions, samplings or models (at least 50 problems' worth), sample adaptively, whatever the policy, each "
        "problem under its own prior from them, each source trusted as far as the new target's first round shows "
        "it holds; off: the policy as set, adaptive with one prior fitted to the pool"})
    use_probe: bool = field(default=True, metadata={
        "help": "with use_priors, add the prediction of the newest saved probe that passed its floor, fitted for "
        "another label key and readable from the new model's hidden states (same width, layer present), as one "
        "more source, trusted as far as the first round shows; costs one prefill of the pool (transformers) "
        "before sampling, and lets a pool never labelled before be relabelled under priors"})
    max_sources: int = field(default=3, metadata={
        "help": "label versions used as prior sources, newest first, one per (model, revision, sampling)"})

    def __post_init__(self) -> None:
        if self.max_sources < 1:
            raise ValueError(f"max_sources must be >= 1, got {self.max_sources}")


@dataclass(frozen=True)
class PriorSource:
    """One source's evidence, aligned with the pool being allocated (0 trials: no evidence)."""

    name: str
    successes: NDArray[np.float64]
    trials: NDArray[np.float64]

    @property
    def labelled(self) -> int:
        """Problems the source has evidence on."""
        return int((self.trials > 0).sum())


def label_source(name: str, labels: pd.DataFrame, problem_ids: Sequence[str]) -> PriorSource:
    """A label version's counts for `problem_ids` (problems it did not label get none)."""
    counts = (labels.assign(problem_id=labels["problem_id"].astype(str)).drop_duplicates("problem_id", keep="last")
              .set_index("problem_id")[["successes", "trials"]].reindex(pd.Index(problem_ids, dtype=str))
              .fillna(0))
    return PriorSource(name, counts["successes"].to_numpy(float), counts["trials"].to_numpy(float))


def prediction_source(name: str, predicted: ArrayLike) -> PriorSource:
    """A probe's predicted pass rates (NaN: no prediction) as a source; its strength, fitted like any
    source's, is the prediction's calibrated worth in trials."""
    p = np.asarray(predicted, dtype=float)
    known = np.isfinite(p)
    if np.any(known & ((p < 0) | (p > 1))):
        raise ValueError("predicted pass rates must lie in [0, 1]")
    return PriorSource(name, np.where(known, p, 0.0) * PREDICTION_TRIALS, np.where(known, PREDICTION_TRIALS, 0.0))


def history_sources(
    history: LabelHistory, problem_ids: Sequence[str], target: LabelTarget, max_sources: int
) -> list[PriorSource]:
    """The newest label version of each (model, revision, sampling) in `history` other than `target`'s
    own label key, newest first, at most `max_sources`; named by their label key."""
    summaries = history.summaries()
    summaries = summaries[summaries["label_key"] != target.key].iloc[::-1]
    latest = summaries.drop_duplicates(["model_id", "revision", "sampling_key"]).head(max_sources)
    return [label_source(row.label_key, history.labels(row.version, COUNT_COLUMNS), problem_ids) for row in latest.itertuples()]


def relabel_allocation(
    allocation: AllocationConfig, spec: PriorSpec, history: LabelHistory, problem_ids: Sequence[str],
    target: LabelTarget, predictions: Sequence[PriorSource] = (),
) -> tuple[AllocationConfig, SourcePriors | None]:
    """The allocation `problem_ids` are sampled under, and their priors. A relabel (`spec.use_priors`
    and earlier labels, or `predictions` (`prediction_source`), of at least `MIN_POOL_TO_FIT` of the
    problems under another label key) is adaptive under per-problem priors from them: uniform sampling
    would spend as much as if nothing were known. Anything else runs as configured."""
    if not spec.use_priors:
        return allocation, None
    sources = [s for s in [*history_sources(history, problem_ids, target, spec.max_sources), *predictions]
               if s.labelled >= MIN_POOL_TO_FIT]
    if not sources:
        return allocation, None
    return replace(allocation, policy="adaptive"), SourcePriors(sources)


def discounted(source: PriorSource, strength: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The source's pseudo-counts at strength k: its counts times k / (n + k)."""
    w = np.divide(strength, source.trials + strength, out=np.zeros_like(source.trials), where=source.trials > 0)
    return source.successes * w, source.trials * w


def combined(
    sources: Sequence[PriorSource], strengths: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Pseudo-counts of all sources together: independent evidence adds."""
    parts = [discounted(src, float(k)) for src, k in zip(sources, np.asarray(strengths, dtype=float))]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def fit_strengths(
    base: BetaPrior, sources: Sequence[PriorSource], successes: ArrayLike, trials: ArrayLike
) -> NDArray[np.float64]:
    """Each source's strength k maximising the likelihood of the new counts (`successes` of `trials`)
    under `base` updated with all sources' discounted counts; 0 for a source with fewer than
    `MIN_POOL_TO_FIT` problems labelled both by it and in the new counts, or fitted below `UNUSED_BELOW`."""
    s, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    usable = [i for i, src in enumerate(sources) if ((src.trials > 0) & (n > 0)).sum() >= MIN_POOL_TO_FIT]
    strengths = np.zeros(len(sources))
    if not usable:
        return strengths
    chosen = [sources[i] for i in usable]

    def neg_log_lik(log_k: NDArray[np.float64]) -> float:
        ps, pn = combined(chosen, np.exp(log_k))
        return -float((log_marginal(ps + s, pn + n, base) - log_marginal(ps, pn, base))[n > 0].sum())

    bounds = [tuple(np.log(STRENGTH_BOUNDS))] * len(chosen)
    fit = optimize.minimize(neg_log_lik, np.full(len(chosen), np.log(8.0)), method="L-BFGS-B", bounds=bounds)
    k = np.exp(fit.x)
    strengths[usable] = np.where(k < UNUSED_BELOW, 0.0, k)
    return strengths


@dataclass
class SourcePriors:
    """Per-problem priors from `sources`, built on the first round's counts (a
    `pipeline.rollouts.allocation.PriorsFromFirstRound`): the base prior is fitted to the first round
    (the new target's pool), the sources' strengths too. `strengths` holds the fit once called."""

    sources: Sequence[PriorSource]
    strengths: NDArray[np.float64] | None = None

    def __call__(self, successes: NDArray[np.int64], trials: NDArray[np.int64]) -> ProblemPriors:
        sampled = trials > 0
        base = BetaPrior.fit_pool(successes, trials) if sampled.sum() >= MIN_POOL_TO_FIT else BetaPrior()
        self.strengths = fit_strengths(base, self.sources, successes, trials)
        ps, pn = combined(self.sources, self.strengths)
        names = np.full(trials.shape, "", dtype=object)
        for src, k in zip(self.sources, self.strengths):
            used = (src.trials > 0) & (k > 0)
            names[used] = np.where(names[used] == "", src.name, names[used] + " + " + src.name)
        return ProblemPriors(base, ps, pn, source=names.astype(str))

    def summary(self) -> pd.DataFrame:
        """One row per source: name, problems it covers, fitted strength (None before the first round)."""
        fitted = self.strengths if self.strengths is not None else [None] * len(self.sources)
        return pd.DataFrame({"source": [s.name for s in self.sources],
                             "problems": [s.labelled for s in self.sources],
                             "strength": [None if k is None else round(float(k), 2) for k in fitted]})


def prior_report(allocation: pd.DataFrame, config: AllocationConfig, strata: Strata) -> tuple[pd.DataFrame, dict]:
    """What the priors were and what they saved, from an adaptive allocation table (`rollout_allocation`
    with its `prior_*` columns): per source (`pool` where a problem had none, `rejected` where its
    first round contradicted its prior) the problems, mean prior pass rate, mean strength and mean
    rollouts; and the totals beside what uniform allocation and the pool prior alone (its expected
    cost per problem, `expected_outcome`, under the prior fitted to these counts) would have spent."""
    s, n = allocation["successes"].to_numpy(np.int64), allocation["trials"].to_numpy(np.int64)
    source = allocation.get("prior_source", pd.Series("", index=allocation.index)).fillna("")
    rejected = allocation.get("prior_rejected", pd.Series(False, index=allocation.index)).fillna(False).astype(bool)
    group = np.where(rejected, "rejected", np.where(source == "", "pool", source))
    table = (allocation.assign(source=group, prior_mean=allocation.get("prior_mean", np.nan),
                               prior_strength=allocation.get("prior_strength", 0.0))
             .groupby("source").agg(problems=("trials", "size"), prior_mean=("prior_mean", "mean"),
                                    strength=("prior_strength", "mean"), rollouts=("trials", "mean"))
             .round(3).reset_index())
    sampled = n > 0
    pool = BetaPrior.fit_pool(s, n) if sampled.sum() >= MIN_POOL_TO_FIT else BetaPrior()
    pool_cost = float(expected_outcome(pool, strata, replace(config, prior=None, total_budget=None))[0]) * len(n)
    totals = {"rollouts": int(n.sum()), "uniform_rollouts": config.samples_per_problem * len(n),
              "pool_prior_expected_rollouts": int(round(pool_cost)), "with_own_prior": int((group != "pool").sum()
                                                                                      - (group == "rejected").sum()),
              "rejected_priors": int((group == "rejected").sum()),
              "saved_vs_pool_prior": round(1 - float(n.sum()) / pool_cost, 3) if pool_cost else 0.0}
    return table, totals
