"""Resumable staging: the folder named for its inputs, what survives a failed build, which kept
parts count as whole, and a digest of Arrow columns that ignores chunking."""

import pyarrow as pa
import pytest

from pipeline.core.staging import columns_digest, kept_part, resuming
from pipeline.core.storage import write_parquet_atomic, write_parquet_checksummed


def test_a_failed_build_keeps_its_parts_for_the_same_inputs_only(tmp_path):
    target = tmp_path / "data" / "rewards"
    with pytest.raises(RuntimeError), resuming(target, "aaa", tmp_path) as staging:
        write_parquet_checksummed(pa.table({"x": [1]}), staging / "part-000000.parquet")
        (staging / ".part-000001.parquet.x.tmp").write_bytes(b"torn")
        raise RuntimeError("killed")
    assert not target.exists()
    with resuming(target, "aaa", tmp_path) as again:
        assert again == staging and kept_part(again / "part-000000.parquet").column("x").to_pylist() == [1]
        assert not list(again.glob(".*.tmp"))
    assert kept_part(target / "part-000000.parquet") is not None and not staging.exists()

    with pytest.raises(RuntimeError), resuming(target, "aaa", tmp_path) as staging:
        write_parquet_checksummed(pa.table({"x": [2]}), staging / "part-000000.parquet")
        raise RuntimeError("killed")
    with resuming(target, "bbb", tmp_path) as other:
        assert not staging.exists() and not list(other.iterdir())  # other inputs: the stale parts are gone


def test_only_a_whole_checksummed_part_is_kept(tmp_path):
    part = tmp_path / "part-000000.parquet"
    assert kept_part(part) is None
    write_parquet_atomic(pa.table({"x": [1]}), part)
    assert kept_part(part) is None  # no sidecar: not written by a checksummed build
    write_parquet_checksummed(pa.table({"x": [1]}), part)
    assert kept_part(part) is not None
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert kept_part(part) is None


def test_the_columns_digest_sees_values_not_chunks():
    whole = pa.table({"id": ["a", "bb", None, "c"], "gold": ["1", "2", "3", ""]})
    chunked = pa.Table.from_batches(whole.to_batches(max_chunksize=1))
    assert chunked.column("id").num_chunks == 4
    assert columns_digest(whole, ["id", "gold"]) == columns_digest(chunked, ["id", "gold"])
    assert columns_digest(whole.slice(1), ["id"]) == columns_digest(pa.table({"id": ["bb", None, "c"]}), ["id"])
    assert columns_digest(whole, ["id"]) != columns_digest(pa.table({"id": ["a", "bb", "", "c"]}), ["id"])
    assert columns_digest(whole, ["gold"]) != columns_digest(pa.table({"gold": ["1", "2", "3", "4"]}), ["gold"])
    assert columns_digest(pa.table({"id": ["ab", "c"]}), ["id"]) != columns_digest(pa.table({"id": ["a", "bc"]}), ["id"])
