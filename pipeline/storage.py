"""Where gradus keeps its files: everything lives under one root, `GRADUS_HOME`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pipeline.engines.base import SamplingConfig
    from pipeline.model import ModelSpec

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


def staging_for(target: Path) -> Path:
    """A fresh, empty folder beside `target` to build its replacement in, then `swap_in`."""
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


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

    def rollouts(self, model: ModelSpec, sampling: SamplingConfig) -> Path:
        """The rollout store of one model and sampling: `rollouts/<model>@<revision>/<sampling key>/`."""
        return within(self.root, "rollouts", slug(model.model_id) + "@" + slug(model.revision), sampling.key)

    @property
    def hidden_states(self) -> Path:
        """The hidden-state cache: `hidden_states/`."""
        return within(self.root, "hidden_states")

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
    def dagster(self) -> Path:
        """The command line's Dagster instance (unless `DAGSTER_HOME` is set): `dagster/`."""
        return within(self.root, "dagster")
