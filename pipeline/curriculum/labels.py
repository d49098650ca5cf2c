"""The labels a curriculum stages: measured pass rates, and a probe's predictions where a problem
has none."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.curriculum.build import LABEL_COLUMNS
from pipeline.labels.pass_rates import TRUNCATION_COLUMNS


PASS_RATE_KEY_COLUMNS = ("label_key", "verifier_version")
"""The `pass_rates` columns a curriculum checks its labels by: one value repeated on every row."""
STAGED_PASS_RATE_COLUMNS = ("problem_id", *LABEL_COLUMNS, *TRUNCATION_COLUMNS, *PASS_RATE_KEY_COLUMNS)
"""The `pass_rates` columns a curriculum reads: the labels it stages and the keys it checks them by
(a million problems' model, sampling and time columns stay on disk)."""


def check_predictions(predicted: pd.DataFrame, label_key: str) -> pd.DataFrame:
    """`predicted` (the `predicted_difficulty` rows), refused unless made for `label_key`, and
    refused when empty: predictions are withheld when the probe failed its floor."""
    if predicted.empty:
        raise ValueError(
            "predicted_difficulty holds no predictions: the probe failed its floor "
            "(difficulty_probe_is_good_enough). Refit difficulty_probe on more labels, lower its "
            "min_spearman, or stage measured labels only (curriculum labels: measured)"
        )
    keys = sorted(set(predicted["label_key"]))
    if keys and keys != [label_key]:
        raise ValueError(
            f"predicted_difficulty predicts labels for {keys}, not for the current target {label_key}: "
            "re-materialize predicted_difficulty (probe_job)"
        )
    return predicted


def merge_labels(
    measured: pd.DataFrame | None, predicted: pd.DataFrame | None, trials: int | None = None
) -> pd.DataFrame:
    """One label per problem: measured where a problem has one, predicted elsewhere.

    `measured` has `PassRate` columns; `predicted` has `problem_id`, `pass_rate`, `ci_low`,
    `ci_high` (as the `predicted_difficulty` asset writes them). Either may be None. Returns
    `problem_id`, `successes`, `trials`, `pass_rate`, `ci_low`, `ci_high` and `label_source`
    (`measured` | `predicted`), the columns `pipeline.curriculum.build.stratify` stages, plus the
    truncation counts where `measured` has them (none for a predicted row: no rollout was cut).

    Strata class solved / unsolved from counts, not rates, so a predicted row gets synthetic
    counts: `trials` (default: the median of the measured trials) and successes = the nearest whole
    number to pass_rate x trials, i.e. what a rollout measurement of that budget would show if the
    prediction were exact. A prediction below 1 / (2 trials) is thus never solved and one at or
    above 1 - 1 / (2 trials) always solved; its `pass_rate` stays the predicted value, which picks
    the stage bin. Read `label_source` before trusting a row's counts.
    """
    truncation = [c for c in TRUNCATION_COLUMNS if measured is not None and c in measured.columns]
    columns = ["problem_id", *LABEL_COLUMNS, "label_source", *truncation]
    parts = []
    has_measured = measured is not None and len(measured)
    if has_measured:
        parts.append(measured[["problem_id", *LABEL_COLUMNS, *truncation]].assign(label_source="measured"))
    if predicted is not None and len(predicted):
        rest = predicted[~predicted["problem_id"].isin(measured["problem_id"])] if has_measured else predicted
        if trials is None:
            if measured is None or measured.empty:
                raise ValueError("predicted labels need `trials` when there are no measured labels to take it from")
            trials = int(round(float(measured["trials"].median())))
        if trials < 1:
            raise ValueError(f"trials must be at least 1, got {trials}")
        rate = rest["pass_rate"].to_numpy(np.float64)
        if not ((rate >= 0) & (rate <= 1)).all():
            raise ValueError("predicted pass rates must lie in [0, 1]")
        parts.append(pd.DataFrame({
            "problem_id": rest["problem_id"].to_numpy(),
            "successes": np.floor(rate * trials + 0.5).astype(np.int64),
            "trials": np.full(len(rest), trials, dtype=np.int64),
            "pass_rate": rate,
            "ci_low": rest["ci_low"].to_numpy(np.float64),
            "ci_high": rest["ci_high"].to_numpy(np.float64),
            "label_source": "predicted",
            **{c: pd.array([None] * len(rest), dtype="Int64") for c in truncation},
        }))
    if not parts:
        dtypes = {"problem_id": str, "successes": np.int64, "trials": np.int64, "label_source": str,
                  **{c: "Int64" for c in truncation}}
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, np.float64)) for c in columns})
    return pd.concat(parts, ignore_index=True)[columns].astype({c: "Int64" for c in truncation})
