"""Bayesian pass-rate estimates from Bernoulli rollout outcomes, vectorised over problems.

A problem's pass rate p gets a prior that is a Beta(alpha, beta) plus optional point masses at
p = 0 and p = 1 (a zero-one-inflated Beta). The point masses are what make "this problem is
unsolved" a statement with posterior probability: real pools hold many problems the model never
(or always) solves, and a plain Beta can only say "p is small". With both masses at 0 the prior
is an ordinary Beta and every formula reduces to the textbook conjugate one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats

from pipeline.difficulty.strata import Strata

_FIT_BOUNDS = (0.02, 100.0)
"""Range for fitted alpha and beta: wider lets a small pool drive the prior to a degenerate shape."""


@dataclass(frozen=True)
class BetaPrior:
    """Prior over a pass rate: Beta(alpha, beta), optionally mixed with point masses at 0 and 1."""

    alpha: float = 1.0
    """Beta shape: pseudo-successes of the continuous part."""
    beta: float = 1.0
    """Beta shape: pseudo-failures of the continuous part."""
    solved_mass: float = 0.0
    """Prior probability that p == 1 exactly (the model always solves the problem)."""
    unsolved_mass: float = 0.0
    """Prior probability that p == 0 exactly (the model never solves the problem)."""

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0 and math.isfinite(self.alpha + self.beta)):
            raise ValueError(
                f"alpha and beta must be positive and finite, got {self.alpha}, {self.beta}"
            )
        if self.solved_mass < 0 or self.unsolved_mass < 0 or self.solved_mass + self.unsolved_mass >= 1:
            raise ValueError(
                "solved_mass and unsolved_mass must be >= 0 and sum to less than 1, "
                f"got {self.solved_mass}, {self.unsolved_mass}"
            )

    @classmethod
    def fit_pool(
        cls, successes: ArrayLike, trials: ArrayLike, *, point_masses: bool = True
    ) -> BetaPrior:
        """Empirical Bayes: the prior maximising the pool's marginal (beta-binomial) likelihood.

        Problems with no trials are ignored. Maximum likelihood rather than moments because the
        likelihood stays valid when how many trials a problem got depended on its outcomes
        (adaptive allocation); moments of s / n would then be biased. alpha and beta are kept in
        [0.02, 100]; `point_masses=False` fits a plain Beta.
        """
        s, n = _counts(successes, trials)
        keep = n > 0
        if not keep.any():
            raise ValueError("cannot fit a prior to a pool with no trials")
        pairs, weight = np.unique(np.stack([s[keep], n[keep]]), axis=1, return_counts=True)
        s, n = pairs.astype(float)
        rate = s / n
        mean = float(np.clip(np.average(rate, weights=weight), 0.05, 0.95))
        var = float(np.average((rate - mean) ** 2, weights=weight))
        size = float(np.clip(mean * (1 - mean) / max(var, 1e-6) - 1, 0.1, 50.0))
        theta0 = [math.log(mean * size), math.log((1 - mean) * size)]
        if point_masses:
            theta0 += [-1.0, -1.0]  # logits of (unsolved, solved) against the Beta part: ~0.2 each
        fit = optimize.minimize(
            _neg_log_lik, np.array(theta0), args=(s, n, weight.astype(float)), jac=True, method="BFGS"
        )
        # BFGS is unbounded (L-BFGS-B's bounded steps cost more here than the whole fit); clip after.
        a, b = np.clip(np.exp(fit.x[:2]), *_FIT_BOUNDS)
        if not point_masses:
            return cls(float(a), float(b))
        masses = special.softmax(np.append(np.clip(fit.x[2:], -12.0, 12.0), 0.0))
        return cls(float(a), float(b), solved_mass=float(masses[1]), unsolved_mass=float(masses[0]))

    def updated(self, successes: float, trials: float) -> BetaPrior:
        """The posterior after `successes` of `trials` (fractional pseudo-counts allowed): a power
        prior, when the counts are another label's scaled down by how far it is to be trusted.

        The point masses survive only where the counts allow them: any success rules out p == 0,
        any failure p == 1.
        """
        if not 0 <= successes <= trials:
            raise ValueError(f"need 0 <= successes <= trials, got {successes}, {trials}")
        log_zero = _log(self.unsolved_mass) if successes == 0 else -math.inf
        log_one = _log(self.solved_mass) if successes == trials else -math.inf
        log_beta = math.log1p(-self.solved_mass - self.unsolved_mass) + float(
            special.betaln(self.alpha + successes, self.beta + trials - successes)
            - special.betaln(self.alpha, self.beta))
        # The Beta part keeps a sliver of weight: a prior with none could never be contradicted.
        parts = np.maximum(np.exp(np.array([log_zero, log_beta, log_one]) - special.logsumexp(
            [log_zero, log_beta, log_one])), [0.0, 1e-9, 0.0])
        w_zero, _, w_one = parts / parts.sum()
        return BetaPrior(self.alpha + successes, self.beta + trials - successes,
                         solved_mass=float(w_one), unsolved_mass=float(w_zero))


def _neg_log_lik(
    theta: NDArray[np.float64],
    s: NDArray[np.float64],
    n: NDArray[np.float64],
    weight: NDArray[np.float64],
) -> tuple[float, NDArray[np.float64]]:
    """Negative marginal log-likelihood of (s, n) counts and its gradient.

    theta = (log alpha, log beta[, logit unsolved, logit solved]), logits against the Beta part.
    """
    a, b = np.exp(theta[:2])
    log_beta = special.betaln(a + s, b + n - s) - special.betaln(a, b)
    dig_ab = special.digamma(a + b) - special.digamma(a + b + n)
    d_log_beta = np.stack(
        [
            a * (special.digamma(a + s) - special.digamma(a) + dig_ab),
            b * (special.digamma(b + n - s) - special.digamma(b) + dig_ab),
        ]
    )
    if theta.size == 2:
        return -float(weight @ log_beta), -(d_log_beta @ weight)
    log_norm = special.logsumexp(np.append(theta[2:], 0.0))
    log_w0, log_w1, log_c = theta[2] - log_norm, theta[3] - log_norm, -log_norm
    terms = np.stack(
        [
            log_c + log_beta,
            np.where(s == 0, log_w0, -np.inf),
            np.where(s == n, log_w1, -np.inf),
        ]
    )
    log_lik = special.logsumexp(terms, axis=0)
    resp = np.exp(terms - log_lik)  # posterior responsibilities of (Beta part, p == 0, p == 1)
    grad = np.concatenate(
        [
            d_log_beta @ (weight * resp[0]),
            [weight @ (resp[1] - math.exp(log_w0)), weight @ (resp[2] - math.exp(log_w1))],
        ]
    )
    return -float(weight @ log_lik), -grad


def posterior_weights(
    successes: ArrayLike, trials: ArrayLike, prior: BetaPrior
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Posterior probabilities of the three prior components: (p == 0, Beta part, p == 1).

    The Beta part's posterior is Beta(alpha + s, beta + n - s).
    """
    parts = np.stack(_log_components(successes, trials, prior))
    w_zero, w_beta, w_one = np.exp(parts - special.logsumexp(parts, axis=0))
    return w_zero, w_beta, w_one


def log_marginal(successes: ArrayLike, trials: ArrayLike, prior: BetaPrior) -> NDArray[np.float64]:
    """log P(one given sequence of n outcomes with s successes) under the prior; fractional counts
    (a discounted label's pseudo-counts) are allowed.

    Ratios of these give the posterior predictive: P(j of h more pass | s of n) =
    C(h, j) * exp(log_marginal(s + j, n + h) - log_marginal(s, n)).
    """
    return special.logsumexp(np.stack(_log_components(successes, trials, prior, dtype=np.float64)), axis=0)


def posterior_mean(
    successes: ArrayLike, trials: ArrayLike, prior: BetaPrior = BetaPrior()
) -> NDArray[np.float64]:
    """E[p | s successes in n trials]; (alpha + s) / (alpha + beta + n) for a plain Beta prior."""
    s, n = _counts(successes, trials)
    _, w_beta, w_one = posterior_weights(s, n, prior)
    return w_one + w_beta * (prior.alpha + s) / (prior.alpha + prior.beta + n)


def credible_interval(
    successes: ArrayLike, trials: ArrayLike, prior: BetaPrior = BetaPrior(), level: float = 0.9
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Equal-tailed posterior interval (lo, hi) holding `level` of the posterior mass.

    The point masses sit at the ends of [0, 1], so the posterior quantile stays closed-form:
    0 while the quantile is within the p == 0 mass, 1 within the p == 1 mass, a Beta ppf between.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, n = _counts(successes, trials)
    w_zero, w_beta, _ = posterior_weights(s, n, prior)
    a, b = prior.alpha + s, prior.beta + n - s

    def quantile(q: float) -> NDArray[np.float64]:
        inner = np.clip((q - w_zero) / np.maximum(w_beta, 1e-300), 0.0, 1.0)
        value = stats.beta.ppf(inner, a, b)
        return np.where(q <= w_zero, 0.0, np.where(q >= w_zero + w_beta, 1.0, value))

    return quantile((1 - level) / 2), quantile((1 + level) / 2)


def pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> NDArray[np.float64]:
    """Unbiased pass@k from c correct out of n samples (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{j<k} (n - c - j) / (n - j): every factor is in [0, 1], so nothing
    overflows, and a factor of 0 (fewer than k failures) gives exactly 1.
    """
    n, c, k = (np.asarray(a, dtype=np.int64) for a in np.broadcast_arrays(n, c, k))
    if np.any(k < 1) or np.any(k > n) or np.any((c < 0) | (c > n)):
        raise ValueError("need 1 <= k <= n and 0 <= c <= n")
    all_fail = np.ones(n.shape)
    for j in range(int(k.max(initial=0))):
        factor = np.maximum(n - c - j, 0) / np.maximum(n - j, 1)
        all_fail *= np.where(j < k, factor, 1.0)
    return 1.0 - all_fail


def stratum_probabilities(
    successes: ArrayLike, trials: ArrayLike, prior: BetaPrior, strata: Strata
) -> NDArray[np.float64]:
    """Posterior mass of each class, shape (problems, len(strata.classes)), columns in that order.

    `solved` / `unsolved` are the point masses at p = 1 / p = 0 (see `pipeline.difficulty.strata`); with
    those classes not excluded the point masses join stage 1 / stage K. Under a plain Beta prior
    (no point masses) `solved` and `unsolved` get probability 0. Rows sum to 1.
    """
    s, n = _counts(np.atleast_1d(successes), np.atleast_1d(trials))
    w_zero, w_beta, w_one = posterior_weights(s, n, prior)
    return _class_columns(w_zero, w_beta * _bin_masses(prior.alpha + s, prior.beta + n - s, strata), w_one, strata)


def stratum_signal(
    successes: ArrayLike, trials: ArrayLike, prior: BetaPrior, strata: Strata
) -> NDArray[np.float64]:
    """Posterior expected learning signal in each class: E[p(1 - p) * 1{p in class}], columns as in
    `stratum_probabilities`; a row sums to E[p(1 - p) | s, n].

    p(1 - p) is the reward variance that RL with binary rewards learns from, so these are what a
    misclassification costs in learning signal. The point masses carry none (p(1 - p) = 0 at p = 0
    and 1), so `solved` / `unsolved` columns are 0 when excluded. Closed form: p(1 - p) times the
    Beta(a, b) density is ab / ((a + b)(a + b + 1)) times the Beta(a + 1, b + 1) density.
    """
    s, n = _counts(np.atleast_1d(successes), np.atleast_1d(trials))
    _, w_beta, _ = posterior_weights(s, n, prior)
    a, b = prior.alpha + s, prior.beta + n - s
    signal = w_beta * a * b / ((a + b) * (a + b + 1))
    zero = np.zeros(s.shape)
    return _class_columns(zero, signal * _bin_masses(a + 1, b + 1, strata), zero, strata)


def _bin_masses(a: NDArray, b: NDArray, strata: Strata) -> NDArray[np.float64]:
    """Beta(a, b) mass in each stage bin, highest bin first: shape (stages, problems)."""
    cdf = stats.beta.cdf(np.asarray(strata.edges)[:, None], a, b)
    return cdf[:-1] - cdf[1:]


def _class_columns(
    at_zero: NDArray[np.float64], stages: NDArray[np.float64], at_one: NDArray[np.float64], strata: Strata
) -> NDArray[np.float64]:
    """Per-class columns from the p == 0 part, the per-stage parts and the p == 1 part: a point
    mass that is not a class of its own joins the stage it falls in."""
    stages = stages.copy()
    columns: list[NDArray[np.float64]] = []
    if strata.exclude_solved:
        columns.append(at_one)
    else:
        stages[0] += at_one
    if strata.exclude_unsolved:
        columns.extend(stages)
        columns.append(at_zero)
    else:
        stages[-1] += at_zero
        columns.extend(stages)
    return np.stack(columns, axis=1)


def class_index(strata: Strata, classes: ArrayLike) -> NDArray[np.int64]:
    """Column of each class id in `stratum_probabilities`' output (ValueError for an unknown id)."""
    ids = np.asarray(classes, dtype=np.int64)
    table = np.full(strata.n_stages + 2, -1, dtype=np.int64)  # class id c sits at table[c + 1]
    table[np.asarray(strata.classes) + 1] = np.arange(len(strata.classes))
    if np.any((ids < -1) | (ids > strata.n_stages)) or np.any(table[np.clip(ids + 1, 0, None)] < 0):
        raise ValueError(f"class ids must be among {strata.classes}")
    return table[ids + 1]


def _log_components(
    successes: ArrayLike, trials: ArrayLike, prior: BetaPrior, dtype: type = np.int64
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Joint log-probability of the outcomes and each prior component: (p == 0, Beta part, p == 1)."""
    s, n = _counts(successes, trials, dtype)
    log_beta = math.log1p(-prior.solved_mass - prior.unsolved_mass) + (
        special.betaln(prior.alpha + s, prior.beta + n - s) - special.betaln(prior.alpha, prior.beta)
    )
    log_zero = np.where(s == 0, _log(prior.unsolved_mass), -np.inf)
    log_one = np.where(s == n, _log(prior.solved_mass), -np.inf)
    return log_zero, log_beta, log_one


def _counts(successes: ArrayLike, trials: ArrayLike, dtype: type = np.int64) -> tuple[NDArray, NDArray]:
    s, n = np.broadcast_arrays(np.asarray(successes), np.asarray(trials))
    if np.any(n < 0) or np.any((s < 0) | (s > n)):
        raise ValueError("need 0 <= successes <= trials")
    return s.astype(dtype), n.astype(dtype)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf
