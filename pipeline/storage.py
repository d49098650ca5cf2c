"""Where gradus keeps its files: everything lives under one root, `GRADUS_HOME`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_HOME = ".gradus"
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


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file so that readers see either nothing or the whole file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write a small file (manifest, card, model file) so readers never see it half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: Path) -> None:
    """`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(text.encode("utf-8"), path)


def swap_in(staging: Path, target: Path) -> None:
    """Replace folder `target` by `staging` with renames, so readers see the old or the new
    folder whole, never a mix."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
