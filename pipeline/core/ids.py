"""Problem ids as a sorted, fixed-width byte array, looked up by binary search.

A million ids as Python strings in a dict, set or `pd.Index` cost some 150 bytes each; as one
numpy `S<width>` array they cost their own bytes, and `np.searchsorted` finds a batch of them
without a hash table. Byte order of UTF-8 is code point order, so the sorted array sorts as
`sorted()` sorts the strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

CHUNK_ROWS = 65_536
"""Ids converted at a time: only this many ever exist as Python objects."""


def fixed_width(ids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray, width: int | None = None) -> np.ndarray:
    """`ids` as a numpy `S<width>` array (width: the longest id's UTF-8 bytes, unless given),
    converted a chunk at a time."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return ids if width is None or ids.dtype.itemsize == width else ids.astype(f"S{width}")
    if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pa.array(ids, pa.string())
    if ids.null_count:
        raise ValueError("problem ids must not be null")
    binary = ids.cast(pa.binary())
    if width is None:
        lengths = pa.compute.binary_length(binary)
        width = max(int(pa.compute.max(lengths).as_py() or 0), 1)
    out = np.empty(len(ids), f"S{width}")
    for start in range(0, len(ids), CHUNK_ROWS):
        chunk = binary.slice(start, CHUNK_ROWS).to_numpy(zero_copy_only=False)
        out[start:start + len(chunk)] = chunk
    return out


class IdIndex:
    """Positions of problem ids in a sequence of unique ids, found by binary search in a sorted
    fixed-width copy (a few bytes per id beyond the ids themselves: one int64 position each)."""

    def __init__(self, ids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray) -> None:
        values = fixed_width(ids)
        order = np.argsort(values, kind="stable")
        self.sorted = values[order]
        # None: the ids came sorted, positions in the sorted copy are the positions asked for.
        self.order = None if np.array_equal(order, np.arange(len(order))) else order
        if len(self.sorted) > 1 and (dup := self.sorted[1:] == self.sorted[:-1]).any():
            raise ValueError(f"problem ids are not unique, e.g. {self.sorted[1:][dup][0].decode()!r}")

    def __len__(self) -> int:
        return len(self.sorted)

    @property
    def width(self) -> int:
        return self.sorted.dtype.itemsize

    def lookup(self, ids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray) -> np.ndarray:
        """Each id's position in the indexed sequence, -1 where it is not there."""
        values = fixed_width(ids)
        if values.dtype.itemsize > self.width:
            # A longer id is in no position; cutting it to the width could make it look like one.
            too_long = np.char.str_len(values) > self.width
            values = values.astype(f"S{self.width}")
        else:
            too_long = None
            values = values.astype(f"S{self.width}", copy=False)
        if not len(self.sorted):
            return np.full(len(values), -1, np.int64)
        at = np.searchsorted(self.sorted, values)
        hit = self.sorted[np.minimum(at, len(self.sorted) - 1)] == values
        if too_long is not None:
            hit &= ~too_long
        found = at if self.order is None else self.order[np.minimum(at, len(self.sorted) - 1)]
        return np.where(hit, found, -1).astype(np.int64)

    def positions(self, ids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray, what: str) -> np.ndarray:
        """`lookup`, refusing ids that are not indexed (`what` says what they were and how to fix it)."""
        found = self.lookup(ids)
        if (missing := found < 0).any():
            values = fixed_width(ids)[missing]
            raise ValueError(f"{what}, e.g. {sorted(v.decode() for v in values[:3])}")
        return found
