"""Label provenance: which labels are stale for a target, and how difficulty drifts between versions.

Every `PassRate` row records what it was measured against (model id, revision, sampling key,
verifier version, label key) and when. A label is stale once any of those differs from the current
`LabelTarget`; a problem with no label at all is new. Both need (re)labelling, and nothing else
does: the rollout cache already serves every unchanged (model, revision, sampling) sample.

`LabelHistory` keeps one summary row per label version, and that version's labels, so a new
checkpoint or a changed sampling parameter shows up as a drift: how many problems changed stratum.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.records import canonical_json
from pipeline.core.storage import StorageLayout, within, write_parquet_atomic
from pipeline.difficulty.strata import Strata
from pipeline.labels.pass_rates import LabelTarget

PROVENANCE = ("model_id", "revision", "sampling_key", "verifier_version", "label_key")
"""The `PassRate` columns a label must share with the target to be current, in reporting order."""
COUNT_COLUMNS = ("problem_id", "successes", "trials")
"""What a reader of a version's counts (its drift, a prior) needs of it."""
NEW = "new"
"""The staleness reason of a problem that has no label at all."""


def target_provenance(target: LabelTarget) -> dict[str, str]:
    """The values a current label carries in its `PROVENANCE` columns."""
    return {
        "model_id": target.model.model_id,
        "revision": target.model.revision,
        "sampling_key": target.sampling.key,
        "verifier_version": target.verifier_version,
        "label_key": target.key,
    }


def staleness(problems: pd.DataFrame, labels: pd.DataFrame, target: LabelTarget) -> pd.DataFrame:
    """Each problem that needs (re)labelling for `target`, with why: `problem_id`, `reason`.

    `reason` is `new` (no label), or the first `PROVENANCE` column in which the problem's latest
    label (by `labelled_at`) differs from the target. `labels` may mix versions: a problem with any
    label matching the target is current.
    """
    ids = pd.Index(problems["problem_id"].astype(str).unique(), name="problem_id")
    want = target_provenance(target)
    if labels.empty:
        return pd.DataFrame({"problem_id": ids.to_numpy(), "reason": NEW})
    current = np.logical_and.reduce([labels[col].astype(str).to_numpy() == v for col, v in want.items()])
    fresh = set(labels.loc[current, "problem_id"].astype(str))
    latest = (
        labels.sort_values("labelled_at", kind="stable")
        .drop_duplicates("problem_id", keep="last")
        .assign(problem_id=lambda f: f["problem_id"].astype(str))
        .set_index("problem_id")
        .reindex(ids)
    )
    conditions = [latest["label_key"].isna().to_numpy()]
    conditions += [(latest[col].astype(str) != want[col]).to_numpy() for col in PROVENANCE]
    reason = np.select(conditions, [NEW, *PROVENANCE], default="")
    out = pd.DataFrame({"problem_id": ids.to_numpy(), "reason": reason})
    return out[~out["problem_id"].isin(fresh)].reset_index(drop=True)


def stale_or_new(problems: pd.DataFrame, labels: pd.DataFrame, target: LabelTarget) -> list[str]:
    """Problem ids whose label for `target` is missing or out of date (see `staleness`)."""
    return staleness(problems, labels, target)["problem_id"].tolist()


def classes(labels: pd.DataFrame, strata: Strata) -> pd.Series:
    """Each labelled problem's class name (`solved`, `stage_1` … `stage_K`, `unsolved`)."""
    if labels.empty:
        return pd.Series([], dtype=str, index=pd.Index([], name="problem_id"))
    ids = strata.observed_class(labels["successes"].to_numpy(), labels["trials"].to_numpy())
    names = strata.labels()
    return pd.Series([names[int(c)] for c in ids], index=pd.Index(labels["problem_id"].astype(str), name="problem_id"))


@dataclass(frozen=True)
class Drift:
    """How two label versions disagree on difficulty."""

    transitions: pd.DataFrame
    """Problems labelled in both versions: rows are the previous class, columns the current one,
    both easy → hard; the diagonal is what stayed put."""
    added: int
    """Problems labelled only in the current version."""
    removed: int
    """Problems labelled only in the previous version."""

    @property
    def common(self) -> int:
        return int(self.transitions.to_numpy().sum())

    @property
    def changed(self) -> int:
        """Problems labelled in both versions whose stratum changed."""
        return self.common - int(np.trace(self.transitions.to_numpy()))


def difficulty_drift(previous: pd.DataFrame, current: pd.DataFrame, strata: Strata) -> Drift:
    """Compare two label versions under one set of strata (both re-classed from their counts)."""
    before, after = classes(previous, strata), classes(current, strata)
    common = before.index.intersection(after.index)
    names = list(strata.labels().values())
    transitions = (
        pd.crosstab(
            pd.Categorical(before[common], categories=names),
            pd.Categorical(after[common], categories=names),
            dropna=False,
        )
        .reindex(index=names, columns=names, fill_value=0)
        .rename_axis(index="previous", columns="current")
    )
    return Drift(transitions, added=len(after.index.difference(before.index)),
                 removed=len(before.index.difference(after.index)))


def version_id(labels: pd.DataFrame) -> str:
    """A content hash of a label version: its provenance and every problem's counts."""
    counts = labels[["problem_id", "successes", "trials"]].sort_values("problem_id", kind="stable")
    provenance = {col: sorted(labels[col].astype(str).unique()) for col in PROVENANCE}
    h = hashlib.sha256(canonical_json(provenance).encode())
    h.update(pd.util.hash_pandas_object(counts, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


SUMMARY_SCHEMA = pa.schema(
    [
        ("version", pa.string()),
        ("label_key", pa.string()),
        ("model_id", pa.string()),
        ("revision", pa.string()),
        ("sampling_key", pa.string()),
        ("verifier_version", pa.string()),
        ("recorded_at", pa.string()),
        ("problems", pa.int64()),
        ("mean_pass_rate", pa.float64()),
        ("counts", pa.string()),
        ("strata", pa.string()),
        ("previous_version", pa.string()),
        ("changed_stratum", pa.int64()),
        ("added", pa.int64()),
        ("removed", pa.int64()),
    ]
)
"""One row per label version; `counts` (class → problems) and `strata` are canonical JSON because
their keys depend on the strata in force."""


@dataclass(frozen=True)
class Recorded:
    """What `LabelHistory.record` saw."""

    summary: dict[str, Any]
    """This version's summary row (see `SUMMARY_SCHEMA`)."""
    drift: Drift | None
    """Against the previous version; None for the first version and when nothing was appended."""
    appended: bool
    """False when these labels equal the latest version's (nothing new to record)."""


class LabelHistory:
    """Every label version recorded under `<home>/history/`: summaries in
    `difficulty_history.parquet`, and each version's labels in `labels/<version>.parquet`, which is
    what the next version's drift is measured against."""

    def __init__(self, home: Path) -> None:
        self.root = StorageLayout(str(home)).history
        self.summary_path = self.root / "difficulty_history.parquet"

    def summaries(self) -> pd.DataFrame:
        if not self.summary_path.exists():
            return SUMMARY_SCHEMA.empty_table().to_pandas()
        return pq.read_table(self.summary_path).to_pandas()

    def labels(self, version: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A version's labels; only `columns` (default all), so a reader of counts never loads a
        million rows of provenance strings."""
        return pq.read_table(within(self.root, "labels", f"{version}.parquet"),
                             columns=list(columns) if columns is not None else None).to_pandas()

    def record(self, labels: pd.DataFrame, strata: Strata, now: datetime | None = None) -> Recorded:
        """Append `labels` as a new version unless they equal the latest one; report the drift."""
        history = self.summaries()
        version = version_id(labels)
        previous = history.iloc[-1] if len(history) else None
        if previous is not None and previous["version"] == version:
            return Recorded(previous.to_dict(), None, appended=False)
        drift = None if previous is None else difficulty_drift(
            self.labels(previous["version"], COUNT_COLUMNS), labels, strata)

        def field(name: str) -> str:
            return ",".join(sorted(labels[name].astype(str).unique()))

        counts = classes(labels, strata).value_counts().reindex(list(strata.labels().values()), fill_value=0)
        summary = {
            "version": version,
            **{name: field(name) for name in PROVENANCE},
            "recorded_at": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
            "problems": len(labels),
            "mean_pass_rate": float(labels["pass_rate"].mean()) if len(labels) else float("nan"),
            "counts": canonical_json({k: int(v) for k, v in counts.items()}),
            "strata": canonical_json({"edges": list(strata.edges), "exclude_solved": strata.exclude_solved,
                                      "exclude_unsolved": strata.exclude_unsolved}),
            "previous_version": None if previous is None else previous["version"],
            "changed_stratum": 0 if drift is None else drift.changed,
            "added": len(labels) if drift is None else drift.added,
            "removed": 0 if drift is None else drift.removed,
        }
        write_parquet_atomic(pa.Table.from_pandas(labels, preserve_index=False),
                             within(self.root, "labels", f"{version}.parquet"))
        table = pa.concat_tables([pa.Table.from_pandas(history, schema=SUMMARY_SCHEMA, preserve_index=False),
                                  pa.Table.from_pylist([summary], schema=SUMMARY_SCHEMA)])
        write_parquet_atomic(table, self.summary_path)
        return Recorded(summary, drift, appended=True)


def counts_of(summary: dict[str, Any]) -> dict[str, int]:
    """The class → problems counts of a summary row."""
    return json.loads(summary["counts"])
