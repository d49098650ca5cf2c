from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.storage import gradus_home, safe_name, slug, within, write_parquet_atomic


def test_gradus_home_prefers_argument_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADUS_HOME", str(tmp_path / "env"))
    assert gradus_home() == (tmp_path / "env").resolve()
    assert gradus_home(tmp_path / "arg") == (tmp_path / "arg").resolve()
    monkeypatch.delenv("GRADUS_HOME")
    assert gradus_home() == Path(".gradus").resolve()


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "/abs", ".hidden", "x" * 200, "sp ace"])
def test_safe_name_rejects_path_tricks(bad):
    with pytest.raises(ValueError):
        safe_name(bad)


def test_within_refuses_escape(tmp_path):
    assert within(tmp_path, "a", "b.parquet") == (tmp_path / "a" / "b.parquet").resolve()
    with pytest.raises(ValueError, match="escapes"):
        within(tmp_path, "..", "etc")
    with pytest.raises(ValueError, match="escapes"):
        within(tmp_path, "/etc/passwd")


def test_slug_is_filesystem_safe():
    assert slug("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB-SmolLM2-135M-Instruct"
    assert slug("../..") == "unnamed"


def test_atomic_parquet_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "t.parquet"
    write_parquet_atomic(pa.table({"x": [1, 2]}), path)
    assert pq.read_table(path).column("x").to_pylist() == [1, 2]
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]


def test_a_parquet_source_reads_columns_batches_and_rows(tmp_path):
    from pipeline.core.storage import ParquetSource

    table = pa.table({"id": [f"p{i}" for i in range(10)], "n": list(range(10))})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=3)
    for source in (ParquetSource(tmp_path / "t.parquet"), ParquetSource(table)):
        assert source.num_rows == 10 and source.column("n").to_pylist() == list(range(10))
        assert [b.num_rows for b in source.batches(["id"], batch_rows=4)][0] <= 4
        assert pa.Table.from_batches(list(source.batches(batch_rows=4))).equals(table)
        assert source.take([0, 4, 5, 9], ["n"]).column("n").to_pylist() == [0, 4, 5, 9]
        assert source.take([], ["id"]).num_rows == 0
