"""Difficulty probes: predict a model's pass rate on a problem from its prompt hidden states.

A probe is fitted on problems whose pass rates were measured with rollouts, scored by grouped
cross-validation (so near-duplicates from one generator or level cannot inflate it), and then labels
new problems for the price of a prefill. It is a cheap prior, not a label: `select_for_rollouts`
spends rollouts where the probe is least sure which stratum a problem belongs to, and the blocking
check `probe_passes` refuses a probe whose held-out ranking is no better than a floor.

Saving and loading a probe is `pipeline.probes.persistence`; merging its predictions with measured
labels for a curriculum is `pipeline.curriculum.labels`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import norm, pearsonr, spearmanr
from sklearn.base import is_classifier
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.core.plots import axes, png
from pipeline.core.records import canonical_json, content_hash
from pipeline.difficulty.strata import Strata

log = logging.getLogger(__name__)

ProbeKind = Literal["ridge", "logistic", "hist_gbt"]
KINDS = get_args(ProbeKind)
LINEAR_KINDS = ("ridge", "logistic")


@dataclass(frozen=True)
class ProbeConfig:
    """How a probe is fitted and judged."""

    kind: ProbeKind = field(default="ridge", metadata={
        "help": "ridge on the logit pass rate, logistic on ever solved, or hist_gbt (gradient-boosted trees)"})
    """`ridge`: regularised linear regression on the logit of the smoothed pass rate;
    `logistic`: classifier of solvable (some trial passed) vs never solved, whose probability
    stands in for the pass rate; `hist_gbt`: gradient-boosted trees on the same logit target."""
    alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
    """L2 strengths tried by an inner leave-one-out (ridge) or 3-fold (logistic, as C = 1/alpha)
    search inside each training fold. Hidden states are wide (hundreds of dimensions) and labelled
    sets small, so the grid reaches strong regularisation. Unused by `hist_gbt`."""
    cv_folds: int = field(default=5, metadata={
        "help": "grouped cross-validation folds, groups = category (fewer when there are fewer groups)"})
    min_spearman: float = field(default=0.3, metadata={
        "help": "floor on the held-out Spearman correlation; below it the check "
        "difficulty_probe_is_good_enough fails and predicted_difficulty withholds its predictions"})
    layers: tuple[int, ...] | None = field(default=None, metadata={
        "help": "hidden-state layers to sweep; empty: every stored layer"})
    pseudocount: float = 0.5
    """Added to successes and failures before the logit, so 0/n and n/n stay finite:
    p = (s + 0.5) / (n + 1) by default."""
    calibration_bins: int = 5
    """Quantile bins of the predicted pass rate in the calibration table."""
    interval: float = 0.8
    """Central coverage of the interval behind `predict`'s uncertainty (its half-width)."""
    seed: int = 0
    """Seed for the ungrouped fallback split and the tree model."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown probe kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds must be at least 2, got {self.cv_folds}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"alphas must be positive, got {self.alphas}")
        if not 0.0 < self.interval < 1.0:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")
        if self.pseudocount <= 0:
            raise ValueError(f"pseudocount must be positive, got {self.pseudocount}")


@dataclass(frozen=True)
class ProbeReport:
    """A fitted probe with its held-out evaluation and provenance."""

    config: ProbeConfig
    layers: tuple[int, ...]
    """The layer axis of the features the probe takes (as passed to `fit_probe`)."""
    chosen_layer: int
    """The layer with the best held-out Spearman; the final estimator reads only this one."""
    metrics: dict[str, float]
    """Held-out scores at the chosen layer: `spearman`, `pearson`, `auroc` (ever solved; NaN with
    one class), `within_group_spearman` (mean over groups of >= 5 with varied labels), `mae`,
    `residual_sd`, and the sizes `n_problems`, `n_groups`, `n_folds`."""
    layer_scores: pd.DataFrame
    """Per swept layer: `layer`, `spearman`, `pearson` of the out-of-fold predictions."""
    calibration: pd.DataFrame
    """Per quantile bin of the out-of-fold prediction: `lo`, `hi`, `count`, `mean_predicted`,
    `mean_measured`."""
    oof_pred: np.ndarray
    """Out-of-fold predicted pass rate at the chosen layer, one per training problem."""
    measured: np.ndarray
    """The measured pass rates the probe was trained on."""
    estimator: Any
    """sklearn Pipeline (StandardScaler + model) refitted on all data at the chosen layer."""
    fold_estimators: tuple[Any, ...]
    """The cross-validation models at the chosen layer; their spread feeds `predict`'s uncertainty."""
    residual_sd: float
    """SD of out-of-fold residuals on the logit scale (0 for `logistic`, which has no residual)."""
    provenance: dict[str, Any]
    """`model_key`, `layers`, `training_set_hash` (sorted ids with their labels), `created_at`,
    `sklearn_version`."""
    notes: tuple[str, ...] = field(default=())
    """Caveats found while fitting, e.g. a fallback to ungrouped folds."""

    @property
    def spearman(self) -> float:
        return float(self.metrics["spearman"])


# --- fitting -------------------------------------------------------------------------------------


def fit_probe(
    features: np.ndarray,
    pass_rate: np.ndarray,
    trials: np.ndarray | int,
    groups: np.ndarray,
    layers: Sequence[int],
    config: ProbeConfig = ProbeConfig(),
    *,
    problem_ids: Sequence[str] | None = None,
    model_key: str = "",
) -> ProbeReport:
    """Sweep layers with grouped CV, pick the best held-out Spearman, refit there on everything.

    `features` is (n, n_layers, hidden) with the layer axis in `layers` order; `pass_rate` and
    `trials` are the measured labels; `groups` (e.g. generator/level) keeps related problems in one
    fold. `problem_ids` and `model_key` only feed the provenance.
    """
    features = np.asarray(features, dtype=np.float32)
    layers = tuple(int(layer) for layer in layers)
    n = len(features)
    measured = np.asarray(pass_rate, dtype=np.float64)
    trials_arr = np.broadcast_to(np.asarray(trials, dtype=np.float64), (n,))
    groups = np.asarray(groups).astype(str)
    swept = _checked_sweep(features, measured, trials_arr, groups, layers, config, problem_ids)

    successes = np.rint(measured * trials_arr)
    target = probe_target(successes, trials_arr, config)
    splits, notes = cv_splits(n, groups, config)
    layer_scores, runs = _layer_sweep(features, layers, swept, target, measured, splits, config)

    best = layer_scores["spearman"].fillna(-math.inf).to_numpy().argmax()
    chosen = int(layer_scores["layer"].iloc[best])
    oof_link, fold_models = runs[chosen]
    oof_pred = expit(oof_link)
    residual_sd = 0.0 if config.kind == "logistic" else float(np.std(oof_link - target))
    x = features[:, layers.index(chosen), :]
    ids = list(problem_ids) if problem_ids is not None else [str(i) for i in range(n)]
    labels = sorted(zip(ids, successes.astype(int).tolist(), trials_arr.astype(int).tolist()))
    provenance = {
        "model_key": model_key,
        "layers": list(layers),
        "training_set_hash": content_hash(canonical_json(labels)),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sklearn_version": _sklearn_version(),
    }
    return ProbeReport(
        config=config,
        layers=layers,
        chosen_layer=chosen,
        metrics={**_held_out_metrics(oof_pred, measured, successes, groups), "residual_sd": residual_sd,
                 "n_problems": float(n), "n_groups": float(len(np.unique(groups))), "n_folds": float(len(splits))},
        layer_scores=layer_scores,
        calibration=_calibration(oof_pred, measured, config.calibration_bins),
        oof_pred=oof_pred,
        measured=measured,
        estimator=_new_estimator(config).fit(x, target),
        fold_estimators=tuple(fold_models),
        residual_sd=residual_sd,
        provenance=provenance,
        notes=tuple(notes),
    )


def _checked_sweep(features: np.ndarray, measured: np.ndarray, trials: np.ndarray, groups: np.ndarray,
                   layers: tuple[int, ...], config: ProbeConfig, problem_ids: Sequence[str] | None) -> tuple[int, ...]:
    """The layers to sweep, once the inputs are known to describe the same problems."""
    n = len(features)
    if features.ndim != 3 or features.shape[1] != len(layers):
        raise ValueError(f"features must be (n, {len(layers)} layers, hidden), got {features.shape}")
    if measured.shape != (n,) or groups.shape != (n,):
        raise ValueError("pass_rate and groups need one entry per problem")
    if problem_ids is not None and len(problem_ids) != n:
        raise ValueError(f"{len(problem_ids)} problem_ids for {n} problems")
    if not ((measured >= 0) & (measured <= 1)).all() or not (trials >= 1).all():
        raise ValueError("pass rates must lie in [0, 1] with at least one trial each")
    if n < 4:
        raise ValueError(f"a probe needs at least 4 labelled problems, got {n}")
    swept = tuple(config.layers or layers)
    unknown = sorted(set(swept) - set(layers))
    if unknown:
        raise ValueError(f"config.layers {unknown} are not in the features' layers {layers}")
    return swept


def _layer_sweep(
    features: np.ndarray, layers: tuple[int, ...], swept: tuple[int, ...], target: np.ndarray,
    measured: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], config: ProbeConfig,
) -> tuple[pd.DataFrame, dict[int, tuple[np.ndarray, list[Any]]]]:
    """Held-out correlations per swept layer, and each layer's out-of-fold links and fold models."""
    n = len(features)
    rows = []
    runs: dict[int, tuple[np.ndarray, list[Any]]] = {}
    for layer in swept:
        x = features[:, layers.index(layer), :]
        oof_link = np.empty(n)
        models = []
        for train, test in splits:
            model = _new_estimator(config).fit(x[train], target[train])
            oof_link[test] = _link(model, x[test])
            models.append(model)
        runs[layer] = (oof_link, models)
        rho, r = _correlations(expit(oof_link), measured)
        rows.append({"layer": layer, "spearman": rho, "pearson": r})
    return pd.DataFrame(rows), runs


def _held_out_metrics(oof_pred: np.ndarray, measured: np.ndarray, successes: np.ndarray,
                      groups: np.ndarray) -> dict[str, float]:
    """How the out-of-fold predictions of the chosen layer rank and fit the measured pass rates."""
    n = len(measured)
    rho, r = _correlations(oof_pred, measured)
    solved = successes > 0
    return {
        "spearman": rho,
        "pearson": r,
        "auroc": float(roc_auc_score(solved, oof_pred)) if 0 < solved.sum() < n else math.nan,
        "within_group_spearman": _within_group_spearman(oof_pred, measured, groups),
        "mae": float(np.mean(np.abs(oof_pred - measured))),
    }


def probe_target(successes: np.ndarray, trials: np.ndarray, config: ProbeConfig) -> np.ndarray:
    """What the probe regresses on: the logit of the smoothed pass rate, or (logistic) whether
    any trial passed."""
    if config.kind == "logistic":
        return (successes > 0).astype(np.int64)
    a = config.pseudocount
    p = (successes + a) / (trials + 2 * a)
    return np.log(p / (1 - p))


def _new_estimator(config: ProbeConfig) -> Pipeline:
    if config.kind == "ridge":
        head: Any = RidgeCV(alphas=config.alphas)
    elif config.kind == "logistic":
        head = LogisticRegressionCV(
            Cs=[1.0 / a for a in config.alphas],
            cv=3,
            l1_ratios=(0.0,),
            scoring="roc_auc",
            max_iter=2000,
            use_legacy_attributes=False,
        )
    else:
        head = HistGradientBoostingRegressor(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
            early_stopping=False, random_state=config.seed,
        )
    return Pipeline([("scale", StandardScaler()), ("model", head)])


def _link(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's output on the logit scale (the logistic probe's log-odds of ever solving)."""
    if is_classifier(model):
        return np.asarray(model.decision_function(x), dtype=np.float64)
    return np.asarray(model.predict(x), dtype=np.float64)


def cv_splits(
    n: int, groups: np.ndarray, config: ProbeConfig
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """The (train, test) folds `fit_probe` uses: grouped; with fewer groups than folds,
    leave-one-group-out; with one group, plain KFold. Also returns notes on any fallback."""
    n_groups = len(np.unique(groups))
    dummy = np.zeros((n, 1))
    if n_groups >= config.cv_folds:
        return list(GroupKFold(config.cv_folds).split(dummy, groups=groups)), []
    if n_groups >= 2:
        note = f"only {n_groups} groups: {n_groups}-fold leave-one-group-out CV"
        splits = list(GroupKFold(n_groups).split(dummy, groups=groups))
    else:
        note = "one group only: ungrouped KFold, held-out scores may be optimistic"
        splits = list(KFold(min(config.cv_folds, n), shuffle=True, random_state=config.seed).split(dummy))
    log.warning("probe CV: %s", note)
    return splits, [note]


def _correlations(pred: np.ndarray, measured: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson); NaN when either side is constant."""
    if np.ptp(pred) == 0 or np.ptp(measured) == 0:
        return math.nan, math.nan
    return float(spearmanr(pred, measured).statistic), float(pearsonr(pred, measured).statistic)


def _within_group_spearman(pred: np.ndarray, measured: np.ndarray, groups: np.ndarray) -> float:
    """Mean Spearman inside groups: does the probe rank problems beyond telling groups apart?"""
    scores = []
    for g in np.unique(groups):
        mask = groups == g
        if mask.sum() >= 5:
            rho, _ = _correlations(pred[mask], measured[mask])
            if not math.isnan(rho):
                scores.append(rho)
    return float(np.mean(scores)) if scores else math.nan


def _calibration(pred: np.ndarray, measured: np.ndarray, bins: int) -> pd.DataFrame:
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
    which = np.searchsorted(edges[1:-1], pred, side="right")
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        mask = which == b
        if mask.any():
            rows.append({
                "lo": float(edges[b]),
                "hi": float(edges[min(b + 1, len(edges) - 1)]),
                "count": int(mask.sum()),
                "mean_predicted": float(pred[mask].mean()),
                "mean_measured": float(measured[mask].mean()),
            })
    return pd.DataFrame(rows, columns=["lo", "hi", "count", "mean_predicted", "mean_measured"])


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


# --- using a probe -------------------------------------------------------------------------------


def predict(probe: ProbeReport, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted pass rates in [0, 1] and their uncertainty, for features shaped like training's or
    holding only the chosen layer.

    The uncertainty is the half-width, on the pass-rate scale, of a central `config.interval`
    interval around the predicted logit whose SD combines the out-of-fold residual SD (how wrong
    the probe is on unseen groups) with the spread of the fold models (how much it depends on its
    training set). For `logistic` the prediction is P(ever solved) and only the spread counts.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 3 or features.shape[1] not in (1, len(probe.layers)):
        raise ValueError(f"features must be (n, {len(probe.layers)} layers, hidden) or (n, 1, hidden) at the "
                         f"chosen layer {probe.chosen_layer}, got {features.shape}")
    # Labelling needs only the chosen layer, which is cheaper to compute than every swept one.
    column = probe.layers.index(probe.chosen_layer) if features.shape[1] == len(probe.layers) else 0
    x = features[:, column, :]
    link = _link(probe.estimator, x)
    spread = (
        np.std([_link(m, x) for m in probe.fold_estimators], axis=0)
        if probe.fold_estimators
        else np.zeros_like(link)
    )
    sd = np.sqrt(probe.residual_sd**2 + spread**2)
    z = float(norm.ppf(0.5 + probe.config.interval / 2))
    uncertainty = (expit(link + z * sd) - expit(link - z * sd)) / 2
    if not (np.isfinite(link).all() and np.isfinite(uncertainty).all()):
        rows = np.flatnonzero(~(np.isfinite(link) & np.isfinite(uncertainty)))
        raise ValueError(f"the probe predicts NaN or inf for {rows.size} of {len(link)} problems (first row "
                         f"{rows[0]}): non-finite hidden states or probe weights; refusing to stage them")
    return expit(link), uncertainty


def probe_id(report: ProbeReport) -> str:
    """A probe's folder name: a hash of what it was fitted on and how, so refitting the same labels
    with the same settings lands in the same folder."""
    identity = canonical_json({
        "provenance": {k: v for k, v in report.provenance.items() if k != "created_at"},
        "config": asdict(report.config),
    })
    return content_hash(identity, length=16)


@dataclass(frozen=True)
class PredictionSpec:
    """Which unmeasured problems the predictions mark as the best use of the next rollouts."""

    select_for_rollouts: int = field(default=16, metadata={
        "help": "unmeasured problems to mark as most worth rollouts: those whose stratum the probe is least "
        "sure of (prediction nearest a class boundary, in units of its uncertainty)"})


def prediction_frame(
    probe: ProbeReport,
    features: np.ndarray,
    problems: pd.DataFrame,
    measured: pd.DataFrame,
    strata: Strata,
    spec: PredictionSpec,
) -> pd.DataFrame:
    """The probe's pass rate for every problem (rows of `features` follow `problems`), with its
    uncertainty, `ci_low` / `ci_high` = prediction ± uncertainty clipped to [0, 1], whether and what
    was measured (`measured` has `PassRate` columns), and the `spec.select_for_rollouts`
    unmeasured problems nearest a class boundary of `strata` ranked in `rollout_rank` (1 first)."""
    ids = problems["problem_id"].astype(str).tolist()
    pred, uncertainty = predict(probe, features)
    measured_rate = measured.set_index("problem_id")["pass_rate"].reindex(ids).to_numpy(np.float64)
    was_measured = ~np.isnan(measured_rate)
    candidates = np.flatnonzero(~was_measured)
    picked = candidates[select_for_rollouts(
        pred[candidates], uncertainty[candidates], strata.boundaries(), spec.select_for_rollouts
    )]
    rank = pd.array([pd.NA] * len(ids), dtype="Int64")
    rank[picked] = np.arange(1, len(picked) + 1)
    return pd.DataFrame({
        "problem_id": ids,
        "category": problems["category"].to_numpy(),
        "pass_rate": pred,
        "uncertainty": uncertainty,
        "ci_low": np.clip(pred - uncertainty, 0.0, 1.0),
        "ci_high": np.clip(pred + uncertainty, 0.0, 1.0),
        "label_source": "predicted",
        "measured": was_measured,
        "measured_pass_rate": measured_rate,
        "select_for_rollouts": np.isin(np.arange(len(ids)), picked),
        "rollout_rank": rank,
    })


def withheld_predictions() -> pd.DataFrame:
    """The `prediction_frame` columns with no rows: what a probe below its floor predicts, so that
    earlier predictions are replaced rather than left behind to be read as current."""
    return pd.DataFrame({
        "problem_id": pd.Series([], dtype=str),
        "category": pd.Series([], dtype=str),
        "pass_rate": pd.Series([], dtype=np.float64),
        "uncertainty": pd.Series([], dtype=np.float64),
        "ci_low": pd.Series([], dtype=np.float64),
        "ci_high": pd.Series([], dtype=np.float64),
        "label_source": pd.Series([], dtype=str),
        "measured": pd.Series([], dtype=bool),
        "measured_pass_rate": pd.Series([], dtype=np.float64),
        "select_for_rollouts": pd.Series([], dtype=bool),
        "rollout_rank": pd.array([], dtype="Int64"),
    })


def select_for_rollouts(
    pred: np.ndarray, uncertainty: np.ndarray, strata_edges: Sequence[float], k: int
) -> np.ndarray:
    """Indices of the `k` problems whose stratum the probe is least sure of, most doubtful first.

    Rule: a problem's doubt is its distance to the nearest stratum edge divided by its uncertainty
    (how many half-widths its prediction sits from a boundary); the `k` smallest ratios win, ties
    broken by larger uncertainty. Every edge given counts, so passing `Strata.edges` whole also
    treats 0 (never solved) and 1 (always solved) as boundaries; pass the interior edges to ignore
    them. Without edges the rule reduces to highest uncertainty first.
    """
    pred = np.asarray(pred, dtype=np.float64)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    if pred.shape != uncertainty.shape or pred.ndim != 1:
        raise ValueError("pred and uncertainty must be 1-d arrays of the same length")
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    edges = np.unique(np.asarray(strata_edges, dtype=np.float64))
    if edges.size:
        distance = np.abs(pred[:, None] - edges[None, :]).min(axis=1)
    else:
        distance = np.full_like(pred, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = distance / uncertainty
    # 0/0: a prediction exactly on an edge is as doubtful as it gets, certain or not.
    ratio = np.where(np.isnan(ratio), 0.0, ratio)
    return np.lexsort((-uncertainty, ratio))[:k].astype(np.int64)


def probe_passes(probe: ProbeReport, min_spearman: float | None = None) -> tuple[bool, str]:
    """The blocking rule: the held-out Spearman must reach the floor (default: the config's)."""
    floor = probe.config.min_spearman if min_spearman is None else min_spearman
    rho = probe.spearman
    where = (
        f"layer {probe.chosen_layer}, {int(probe.metrics['n_folds'])}-fold CV over "
        f"{int(probe.metrics['n_groups'])} groups, {int(probe.metrics['n_problems'])} problems"
    )
    caveat = f" ({'; '.join(probe.notes)})" if probe.notes else ""
    if math.isnan(rho):
        return False, f"held-out Spearman is undefined (constant labels or predictions; {where})"
    if rho < floor:
        return False, f"held-out Spearman {rho:.3f} < floor {floor:.3f} ({where}){caveat}"
    return True, f"held-out Spearman {rho:.3f} >= floor {floor:.3f} ({where}){caveat}"


def probe_figures(probe: ProbeReport) -> dict[str, bytes]:
    """PNG figures: out-of-fold predicted vs measured pass rate, and the per-layer score curve."""
    figures = {}
    fig, ax = axes(4.5, 4.5)
    ax.scatter(probe.measured, probe.oof_pred, s=12, alpha=0.6)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
    ax.plot(probe.calibration["mean_measured"], probe.calibration["mean_predicted"], marker="o", color="C3",
            label="binned means")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="measured pass rate",
           ylabel="predicted pass rate (out of fold)",
           title=f"layer {probe.chosen_layer}: Spearman {probe.spearman:.2f}")
    ax.legend(loc="upper left")
    figures["predicted_vs_measured.png"] = png(fig)

    fig, ax = axes(5, 3.5)
    scores = probe.layer_scores
    ax.plot(scores["layer"], scores["spearman"], marker="o", label="Spearman")
    ax.plot(scores["layer"], scores["pearson"], marker="s", label="Pearson")
    ax.axhline(probe.config.min_spearman, color="grey", linestyle="--", linewidth=1, label="floor")
    ax.set(xlabel="layer", ylabel="held-out correlation", title="probe score by layer")
    ax.legend()
    figures["layer_scores.png"] = png(fig)
    return figures
