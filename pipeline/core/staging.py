"""Resumable builds: a dataset written part by part into a staging folder named for its inputs,
so a build killed partway (SIGKILL, out of memory, a pre-empted pod) and started again with the same
inputs keeps every part already written and builds only the rest.

`storage.replacing` starts each build in a fresh folder and removes it when the build fails; that
suits outputs that are quick to rebuild. `resuming` is for those that take hours at scale.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.locks import locked
from pipeline.core.storage import IntegrityError, swap_in, verify_sha256


@contextmanager
def resuming(
    target: Path, inputs: str, home: Path, log_wait: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """The staging folder of a build of `target` from `inputs` (a digest of everything its content
    is made from), swapped in for `target` whole when the block ends, as `replacing` does.

    The folder is kept when the build fails or is killed, so the next build of the same inputs finds
    the parts written so far (`kept_part` says which are whole); a build of other inputs removes it
    first, so stale parts are never reused. Builds of one target take turns (a lock under `home`,
    the storage root), so two never write one folder.
    """
    with locked(home, "dataset", str(target), log_wait):
        staging = target.with_name(f".{target.name}.resume-{inputs}")
        for stale in target.parent.glob(f".{target.name}.resume-*"):
            if stale != staging:
                shutil.rmtree(stale, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        for torn in staging.glob(".*.tmp"):  # a write the kill interrupted, never renamed into place
            torn.unlink(missing_ok=True)
        yield staging
        swap_in(staging, target)


def kept_part(path: Path) -> pa.Table | None:
    """The part a killed build left at `path`, if it is whole: written with its checksum sidecar
    (every checksummed write records it before the file appears) and still matching it. None: no
    such part, or one to build again."""
    if not path.exists():
        return None
    try:
        if not verify_sha256(path, "it is built again"):
            return None
        return pq.read_table(path)
    except (IntegrityError, OSError, pa.ArrowException):
        return None


def columns_digest(table: pa.Table, columns: Sequence[str]) -> str:
    """sha256 of the values of string `columns` of `table`, whatever its chunking, without making
    Python objects of a million rows: each chunk's value lengths and bytes, straight from its
    Arrow buffers."""
    h = hashlib.sha256()
    for name in columns:
        # Lengths and bytes go to separate hashes, so where a chunk ends never shows.
        lengths_hash, bytes_hash = hashlib.sha256(), hashlib.sha256()
        for chunk in table.column(name).chunks:
            if not len(chunk):
                continue
            if not pa.types.is_large_string(chunk.type):
                chunk = chunk.cast(pa.large_string())
            offsets = np.frombuffer(chunk.buffers()[1], np.int64)[chunk.offset : chunk.offset + len(chunk) + 1]
            lengths = np.diff(offsets)
            if chunk.null_count:
                lengths = np.where(chunk.is_null().to_numpy(zero_copy_only=False), -1, lengths)
            lengths_hash.update(lengths.tobytes())
            data = chunk.buffers()[2]
            if data is not None:
                bytes_hash.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
        h.update(f"{name}\0{lengths_hash.hexdigest()}\0{bytes_hash.hexdigest()}\0".encode())
    return h.hexdigest()
