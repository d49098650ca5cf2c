"""Where gradus keeps its files: everything lives under one root, `GRADUS_HOME`."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_HOME = ".gradus"
BATCH_ROWS = 65_536
"""Rows per record batch when streaming a dataset or the rollout store: bounds a reader's memory
whatever the pool size."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")


def gradus_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The storage root: `home` if given, else `$GRADUS_HOME`, else `.gradus/` in the working dir."""
    root = Path(home or os.environ.get("GRADUS_HOME") or DEFAULT_HOME).expanduser()
    return root.resolve()


def safe_name(name: str) -> str:
    """Validate a user-supplied name used as one path component (curriculum, run, model slug)."""
    if not _NAME.match(name) or name in {".", ".."}:
        raise ValueError(
            f"invalid name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def within(root: Path, *parts: str) -> Path:
    """Join `parts` under `root`, refusing any result that escapes it (path traversal)."""
    root = root.resolve()
    path = root.joinpath(*parts).resolve()
    if path != root and root not in path.parents:
        raise ValueError(f"path {path} escapes the storage root {root}")
    return path


def slug(text: str) -> str:
    """A filesystem-safe rendering of a model id or similar free text."""
    cleaned = re.sub(r"[^A-Za-z0-9._\-]+", "-", text).strip("-.")
    return cleaned[:96] or "unnamed"


def _write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Run `write(tmp)` on a temporary file beside `path`, sync it, then rename it into place, so
    readers see either nothing or the whole file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically."""
    _write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write a small file (manifest, card, model file) atomically."""
    _write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text_atomic(text: str, path: Path) -> None:
    """`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(text.encode("utf-8"), path)


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A fresh, empty folder beside `target` for this build alone (concurrent builds of one target
    never share one): swapped in for `target` whole when the block ends, removed if it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would follow the folder into place
    try:
        yield staging
        swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, target: Path) -> None:
    """Replace folder `target` by `staging` with renames, so readers see the old or the new
    folder whole, never a mix."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class StorageLayout:
    """Where every gradus output lives: every path under the storage root comes from here."""

    home: str = field(default="", metadata={
        "help": "storage root; empty: $GRADUS_HOME, else .gradus/ in the working directory"})
    checkpoint_dir: str = field(default="", metadata={
        "help": "folder the checkpoint sensor watches for new model folders; empty: <home>/checkpoints"})

    @property
    def root(self) -> Path:
        return gradus_home(self.home or None)

    def asset(self, key_path: Sequence[str]) -> Path:
        """An asset's Parquet file: `assets/<key>.parquet`."""
        return within(self.root, "assets", *key_path[:-1], f"{key_path[-1]}.parquet")

    def handle(self, key_path: Sequence[str]) -> Path:
        """An asset stored as a dataset handle (`pipeline.rollouts.handles`): `assets/<key>.json`."""
        return within(self.root, "assets", *key_path[:-1], f"{key_path[-1]}.json")

    def dataset(self, key_path: Sequence[str]) -> Path:
        """The Parquet part files of a dataset asset (its handle points here): `datasets/<key>/`."""
        return within(self.root, "datasets", *key_path)

    def step(self, identifier: Sequence[str]) -> Path:
        """A step output that is not an asset: `steps/<run id>/<step key>/<output>.parquet`."""
        return within(self.root, "steps", *identifier[:-1], f"{identifier[-1]}.parquet")

    def curriculum(self, name: str) -> Path:
        """A curriculum folder: `curricula/<name>/`."""
        return within(self.root, "curricula", safe_name(name))

    @property
    def models(self) -> Path:
        """Converted model folders (the embedded model): `models/`."""
        return within(self.root, "models")

    def rollouts(self, model_id: str, revision: str, sampling_key: str) -> Path:
        """The rollout store of one model revision and sampling: `rollouts/<model>@<revision>/<sampling key>/`."""
        return within(self.root, "rollouts", slug(model_id) + "@" + slug(revision), sampling_key)

    @property
    def hidden_states(self) -> Path:
        """The hidden-state cache: `hidden_states/`."""
        return within(self.root, "hidden_states")

    @property
    def probes(self) -> Path:
        """Saved probes: `probes/`."""
        return within(self.root, "probes")

    def probe(self, model_key: str, probe_id: str) -> Path:
        """A saved probe: `probes/<model key>/<id>/`."""
        return within(self.root, "probes", slug(model_key), probe_id)

    @property
    def history(self) -> Path:
        """The label history: `history/`."""
        return within(self.root, "history")

    def hub(self, name: str) -> Path:
        """A Hub export folder: `hub/<name>/`."""
        return within(self.root, "hub", safe_name(name))

    @property
    def checkpoints(self) -> Path:
        """Training runs' checkpoints, watched by the checkpoint sensor: `checkpoints/`."""
        return Path(self.checkpoint_dir).expanduser() if self.checkpoint_dir else within(self.root, "checkpoints")

    @property
    def locks(self) -> Path:
        """Per-target file locks (`pipeline.core.locks`): `locks/`."""
        return within(self.root, "locks")

    def evaluation_set(self, name: str) -> Path:
        """The local copy of a Hub evaluation set: `evaluation_sets/<name>/`."""
        return within(self.root, "evaluation_sets", safe_name(name))

    @property
    def dagster(self) -> Path:
        """The command line's Dagster instance (unless `DAGSTER_HOME` is set): `dagster/`."""
        return within(self.root, "dagster")


class IntegrityError(ValueError):
    """A stored file no longer has the bytes gradus wrote; the message names it and the fix."""


SHA256_SUFFIX = ".sha256"
"""Checksum sidecar of a file, in `sha256sum` format (so `sha256sum -c` verifies it too)."""


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_sidecar(path: Path) -> Path:
    return path.with_name(path.name + SHA256_SUFFIX)


def write_parquet_checksummed(table: pa.Table, path: Path) -> str:
    """`write_parquet_atomic` plus a checksum sidecar, written before the file appears: a file
    that exists always has its checksum (a crash between the two leaves only an orphan sidecar).
    Row groups hold at most `BATCH_ROWS` rows: a streaming reader decodes a row group at a time,
    so one row group of a million prompts would be read whole however small its batches.
    Returns the sha256."""
    digests: list[str] = []

    def write(tmp: str) -> None:
        pq.write_table(table, tmp, row_group_size=BATCH_ROWS)
        digests.append(file_sha256(Path(tmp)))
        write_text_atomic(f"{digests[0]}  {path.name}\n", sha256_sidecar(path))

    _write_atomic(path, write)
    return digests[0]


def write_parquet_batches_checksummed(batches: Iterable[pa.RecordBatch], schema: pa.Schema, path: Path) -> int:
    """`write_parquet_checksummed` for a stream of record batches (one row group each), so a file
    larger than memory is written without holding it; returns the rows written."""
    rows = [0]

    def write(tmp: str) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows[0] += batch.num_rows
        digest = file_sha256(Path(tmp))
        write_text_atomic(f"{digest}  {path.name}\n", sha256_sidecar(path))

    _write_atomic(path, write)
    return rows[0]


def recorded_sha256(path: Path, fix: str) -> str | None:
    """The sha256 recorded for `path` when it was written (None: no sidecar), without reading the
    file: what names a dataset's content cheaply. An unreadable sidecar raises `IntegrityError`."""
    sidecar = sha256_sidecar(path)
    if not sidecar.exists():
        return None
    try:
        return sidecar.read_text(encoding="ascii").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        raise IntegrityError(f"the checksum file {sidecar} is unreadable, so {path} cannot be trusted: "
                             f"{fix}") from None


@dataclass(frozen=True)
class BatchStream:
    """A table handed over as record batches, written by `write_parquet_batches_checksummed`: a
    step output too large to build whole (the IO manager writes it as it comes)."""

    schema: pa.Schema
    batches: Iterable[pa.RecordBatch]


class ParquetSource:
    """One Parquet file (or an in-memory table) read as a step needs it: some columns, or record
    batches of all of them, so a pool of a million prompts is never loaded whole to be filtered."""

    def __init__(self, data: str | os.PathLike[str] | pa.Table) -> None:
        self._table = data if isinstance(data, pa.Table) else None
        self.path = None if self._table is not None else Path(data)

    @property
    def num_rows(self) -> int:
        return self._table.num_rows if self._table is not None else pq.ParquetFile(self.path).metadata.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self._table.schema if self._table is not None else pq.read_schema(self.path)

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """`columns` (default all) of every row."""
        if self._table is not None:
            return self._table.select(list(columns)) if columns is not None else self._table
        return pq.read_table(self.path, columns=list(columns) if columns is not None else None)

    def column(self, name: str) -> pa.ChunkedArray:
        return self.read([name]).column(name)

    def batches(self, columns: Sequence[str] | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Every row in order, in record batches of at most `batch_rows` rows."""
        if self._table is not None:
            table = self.read(columns)
            yield from table.to_batches(max_chunksize=batch_rows)
            return
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=batch_rows,
                                                          columns=list(columns) if columns is not None else None)

    def take(self, rows: Iterable[int] | pa.Array, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows at positions `rows` (ascending), read batch by batch: memory is what is taken plus one batch."""
        parts = list(self.take_batches(rows, columns))
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        return pa.Table.from_batches(parts) if parts else schema.empty_table()

    def take_batches(self, rows: Iterable[int] | pa.Array, columns: Sequence[str] | None = None
                     ) -> Iterator[pa.RecordBatch]:
        """`take` as record batches, as the file is read: memory is one batch."""
        wanted = np.asarray(rows, np.int64)
        start = 0
        for batch in self.batches(columns):
            lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
            if hi > lo:
                yield batch.take(pa.array(wanted[lo:hi] - start))
            start += batch.num_rows


def verify_sha256(path: Path, fix: str) -> bool:
    """Check `path` against its sidecar; raise `IntegrityError` naming the file and `fix`.

    Returns True when verified, False for a file without a sidecar: one written before gradus
    recorded checksums (or by hand), read unchecked rather than refused, so an existing home keeps
    its rollouts. Damage never removes a sidecar, so this is no gap for what checksums guard.
    """
    recorded = recorded_sha256(path, fix)
    if recorded is None:
        return False
    if file_sha256(path) != recorded:
        raise IntegrityError(f"{path} does not match the sha256 recorded when it was written "
                             f"({sha256_sidecar(path)}): it was changed or damaged since. {fix}")
    return True


def inside_home(path: str | os.PathLike[str], home: Path, what: str) -> Path:
    """`path` resolved, refusing one outside the storage root (e.g. a path read from an event log
    that another home or a hand-edited record put there)."""
    given = Path(path).expanduser()
    try:
        return within(home, str(given))
    except ValueError:
        raise ValueError(f"{what} {given.resolve()} lies outside GRADUS_HOME ({home.resolve()}): refusing to use "
                         "it; name it explicitly in the config if it belongs to this home") from None
