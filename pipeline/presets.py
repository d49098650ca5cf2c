"""Strata presets: named ways to cut a labelled pool into stages, easy → hard.

Every preset maps a labels frame (the `PassRate` columns: `problem_id`, `successes`, `trials`,
`pass_rate`, and for several models `model_id` / `revision` / `label_key`) to one class per problem,
with the convention of `pipeline.strata`: stages 1..K (1 is the easiest), `SOLVED` (0) for problems
the preset keeps out as too easy and `UNSOLVED` (-1) for those it keeps out as too hard. Problems
without a label are left out, as `pipeline.curriculum.stratify` does.

- `quantile`: K bins with edges at pass-rate quantiles of the pool, so stages hold similar counts.
- `fixed`: fixed-width pass-rate bins with p = 0 and p = 1 as classes of their own, as Reasoning360
  bins its data: 0 | (0, 0.2] | (0.2, 0.4] | … | (0.8, 1) | 1.
- `strict_band`: one stage lo < p < hi, everything else out: the open-r1 / DAPO filter that drops
  problems whose rollouts all agree (zero advantage, zero gradient).
- `model_levels`: levels from several models' labels (arXiv 2504.00829): L1 the smallest model
  solves sometimes, L2 it never does but a larger model sometimes does, L3 no larger model solves
  it more than rarely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from pipeline.strata import SOLVED, UNSOLVED, Strata

ASSIGNMENT_COLUMNS = ("problem_id", "pass_rate", "stage", "stage_name")


def _single_model(labels: pd.DataFrame, label_key: str | None) -> pd.DataFrame:
    """One label per problem: the rows of `label_key`, or the frame itself when it holds one key."""
    if label_key is not None:
        labels = labels[labels["label_key"] == label_key]
        if labels.empty:
            raise ValueError(f"no labels with label_key {label_key!r}")
    elif "label_key" in labels.columns and labels["label_key"].nunique() > 1:
        keys = sorted(labels["label_key"].unique())
        raise ValueError(f"labels hold {len(keys)} label keys; pick one with label_key= (e.g. {keys[0]!r})")
    if labels["problem_id"].duplicated().any():
        raise ValueError("labels hold more than one row per problem for the same model")
    return labels


def _frame(labels: pd.DataFrame, stage: ArrayLike, names: dict[int, str]) -> pd.DataFrame:
    stage = np.asarray(stage, dtype=np.int64)
    return pd.DataFrame(
        {
            "problem_id": labels["problem_id"].to_numpy(),
            "pass_rate": labels["pass_rate"].to_numpy(dtype=float),
            "stage": stage,
            "stage_name": [names[int(s)] for s in stage],
        }
    )


def _bin_name(lo: float, hi: float, closed_high: bool = True) -> str:
    return f"({lo:.3g}, {hi:.3g}{']' if closed_high else ')'}"


def _observed_class(labels: pd.DataFrame, strata: Strata) -> np.ndarray:
    return strata.stage_of(
        labels["pass_rate"].to_numpy(dtype=float),
        labels["successes"].to_numpy(),
        labels["trials"].to_numpy(),
    )


def _strata_names(strata: Strata) -> dict[int, str]:
    names = {SOLVED: "solved", UNSOLVED: "unsolved"}
    for k in range(1, strata.n_stages + 1):
        names[k] = _bin_name(strata.edges[k], strata.edges[k - 1])
    return names


def quantile_edges(pass_rates: ArrayLike, n_stages: int) -> tuple[float, ...]:
    """Strata edges (1 → 0) at the (K-1)/K … 1/K quantiles of `pass_rates`.

    Pass rates are discrete (s / n), so quantiles often coincide: equal edges are merged, and the
    result may have fewer than `n_stages` stages.
    """
    if n_stages < 1:
        raise ValueError("n_stages must be at least 1")
    rates = np.asarray(pass_rates, dtype=float)
    if rates.size == 0:
        raise ValueError("no pass rates to take quantiles of")
    levels = np.arange(n_stages - 1, 0, -1) / n_stages
    inner = sorted({float(q) for q in np.quantile(rates, levels) if 0.0 < q < 1.0}, reverse=True)
    return (1.0, *inner, 0.0)


def quantile_bins(
    labels: pd.DataFrame,
    n_stages: int = 3,
    include_solved: bool = False,
    include_unsolved: bool = False,
    label_key: str | None = None,
) -> pd.DataFrame:
    """K stages of similar size: edges at pass-rate quantiles of the problems that get staged."""
    labels = _single_model(labels, label_key)
    everything = Strata((1.0, 0.0), exclude_solved=not include_solved, exclude_unsolved=not include_unsolved)
    staged = _observed_class(labels, everything) == 1
    rates = labels["pass_rate"].to_numpy(dtype=float)[staged]
    edges = quantile_edges(rates, n_stages) if rates.size else (1.0, 0.0)
    strata = Strata(edges, exclude_solved=not include_solved, exclude_unsolved=not include_unsolved)
    return _frame(labels, _observed_class(labels, strata), _strata_names(strata))


def fixed_bins(
    labels: pd.DataFrame,
    width: float = 0.2,
    include_solved: bool = False,
    include_unsolved: bool = False,
    label_key: str | None = None,
) -> pd.DataFrame:
    """Bins of `width` on (0, 1), with p = 1 and p = 0 as classes of their own (Reasoning360).

    Included, p = 1 becomes stage 1 and p = 0 the last stage; excluded, they are `SOLVED` / `UNSOLVED`.
    """
    n_bins = round(1.0 / width)
    if width <= 0 or abs(n_bins * width - 1.0) > 1e-9:
        raise ValueError(f"width must divide 1 into whole bins, got {width}")
    labels = _single_model(labels, label_key)
    strata = Strata(tuple(np.linspace(1.0, 0.0, n_bins + 1)))
    raw = _observed_class(labels, strata)
    names = _strata_names(strata)
    names[1] = _bin_name(strata.edges[1], 1.0, closed_high=False)  # p = 1 is its own class
    shift = 1 if include_solved else 0
    stage = np.where(raw > 0, raw + shift, raw)
    names = {(k + shift if k > 0 else k): v for k, v in names.items()}
    if include_solved:
        stage = np.where(raw == SOLVED, 1, stage)
        names[1] = "p = 1"
    if include_unsolved:
        last = n_bins + shift + 1
        stage = np.where(raw == UNSOLVED, last, stage)
        names[last] = "p = 0"
    return _frame(labels, stage, names)


def strict_band(
    labels: pd.DataFrame, low: float = 0.0, high: float = 1.0, label_key: str | None = None
) -> pd.DataFrame:
    """One stage of problems with low < p < high; p >= high is `SOLVED`, p <= low `UNSOLVED`.

    With the defaults this drops exactly the problems whose rollouts all pass or all fail.
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    labels = _single_model(labels, label_key)
    p = labels["pass_rate"].to_numpy(dtype=float)
    stage = np.where(p >= high, SOLVED, np.where(p <= low, UNSOLVED, 1))
    names = {1: _bin_name(low, high, closed_high=False), SOLVED: "solved", UNSOLVED: "unsolved"}
    return _frame(labels, stage, names)


def _model_key(labels: pd.DataFrame, model: str) -> str:
    """The label key a model name refers to: a label key itself, or a model_id with one key."""
    if model in set(labels["label_key"]):
        return model
    keys = sorted(labels.loc[labels["model_id"] == model, "label_key"].unique())
    if len(keys) != 1:
        found = "no labels" if not keys else f"{len(keys)} label keys"
        raise ValueError(f"model {model!r} matches {found}; name it by label_key")
    return keys[0]


def model_levels(labels: pd.DataFrame, models: Sequence[str], rarely: float = 0.0) -> pd.DataFrame:
    """Levels from several models' labels of the same problems (arXiv 2504.00829).

    `models` names the models from smallest to largest, each by label key or model id. With the
    smallest model's counts s / n and every larger model's pass rate:
      - L1 (stage 1): 0 < s < n, the smallest model solves it sometimes;
      - L2 (stage 2): s = 0, and some larger model's pass rate exceeds `rarely`;
      - L3 (stage 3): s = 0, and no larger model's pass rate exceeds `rarely` (never or rarely);
      - `SOLVED`: s = n, nothing left to learn for the smallest model.
    The largest pass rate over the larger models decides L2 / L3: with capability growing with size
    that is the largest model's, and a problem any model solves is not hopeless either way.
    Problems that some listed model has no label for are left out. `pass_rate` is the smallest model's.
    """
    if len(models) < 2:
        raise ValueError("model levels need at least two models, smallest first")
    if not 0.0 <= rarely < 1.0:
        raise ValueError(f"rarely must be in [0, 1), got {rarely}")
    keys = [_model_key(labels, m) for m in models]
    if len(set(keys)) != len(keys):
        raise ValueError(f"models {list(models)} name the same labels twice")
    chosen = labels[labels["label_key"].isin(keys)]
    if chosen.duplicated(["problem_id", "label_key"]).any():
        raise ValueError("labels hold more than one row per problem and model")
    wide = chosen.pivot(index="problem_id", columns="label_key", values=["successes", "trials", "pass_rate"])
    wide = wide.dropna()
    small = keys[0]
    s = wide[("successes", small)].to_numpy(dtype=float)
    n = wide[("trials", small)].to_numpy(dtype=float)
    larger = wide["pass_rate"][keys[1:]].to_numpy(dtype=float).max(axis=1)
    stage = np.select(
        [s == n, s > 0, larger > rarely],
        [SOLVED, 1, 2],
        default=3,
    )
    frame = pd.DataFrame({"problem_id": wide.index.to_numpy(), "pass_rate": wide[("pass_rate", small)].to_numpy()})
    return _frame(frame, stage, {SOLVED: "solved", 1: "L1", 2: "L2", 3: "L3"})


PRESETS: dict[str, Callable[..., pd.DataFrame]] = {
    "quantile": quantile_bins,
    "fixed": fixed_bins,
    "strict_band": strict_band,
    "model_levels": model_levels,
}


def assign_stages(labels: pd.DataFrame, preset: str, **options: Any) -> pd.DataFrame:
    """Stage assignments under the preset named `preset`, one row per labelled problem:
    `problem_id`, `pass_rate`, `stage` (1..K, 0 too easy, -1 too hard) and `stage_name`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown strata preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[preset](labels, **options)
