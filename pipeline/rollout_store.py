"""The rollout cache: every completion ever generated, keyed so nothing is generated twice.

Layout: `$GRADUS_HOME/rollouts/<model-slug>@<revision>/<sampling-key>/` holds `sampling.json` and
append-only Parquet part files. Each generated batch is written as one part, atomically (tmp file +
rename), so a run killed at any moment loses at most the batch in flight and never leaves a torn
file; the next run generates only what is missing.

Each part has a `.sha256` sidecar written before the part appears, and every read verifies it: a
part changed after it was written (a flipped byte can turn a solved problem into an unsolved one
and still be valid Parquet) is an error naming the file, never a silent relabel.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.engines.base import Completion, GenerationRequest, SamplingConfig
from pipeline.model import ModelSpec
from pipeline.records import Rollout, content_hash
from pipeline.locks import locked
from pipeline.storage import (
    StorageLayout,
    sha256_sidecar,
    verify_sha256,
    write_parquet_checksummed,
    write_text_atomic,
)


class RolloutStore:
    """Append-only Parquet store of rollouts for one (model, revision, sampling) label key."""

    def __init__(self, home: Path, model: ModelSpec, sampling: SamplingConfig, engine: str = "") -> None:
        self.home = home
        self.model = model
        self.sampling = sampling
        self.engine = engine
        self._verified: dict[Path, tuple[int, int]] = {}
        """Parts whose checksum this store has verified, with the (size, mtime) seen then."""
        self.root = StorageLayout(str(home)).rollouts(model, sampling)
        self.root.mkdir(parents=True, exist_ok=True)
        params = self.root / "sampling.json"
        if not params.exists():
            write_text_atomic(json.dumps(asdict(sampling), indent=2, sort_keys=True), params)

    def parts(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet"))

    def verified_parts(self) -> list[Path]:
        """Every part, each checked against its recorded sha256 (once per store object, again if
        the file changes); raises `IntegrityError` naming a damaged part and how to rebuild it."""
        parts = self.parts()
        for part in parts:
            stat = part.stat()
            if self._verified.get(part) == (stat.st_size, stat.st_mtime_ns):
                continue
            verify_sha256(part, f"delete {part} and {sha256_sidecar(part)}, then rematerialize `rollouts`: "
                                "only the rollouts that part held are generated again")
            self._verified[part] = (stat.st_size, stat.st_mtime_ns)
        return parts

    def generation_lock(self, problem_ids: Sequence[str]) -> AbstractContextManager[float]:
        """The lock held while generating rollouts of these problems under this label key: a second
        process asking for the same problems waits, then finds them stored and generates nothing.
        Keyed by the problem set too, so the shards of one run (disjoint sets) run in parallel."""
        ids = content_hash(*sorted(set(problem_ids)), length=16)
        return locked(self.home, "rollouts", f"{self.model.key}/{self.sampling.key}/{ids}")

    def _dataset(self) -> pads.Dataset | None:
        parts = self.verified_parts()
        return pads.dataset([str(p) for p in parts], schema=Rollout.SCHEMA, format="parquet") if parts else None

    def existing(self, problem_ids: Iterable[str] | None = None) -> dict[str, set[int]]:
        """Sample indices already stored, per problem."""
        ds = self._dataset()
        if ds is None:
            return {}
        flt = None
        if problem_ids is not None:
            flt = pads.field("problem_id").isin(pa.array(sorted(set(problem_ids)), pa.string()))
        table = ds.to_table(columns=["problem_id", "sample_index"], filter=flt)
        have: dict[str, set[int]] = {}
        for pid, idx in zip(table.column("problem_id").to_pylist(), table.column("sample_index").to_pylist()):
            have.setdefault(pid, set()).add(idx)
        return have

    def append(self, requests: Sequence[GenerationRequest], completions: Sequence[Completion]) -> Path:
        """Persist one batch durably; returns the part file written."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows = [
            Rollout(
                problem_id=r.problem_id,
                sample_index=r.sample_index,
                text=c.text,
                num_tokens=c.num_tokens,
                finish_reason=c.finish_reason,
                model_id=self.model.model_id,
                revision=self.model.revision,
                sampling_key=self.sampling.key,
                engine=self.engine,
                created_at=now,
            )
            for r, c in zip(requests, completions, strict=True)
        ]
        path = self._new_part()
        write_parquet_checksummed(Rollout.to_table(rows), path)
        return path

    def _new_part(self) -> Path:
        # Names sort in write order, which is what "the first write wins" relies on.
        return self.root / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"

    def load(self, problem_ids: Iterable[str], max_samples: dict[str, int] | int | None = None) -> pd.DataFrame:
        """Stored rollouts of these problems, sorted by (problem_id, sample_index), one row per key.

        `max_samples` keeps only sample indices below the cap (a global int or per problem), so a run
        asking for n=4 reads 4 samples even when an earlier run stored 16.
        """
        ds = self._dataset()
        ids = sorted(set(problem_ids))
        if ds is None or not ids:
            return Rollout.empty_frame()
        table = ds.to_table(filter=pads.field("problem_id").isin(pa.array(ids, pa.string())))
        frame = table.to_pandas()
        # Two runs racing on the same key may both have written it: the first part wins.
        frame = frame.drop_duplicates(["problem_id", "sample_index"], keep="first")
        if isinstance(max_samples, int):
            frame = frame[frame["sample_index"] < max_samples]
        elif isinstance(max_samples, dict):
            caps = frame["problem_id"].map(max_samples).fillna(0)
            frame = frame[frame["sample_index"] < caps]
        return frame.sort_values(["problem_id", "sample_index"], ignore_index=True)

    def compact(self) -> int:
        """Merge part files into one (atomic); returns how many parts were merged."""
        parts = self.verified_parts()
        if len(parts) < 2:
            return 0
        table = pq.ParquetDataset([str(p) for p in parts], schema=Rollout.SCHEMA).read()
        write_parquet_checksummed(table, self._new_part())
        for p in parts:
            p.unlink()
            sha256_sidecar(p).unlink(missing_ok=True)
        return len(parts)


def missing_requests(
    problems: pd.DataFrame, wanted: dict[str, int] | int, have: dict[str, set[int]]
) -> list[GenerationRequest]:
    """The requests still to generate so each problem has sample indices 0..wanted-1."""
    out = []
    for pid, prompt in zip(problems["problem_id"], problems["prompt"]):
        n = wanted if isinstance(wanted, int) else wanted.get(pid, 0)
        done = have.get(pid, set())
        for i in range(n):
            if i not in done:
                out.append(GenerationRequest.of(pid, i, list(prompt)))
    return out
