"""Pass-rate labels: per problem and per label key (model + revision + sampling + extraction policy + verifier)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from pipeline.core.ids import IdIndex
from pipeline.core.model import DEFAULT_MODEL, PACKAGED_MODELS, ModelSpec, resolve_model
from pipeline.core.records import PassRate, content_hash
from pipeline.difficulty.estimators import BetaPrior, credible_interval
from pipeline.engines.base import SamplingConfig
from pipeline.verify.extraction import ExtractionPolicy

TRUNCATION_COLUMNS = ("truncated", "truncated_failures")
"""Per problem: rollouts cut at the token cap, and how many of them failed (None: not counted)."""
TOKEN_CAP_SHARE = 0.1
"""The share of rollouts cut at the token cap above which labels are reported as bound by it."""
CUT = "length"
"""The finish reason of a rollout stopped by `max_tokens`."""


@dataclass(frozen=True)
class TargetSpec:
    """The model labels are measured against, as configured, and how its answers are read."""

    model_path: str = field(default="", metadata={
        "help": "local HF model folder (e.g. a trainer checkpoint); empty: the packaged model packaged_model"})
    packaged_model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "the packaged model labelled when model_path is empty: " + ", ".join(
            f"{name} ({m.model_id})" for name, m in PACKAGED_MODELS.items())})
    model_id: str = field(default="", metadata={
        "help": "name recorded in labels; empty: the folder's recorded id or its name"})
    revision: str = field(default="", metadata={
        "help": "revision recorded in labels; empty: a content hash of the weights"})
    extraction_policy: ExtractionPolicy = field(default="auto", metadata={
        "help": "how the final answer is read from a completion: auto (answer tags, a \\boxed{}, for math an "
        "answer phrase such as 'The answer is' / '####' / 'Final Answer:', then the last number outside LaTeX), "
        "answer_tag, boxed, last_number, full; math answers keep their LaTeX markup for math-verify"})

    def model(self, home: Path) -> ModelSpec:
        """The model folder and identity, converting a packaged model under `home` on first use."""
        return resolve_model(self.model_path or None, self.model_id or None, self.revision or None, home,
                             self.packaged_model)


KEY_PARTS = ("model", "sampling", "extraction_policy", "verifier")
"""What a label key is made of, in order, joined by `/`."""


@dataclass(frozen=True)
class LabelTarget:
    """What a label is measured against; a label is stale when any part differs from the target."""

    model: ModelSpec
    sampling: SamplingConfig
    verifier_version: str
    extraction_policy: ExtractionPolicy = TargetSpec.extraction_policy
    """How answers were read from the completions: it changes verdicts, never completions, so
    rollouts are shared across policies while rewards and labels are not."""

    def key_parts(self) -> dict[str, str]:
        return {"model": self.model.key, "sampling": self.sampling.key, "extraction_policy": self.extraction_policy,
                "verifier": "v-" + content_hash(self.verifier_version, length=8)}

    @property
    def key(self) -> str:
        """Everything that changes a completion or a verdict: model and revision, sampling,
        extraction policy and verifier version."""
        return "/".join(self.key_parts().values())

    def difference(self, key: str) -> str:
        """What differs between the label key `key` and this target's, part by part."""
        # From the right: a revision may hold a `/`, the other parts never do.
        theirs = key.rsplit("/", len(KEY_PARTS) - 1)
        if len(theirs) != len(KEY_PARTS):
            return f"{key} is an older label key, without extraction policy and verifier version"
        return ", ".join(f"{name} {old} → {new}" for (name, new), old in zip(self.key_parts().items(), theirs)
                         if old != new)


def pass_rates(
    rewards: pd.DataFrame,
    target: LabelTarget,
    *,
    prior: BetaPrior = BetaPrior(),
    level: float = 0.9,
) -> pd.DataFrame:
    """Aggregate per-rollout rewards into one `PassRate` row per problem.

    `pass_rate` is the raw s / n (what peers report and what strata are defined on); the credible
    interval is the Beta posterior's, so a 2/4 and a 32/64 are told apart. Truncations are counted
    when `rewards` carries the rollouts' `finish_reason`, else left None.
    """
    if rewards.empty:
        return PassRate.empty_frame()
    counted = "finish_reason" in rewards.columns
    cut = rewards["finish_reason"].eq(CUT) if counted else pd.Series(False, index=rewards.index)
    grouped = rewards.assign(cut=cut, cut_failed=cut & ~rewards["passed"].astype(bool)).groupby(
        "problem_id", sort=True).agg(s=("passed", "sum"), n=("passed", "count"), cut=("cut", "sum"),
                                     cut_failed=("cut_failed", "sum"))
    truncations = (grouped["cut"].to_numpy(np.int64), grouped["cut_failed"].to_numpy(np.int64)) if counted else None
    return _frame(grouped.index.astype(str).to_numpy(), grouped["s"].to_numpy(np.int64),
                  grouped["n"].to_numpy(np.int64), target, prior, level, truncations)


def count_passes(batches: Iterable[pa.RecordBatch], problem_ids: Sequence[str] | IdIndex) -> tuple[np.ndarray, np.ndarray]:
    """(successes, trials) per problem of `problem_ids` (or of the ids an `IdIndex` was built on), in
    its order, from reward record batches (`problem_id`, `passed`) streamed past once: memory is two
    counters per problem beside the ids' sorted fixed-width bytes."""
    index = _index(problem_ids)
    successes = np.zeros(len(index), np.int64)
    trials = np.zeros(len(index), np.int64)
    for batch in batches:
        positions = index.positions(batch.column("problem_id"), "rewards of problems not in the pool: "
                                    "rematerialize `rewards` for the current problems")
        passed = batch.column("passed").to_numpy(zero_copy_only=False).astype(np.int64)
        successes += np.bincount(positions, weights=passed, minlength=len(index)).astype(np.int64)
        trials += np.bincount(positions, minlength=len(index))
    return successes, trials


def count_truncations(rollout_batches: Iterable[pa.RecordBatch], reward_batches: Iterable[pa.RecordBatch],
                      problem_ids: Sequence[str] | IdIndex) -> tuple[np.ndarray, np.ndarray]:
    """(truncated, truncated_failures) per problem of `problem_ids`, in its order: rollouts whose
    `finish_reason` says the token cap stopped them (rollout batches with `problem_id`,
    `sample_index`, `finish_reason`), and how many of those the rewards (`problem_id`,
    `sample_index`, `passed`) failed. Memory: one integer per cut rollout."""
    index = _index(problem_ids)
    truncated = np.zeros(len(index), np.int64)
    cut_keys = []
    for batch in rollout_batches:
        cut = pc.equal(batch.column("finish_reason"), CUT).to_numpy(zero_copy_only=False)
        positions = _positions(index, batch.column("problem_id"))[cut]
        truncated += np.bincount(positions, minlength=len(index))
        cut_keys.append(_sample_keys(positions, batch.column("sample_index"), cut))
    keys = np.unique(np.concatenate(cut_keys)) if cut_keys else np.array([], np.int64)
    failures = np.zeros(len(index), np.int64)
    for batch in reward_batches:
        failed = ~batch.column("passed").to_numpy(zero_copy_only=False).astype(bool)
        positions = _positions(index, batch.column("problem_id"))[failed]
        hit = _sorted_contains(keys, _sample_keys(positions, batch.column("sample_index"), failed))
        failures += np.bincount(positions[hit], minlength=len(index))
    return truncated, failures


def _sorted_contains(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which `values` are in `keys` (sorted, unique), by binary search: `np.isin` sorts the keys
    again for every batch, which made 3M problems' truncation count take minutes."""
    if not len(keys):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[at] == values


def _index(problem_ids: Sequence[str] | IdIndex) -> IdIndex:
    return problem_ids if isinstance(problem_ids, IdIndex) else IdIndex(problem_ids)


def _positions(index: IdIndex, ids: pa.Array) -> np.ndarray:
    return index.positions(ids, "rollouts or rewards of problems not in the pool: rematerialize `rollouts` and "
                           "`rewards` for the current problems")


def _sample_keys(positions: np.ndarray, sample_index: pa.Array, keep: np.ndarray) -> np.ndarray:
    """One integer per (problem position, sample index)."""
    return (positions.astype(np.int64) << 32) | sample_index.to_numpy(zero_copy_only=False)[keep].astype(np.int64)


def truncation_bound(successes: ArrayLike, trials: ArrayLike, truncated_failures: ArrayLike) -> np.ndarray:
    """Problems whose failures are mostly rollouts cut at the token cap: their pass rate says more
    about `max_tokens` than about difficulty. Uncounted truncations (NaN / None) never bind."""
    failures = np.asarray(trials, np.float64) - np.asarray(successes, np.float64)
    cut = pd.Series(truncated_failures, dtype="object").astype("Float64").fillna(0.0).to_numpy(np.float64)
    return (failures > 0) & (2 * cut > failures)


def token_cap_report(rollouts: int, truncated: int, bound: int, max_tokens: int | None) -> dict[str, Any]:
    """Whether at most `TOKEN_CAP_SHARE` of the rollouts were cut at the token cap, and a line that
    says so (and which setting to raise when not); `bound`: problems failing mostly by the cap."""
    share = truncated / rollouts if rollouts else 0.0
    passed = share <= TOKEN_CAP_SHARE
    line = f"{truncated} of {rollouts} rollouts ({share:.0%}) stopped at the token cap (max_tokens={max_tokens})"
    if not passed:
        line += (f" and count as failures, more than {TOKEN_CAP_SHARE:.0%}; most failures of {bound} problem(s) "
                 "are such cuts. Raise target_model's max_tokens and relabel: these pass rates measure the cap, not difficulty")
    return {"passed": passed, "rollouts": rollouts, "truncated": truncated, "share": round(share, 4),
            "truncation_bound": bound, "max_tokens": max_tokens, "message": line}


def pass_rates_from_counts(
    problem_ids: Sequence[str],
    successes: np.ndarray,
    trials: np.ndarray,
    target: LabelTarget,
    *,
    truncations: tuple[np.ndarray, np.ndarray] | None = None,
    prior: BetaPrior = BetaPrior(),
    level: float = 0.9,
) -> pd.DataFrame:
    """`pass_rates` from per-problem counts (`count_passes`, and `count_truncations` if counted):
    one row per problem with trials, sorted by problem id."""
    stream = LabelStream(problem_ids, successes, trials, target, truncations=truncations, prior=prior, level=level)
    if not stream.rows:
        return PassRate.empty_frame()
    return pd.concat(list(stream.frames()), ignore_index=True)


LABEL_BATCH_ROWS = 65_536
"""Labels made into a frame at a time when they are streamed to a file."""


class LabelStream:
    """`pass_rates_from_counts`'s rows, made a slice at a time (`frames`, or Arrow `batches` for a
    Parquet writer), so a million labels never sit in one frame. Problems without trials are left
    out; rows come sorted by problem id."""

    def __init__(self, problem_ids: Sequence[str] | pa.Array | pa.ChunkedArray, successes: np.ndarray,
                 trials: np.ndarray, target: LabelTarget, *,
                 truncations: tuple[np.ndarray, np.ndarray] | None = None, prior: BetaPrior = BetaPrior(),
                 level: float = 0.9, batch_rows: int = LABEL_BATCH_ROWS) -> None:
        ids = problem_ids if isinstance(problem_ids, (pa.Array, pa.ChunkedArray)) else pa.array(
            np.asarray(problem_ids, dtype=object), pa.string())
        scored = pc.greater(pa.array(np.asarray(trials)), 0)
        # Arrow sorts UTF-8 bytes, i.e. by code point, as `sorted` sorts str: no Python strings made.
        positions = pc.indices_nonzero(scored)
        by_id = pc.sort_indices(ids.take(positions))
        self.order = positions.take(by_id).to_numpy()
        self.ids, self.successes, self.trials = ids, successes, trials
        self.truncations = truncations
        self.target, self.prior, self.level, self.batch_rows = target, prior, level, batch_rows
        self.labelled_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    @property
    def rows(self) -> int:
        return len(self.order)

    def frames(self, limit: int | None = None) -> Iterator[pd.DataFrame]:
        """The labels as `PassRate` frames of at most `batch_rows` rows (the first `limit` rows only, if given)."""
        stop = self.rows if limit is None else min(limit, self.rows)
        for start in range(0, stop, self.batch_rows):
            rows = self.order[start:min(start + self.batch_rows, stop)]
            picked = (self.truncations[0][rows], self.truncations[1][rows]) if self.truncations else None
            ids = self.ids.take(pa.array(rows)).to_numpy(zero_copy_only=False)
            yield _frame(ids, self.successes[rows], self.trials[rows], self.target, self.prior, self.level, picked,
                         self.labelled_at)

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of the labels as `pa.Table.from_pandas` writes a `pass_rates` frame."""
        first = next(self.frames(limit=1), None)
        return pa.Schema.from_pandas(first if first is not None else PassRate.empty_frame(), preserve_index=False)

    def batches(self) -> Iterator[pa.RecordBatch]:
        schema = self.schema
        for frame in self.frames():
            yield pa.RecordBatch.from_pandas(frame, schema=schema, preserve_index=False)


def _frame(ids: np.ndarray, s: np.ndarray, n: np.ndarray, target: LabelTarget, prior: BetaPrior,
           level: float, truncations: tuple[np.ndarray, np.ndarray] | None = None,
           now: str | None = None) -> pd.DataFrame:
    lo, hi = credible_interval(s, n, prior, level)
    now = now or datetime.now(timezone.utc).isoformat(timespec="seconds")
    cut, cut_failed = truncations if truncations else (None, None)
    frame = pd.DataFrame(
        {
            "problem_id": ids.astype(str),
            "successes": s,
            "trials": n,
            "truncated": pd.array(cut if cut is not None else [None] * len(ids), dtype="Int64"),
            "truncated_failures": pd.array(cut_failed if cut_failed is not None else [None] * len(ids), dtype="Int64"),
            "pass_rate": s / n,
            "ci_low": lo,
            "ci_high": hi,
            "model_id": target.model.model_id,
            "revision": target.model.revision,
            "sampling_key": target.sampling.key,
            "verifier_version": target.verifier_version,
            "label_key": target.key,
            "labelled_at": now,
        }
    )
    return frame[[f.name for f in PassRate.SCHEMA]]


def check_counts(labels: pd.DataFrame, what: str) -> None:
    """Refuse measured labels whose `pass_rate` is not `successes / trials` or whose counts are
    impossible: a pass rate is always derived from its counts, so a contradiction means the stored
    labels were changed after labelling, and neither number can be trusted.

    Rows with `label_source` `predicted` are skipped: their counts are synthetic
    (`pipeline.curriculum.labels.merge_labels`).
    """
    rows = labels
    if "label_source" in rows.columns:
        rows = rows[rows["label_source"] != "predicted"]
    if rows.empty:
        return
    s = rows["successes"].to_numpy(np.float64)
    n = rows["trials"].to_numpy(np.float64)
    rate = rows["pass_rate"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bad = ~((n >= 1) & (s >= 0) & (s <= n) & np.isfinite(rate) & (np.abs(rate - s / np.where(n > 0, n, 1)) <= 1e-9))
    if bad.any():
        first = rows[bad].iloc[0]
        raise ValueError(
            f"{what}: {int(bad.sum())} measured label(s) contradict their counts, e.g. problem "
            f"{first['problem_id']}: pass_rate {first['pass_rate']} with {first['successes']} successes in "
            f"{first['trials']} trials. Pass rates are derived from counts, so the stored labels were changed "
            "after labelling: rematerialize `pass_rates`"
        )


def label_mismatch(labels: pd.DataFrame, target: LabelTarget) -> str | None:
    """Why measured `labels` were not made for `target` (another model, revision, sampling or
    verifier), or None when they were. A curriculum must describe the labels it stages, not the
    target configured today: the two differ after a config change without a relabel."""
    if labels.empty or "label_key" not in labels.columns:
        return None
    keys = sorted(set(labels["label_key"]))
    verifiers = sorted(set(labels["verifier_version"])) if "verifier_version" in labels.columns else []
    if keys == [target.key] and verifiers in ([], [target.verifier_version]):
        return None
    return (
        f"pass_rates were measured for label key(s) {keys} (verifier {verifiers}), but target_model now says "
        f"{target.key} (verifier {target.verifier_version}); it differs in "
        + "; ".join(target.difference(k) or "nothing but the verifier" for k in keys)
        + ": rematerialize pass_rates (label_job or relabel_job) with the current target, or set target_model "
        "back to the settings the labels were measured with"
    )


def check_rewards(key: str, target: LabelTarget) -> None:
    """Refuse rewards scored for label key `key` as the counts of labels for `target`: under another
    extraction policy or verifier the same rollouts have other verdicts."""
    if key != target.key:
        raise ValueError(
            f"the rewards were scored for {key}, but target_model now says {target.key} ({target.difference(key)}): "
            "rematerialize rewards (it re-scores the stored rollouts and generates nothing), then pass_rates"
        )
