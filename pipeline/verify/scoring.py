"""Rewards: extract each rollout's final answer and verify it against the problem's gold.

`score_rollouts` scores a frame in memory (the adaptive sampler's rounds, small evaluations);
`score_dataset` streams a rollouts dataset through the same scoring batch by batch into reward
part files, so scoring 16M rollouts holds one batch, never the table, and a run killed partway
resumes from the parts it wrote.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.progress import Progress
from pipeline.core.records import Reward, content_hash
from pipeline.core.staging import columns_digest, kept_part, resuming
from pipeline.core.storage import BATCH_ROWS, write_parquet_checksummed
from pipeline.rollouts.handles import DatasetHandle
from pipeline.verify.extraction import extract_answer
from pipeline.verify.verification import VERIFIER_VERSION, VerificationTask, VerifierPool

GOLD_COLUMNS = ["problem_id", "answer", "verifier", "metadata"]
"""What scoring needs of the problems."""


def score_rollouts(
    problems: pd.DataFrame,
    rollouts: pd.DataFrame,
    pool: VerifierPool,
    policy: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """One `Reward` row per rollout. Pure in the stored rollouts: rescoring never touches an engine."""
    if rollouts.empty:
        return Reward.empty_frame()
    info = problems.set_index("problem_id")[["answer", "verifier", "metadata"]]
    missing = set(rollouts["problem_id"]) - set(info.index)
    if missing:
        raise ValueError(f"{len(missing)} rollouts belong to problems not in the pool, e.g. {sorted(missing)[:3]}")
    joined = info.loc[rollouts["problem_id"]]
    return _score(rollouts["problem_id"].to_numpy(), rollouts["sample_index"].to_numpy(np.int32),
                  rollouts["text"], joined["verifier"].tolist(), joined["answer"].tolist(),
                  joined["metadata"].tolist(), pool, policy, progress)


def _score(
    problem_ids: np.ndarray,
    sample_index: np.ndarray,
    texts: Sequence[str],
    verifiers: list[str],
    golds: list[str],
    metadata: list[str],
    pool: VerifierPool,
    policy: str,
    progress: Callable[[int, int], None] | None,
) -> pd.DataFrame:
    """Reward rows for rollouts already joined to their problems' gold answers."""
    extracted = [extract_answer(text, policy, verifier=v) for text, v in zip(texts, verifiers)]
    tasks = [VerificationTask(v, g, a, m) for v, g, a, m in zip(verifiers, golds, extracted, metadata)]
    verdicts = pool.verify_many(tasks, progress)
    frame = pd.DataFrame(
        {
            "problem_id": problem_ids,
            "sample_index": sample_index.astype(np.int32),
            "extracted": extracted,
            "score": [v.score for v in verdicts],
            "passed": [v.passed for v in verdicts],
            "status": [v.status for v in verdicts],
            "verifier": verifiers,
            "verifier_version": VERIFIER_VERSION,
        }
    )
    return frame[[f.name for f in Reward.SCHEMA]]


@dataclass
class RewardSummary:
    """What a streamed scoring saw, gathered on the way (for metadata; the rows stay on disk)."""

    rows: int = 0
    passed: int = 0
    score_sum: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    failed: list[pd.DataFrame] = field(default_factory=list)
    """The first failures, up to the number asked for."""
    seconds: float = 0.0
    resumed: int = 0
    """Rows kept from an interrupted run of the same inputs instead of being scored again."""

    @property
    def mean_reward(self) -> float:
        return self.score_sum / self.rows if self.rows else 0.0

    @classmethod
    def of(cls, frame: pd.DataFrame, show_failures: int) -> RewardSummary:
        """One part's `Reward` rows, counted."""
        return cls(len(frame), int(frame["passed"].sum()), float(frame["score"].sum()),
                   Counter(frame["status"].value_counts().to_dict()), [frame[~frame["passed"]].head(show_failures)])

    def add(self, frame: pd.DataFrame, show_failures: int) -> None:
        """Count one part's `Reward` rows."""
        self.merge(RewardSummary.of(frame, show_failures), show_failures)

    def merge(self, part: RewardSummary, show_failures: int) -> None:
        """Count a part's summary (made here or where the part was scored, e.g. a Ray task)."""
        self.rows += part.rows
        self.passed += part.passed
        self.score_sum += part.score_sum
        self.statuses.update(part.statuses)
        for failed in part.failed:
            shown = sum(len(f) for f in self.failed)
            if shown < show_failures:
                self.failed.append(failed.head(show_failures - shown))


def pool_rows(problem_ids: pa.Array | pa.ChunkedArray, problems: pa.Table) -> np.ndarray:
    """Each of `problem_ids`' row in `problems`, by one hash join of the two id columns (no million
    ids become Python objects), refusing ids the pool lacks."""
    rows = pc.fill_null(pc.index_in(problem_ids, value_set=problems.column("problem_id")), -1).to_numpy()
    if (rows < 0).any():
        unknown = sorted(problem_ids.filter(pa.array(rows < 0)).to_pylist())
        raise ValueError(f"{len(unknown)} rollout problems are not in the pool, e.g. {unknown[:3]}: "
                         "rematerialize `rollouts` for the current problems")
    return rows


def score_dataset(
    problems: pa.Table,
    rollouts: DatasetHandle,
    pool: VerifierPool,
    folder: Path,
    policy: str = "auto",
    log: Callable[[str], None] = lambda line: None,
    show_failures: int = 8,
    batch_rows: int = BATCH_ROWS,
    label_key: str | None = None,
    *,
    home: Path,
) -> tuple[DatasetHandle, RewardSummary]:
    """Score every rollout of `rollouts` into checksummed `Reward` part files in `folder`, one per
    batch, and return their handle. The parts are written into a staging folder named for the
    inputs (`resuming`) and swapped in whole at the end, so a failed run leaves the old rewards, and
    a run killed partway resumes: the next run with the same inputs keeps each part that is whole
    and for the same rows, and scores only the rest. `problems` needs `GOLD_COLUMNS` (an Arrow
    table: a million problems' gold answers stay compact). `label_key` is the key the rewards are for
    (`LabelTarget.key`, which adds `policy` and the verifier to the rollouts' key); the handle
    records it, default the rollouts' own. `home` is the storage root, whose lock keeps two runs
    from building one folder at once."""
    label_key = label_key or rollouts.label_key
    # Everything a part's rows depend on: the rollouts' files, the golds, how answers are read and
    # checked (a longer timeout can turn a timed-out 0 into a pass).
    inputs = content_hash(rollouts.fingerprint(), columns_digest(problems, GOLD_COLUMNS), VERIFIER_VERSION,
                          policy, label_key, str(batch_rows), str(pool.timeout_s))
    # Each selected problem's row in `problems`: a batch finds its golds by the rows' positions.
    rows_of = pool_rows(rollouts.read_selection().column("problem_id"), problems)
    golds = {name: problems.column(name) for name in ("answer", "verifier", "metadata")}
    summary = RewardSummary()
    started = time.perf_counter()
    bar = Progress("verifying", rollouts.rows, log, unit="answers")
    with resuming(folder, inputs, home, log) as staging:
        for number, batch in enumerate(rollouts.batches(["problem_id", "sample_index", "text"], batch_rows,
                                                        positions=True)):
            path = staging / f"part-{number:06d}.parquet"
            kept = kept_part(path)
            if kept is not None and _same_rows(kept, batch):
                frame = kept.to_pandas()
                summary.resumed += len(frame)
                bar.resume(len(frame), _route_counts(pool))
                summary.add(frame, show_failures)
                continue
            ids = batch.column("problem_id").to_numpy(zero_copy_only=False)
            take = pa.array(rows_of[batch.column("position").to_numpy()])
            base = summary.rows

            def progress(done: int, total: int) -> None:
                bar.update(base + done, _route_counts(pool))

            frame = _score(ids, batch.column("sample_index").to_numpy(), batch.column("text").to_pylist(),
                           golds["verifier"].take(take).to_pylist(), golds["answer"].take(take).to_pylist(),
                           golds["metadata"].take(take).to_pylist(), pool, policy, progress)
            table = pa.Table.from_pandas(frame, schema=Reward.SCHEMA, preserve_index=False, nthreads=1)
            write_parquet_checksummed(table, path)
            summary.add(frame, show_failures)
            if bar.done != summary.rows:  # every answer settled without a worker: no line yet
                bar.update(summary.rows, _route_counts(pool))
    if summary.resumed:
        log(f"resumed: {summary.resumed} of {summary.rows} answers were kept from an interrupted run "
            "with the same inputs, not scored again")
    summary.seconds = time.perf_counter() - started
    return DatasetHandle("parts", str(folder), summary.rows, label_key), summary


def _same_rows(kept: pa.Table, batch: pa.RecordBatch) -> bool:
    """Whether a kept part holds the rewards of exactly this batch's rollouts, in its order."""
    return (kept.schema.equals(Reward.SCHEMA) and kept.num_rows == batch.num_rows
            and all(kept.column(key).equals(pa.chunked_array([batch.column(key)]))
                    for key in ("problem_id", "sample_index")))


def _route_counts(pool: VerifierPool) -> str:
    """How answers were settled so far: the fast path and the memo spare the workers."""
    stats = pool.stats
    return f"{stats['fast_path']} fast path, {stats['memo']} repeats, {stats['worker']} to workers"
