import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.ids import IdIndex, fixed_width


def test_positions_are_those_of_the_given_order():
    ids = ["p10", "p2", "ü-7", "p1"]
    index = IdIndex(pa.chunked_array([pa.array(ids[:2]), pa.array(ids[2:])]))
    assert index.lookup(["p1", "p10", "ü-7", "p2"]).tolist() == [3, 0, 2, 1]
    assert index.lookup(np.array(["nope", "p", "p100", "ü-7x"], dtype=object)).tolist() == [-1, -1, -1, -1]
    # Sorted as `sorted` sorts the strings (UTF-8 byte order is code point order).
    assert [v.decode() for v in index.sorted] == sorted(ids)


def test_sorted_ids_need_no_permutation():
    index = IdIndex(["a", "b", "c"])
    assert index.order is None
    assert index.lookup(pa.array(["c", "a"])).tolist() == [2, 0]


def test_unknown_and_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="not unique, e.g. 'b'"):
        IdIndex(["b", "a", "b"])
    with pytest.raises(ValueError, match=r"rewards of strangers, e.g. \['x', 'y'\]"):
        IdIndex(["a"]).positions(["y", "a", "x"], "rewards of strangers")
    assert IdIndex([]).lookup(["a"]).tolist() == [-1]


def test_fixed_width_converts_in_chunks(monkeypatch):
    from pipeline.core import ids

    monkeypatch.setattr(ids, "CHUNK_ROWS", 2)
    values = [f"id-{i}" * (i % 3 + 1) for i in range(7)]
    out = fixed_width(pa.array(values))
    assert out.dtype == np.dtype(f"S{max(len(v) for v in values)}")
    assert [v.decode() for v in out] == values
