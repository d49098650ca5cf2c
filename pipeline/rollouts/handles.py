"""Dataset handles: what an asset hands the next one instead of a frame when the rows do not fit
in memory (a million problems x 16 rollouts is 16M rows of text).

A handle is small and JSON-serialisable: where the Parquet part files are, how many rows they
hold, the label key they were made for and, for rollouts, which samples of the shared rollout
store belong to the asset. Readers stream the rows in record batches of bounded size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.records import content_hash
from pipeline.core.storage import BATCH_ROWS, recorded_sha256, verify_sha256


@dataclass(frozen=True)
class DatasetHandle:
    """A Parquet dataset on disk, by reference.

    `kind` "rollouts": `path` is a rollout store folder and `selection` a Parquet file of
    (problem_id, trials): the dataset is each problem's sample indices 0..trials-1 from the store.
    `kind` "parts": `path` is a folder of checksummed part files, read whole.
    """

    kind: str
    path: str
    rows: int
    label_key: str
    selection: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetHandle:
        return cls(**json.loads(text))

    def parts(self) -> list[Path]:
        return sorted(Path(self.path).glob("part-*.parquet"))

    def batches(self, columns: Sequence[str] | None = None, batch_rows: int = BATCH_ROWS,
                positions: bool = False) -> Iterator[pa.RecordBatch]:
        """The rows in record batches of at most `batch_rows` rows (`columns`: default all).
        `positions` (rollouts only) adds a first column `position`: the row's problem's index in
        `read_selection()`, so a reader joins rows to per-problem arrays by number, not by id."""
        if self.kind == "rollouts":
            from pipeline.rollouts.store import scan_store

            selection = self.read_selection()
            for batch in scan_store(Path(self.path), selection.column("problem_id"),
                                    selection.column("trials").to_numpy(), columns, batch_rows):
                yield batch if positions else batch.drop_columns(["position"])
            return
        if positions:
            raise ValueError(f"a {self.kind!r} dataset has no selection for rows to have positions in")
        for part in self.parts():
            verify_sha256(part, f"rematerialize the asset whose data lives in {self.path}")
            yield from pq.ParquetFile(part).iter_batches(batch_size=batch_rows, columns=columns)

    def fingerprint(self) -> str:
        """A digest of the rows this handle reads, from the sha256 recorded beside every file it
        reads (the parts, and the selection) rather than the rows: a part rewritten, added or
        compacted away changes it. A file without a sidecar counts by its size and time."""
        files = self.parts() + ([Path(self.selection)] if self.selection else [])
        fix = f"rematerialize the asset whose data lives in {self.path}"

        def recorded(file: Path) -> str:
            stat = file.stat()
            return recorded_sha256(file, fix) or f"{stat.st_size}:{stat.st_mtime_ns}"

        return content_hash(self.to_json(), *(f"{file.name} {recorded(file)}" for file in files))

    def read_selection(self) -> pa.Table:
        path = Path(self.selection)
        verify_sha256(path, "rematerialize `rollouts`")
        return pq.read_table(path)

    def to_frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows as one frame, sorted by (problem_id, sample_index) where present: for small
        datasets (tests, previews); stream `batches` for the real thing."""
        batches = list(self.batches(columns))
        if not batches:
            return pd.DataFrame(columns=list(columns or []))
        frame = pa.Table.from_batches(batches).to_pandas()
        keys = [k for k in ("problem_id", "sample_index") if k in frame.columns]
        return frame.sort_values(keys, ignore_index=True) if keys else frame


def read_handle(path: Path) -> DatasetHandle:
    """The handle stored at `path` (an asset's `.json`)."""
    return DatasetHandle.from_json(path.read_text(encoding="utf-8"))
