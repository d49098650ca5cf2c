"""Per-target file locks under `GRADUS_HOME`, so that processes sharing one home never do the same
work twice or interleave the writes of one target.

A lock is an `fcntl.flock` on `$GRADUS_HOME/locks/<kind>/<target>.lock`. The kernel releases it
when its holder exits, killed or not, so a crashed run never leaves a stale lock behind. Locks are
advisory and local to one machine (flock over NFS is not reliable): a home shared by several
machines needs one writer per target.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.records import content_hash
from pipeline.core.storage import StorageLayout, slug, within

log = logging.getLogger(__name__)

KINDS = ("model", "rollouts", "curriculum", "dataset")
"""What is locked: a model conversion, the rollout generation of one label key, a curriculum build,
a resumable dataset build (`pipeline.core.staging`)."""


def lock_path(home: Path, kind: str, target: str) -> Path:
    """The lock file of `target`: readable name plus a hash, so distinct targets never share one."""
    if kind not in KINDS:
        raise ValueError(f"unknown lock kind {kind!r}; one of {KINDS}")
    return within(StorageLayout(str(home)).locks, kind, f"{slug(target)[:64]}-{content_hash(target, length=16)}.lock")


@contextmanager
def locked(
    home: Path, kind: str, target: str, log_wait: Callable[[str], None] | None = None, shared: bool = False
) -> Iterator[float]:
    """Hold the exclusive lock of `target` (or, `shared`, one of many readers' locks that together
    keep the exclusive holder out) for the duration of the block; yields seconds waited.

    Waiting is reported once (`log_wait`, else the module logger), so a run blocked behind another
    process says why it is idle.
    """
    path = lock_path(home, kind, target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    started = time.perf_counter()
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            (log_wait or log.info)(f"waiting for another process to finish with {kind} {target} ({path})")
            fcntl.flock(fd, mode)
        yield time.perf_counter() - started
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
