"""Record types: their Arrow schemas round-trip through real Parquet files, and the hashing and
canonical JSON that problem ids and label keys are built from."""

import dataclasses
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.records import (
    PassRate,
    Problem,
    QuarantinedRow,
    Record,
    Reward,
    Rollout,
    canonical_json,
    content_hash,
)
from pipeline.hygiene.dedup import DuplicateProblem

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3? ✓"}]
EXAMPLES = {
    Problem: [Problem("p1", "test/src", PROMPT, "5", "math", "arith/level_0", '{"a":1}'),
              Problem("p2", "test/src", PROMPT[1:], "x²", "reasoning_gym", "other")],
    QuarantinedRow: [QuarantinedRow("f.jsonl", 3, "missing_answer", "no `answer` field", '{"q":"?"}')],
    Rollout: [Rollout("p1", 0, "It is 5.", 4, "stop", "m/id", "r1", "s-abc", "vllm", "2024-01-01T00:00:00"),
              Rollout("p1", 1, "", 16, "length", "m/id", "r1", "s-abc", "transformers")],
    Reward: [Reward("p1", 0, "5", 1.0, True, "ok", "math", "v1"),
             Reward("p1", 1, None, 0.0, False, "no_answer", "math", "v1")],
    PassRate: [PassRate("p1", 3, 8, 2, 1, 0.375, 0.1, 0.7, "m/id", "r1", "s-abc", "v1", "key", "2024-01-01")],
    DuplicateProblem: [DuplicateProblem("p2", "test/src", "arith", "exact_duplicate", 0, "p1", 1.0, "2 + 3?", "5"),
                       DuplicateProblem("p3", "test/src", "arith", "conflicting_answers", 1, None, 1.0, "x?", "7")],
}


@pytest.mark.parametrize("record", list(EXAMPLES), ids=lambda c: c.__name__)
def test_each_record_round_trips_through_parquet(record, tmp_path):
    rows = EXAMPLES[record]
    table = record.to_table(rows)
    assert table.schema == record.SCHEMA
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema == record.SCHEMA
    assert [record(**row) for row in back.to_pylist()] == rows
    # and through pandas, the form stages exchange
    frame = record.to_frame(rows)
    assert list(frame.columns) == record.SCHEMA.names
    again = pa.Table.from_pandas(frame, schema=record.SCHEMA, preserve_index=False)
    assert [record(**row) for row in again.to_pylist()] == rows


@pytest.mark.parametrize("record", list(EXAMPLES), ids=lambda c: c.__name__)
def test_schema_columns_are_the_dataclass_fields_in_order(record):
    assert [f.name for f in dataclasses.fields(record)] == record.SCHEMA.names
    assert list(record.empty_frame().columns) == record.SCHEMA.names
    assert record.empty_frame().empty


def test_every_record_type_is_covered():
    assert set(Record.__subclasses__()) == set(EXAMPLES)


def test_to_table_refuses_a_value_of_the_wrong_type():
    bad = Rollout("p1", 0, "text", "four", "stop", "m", "r", "s", "e")  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError)):
        Rollout.to_table([bad])


def test_content_hash_is_stable_and_unambiguous():
    assert content_hash("a", "b") == content_hash("a", "b")
    # length-prefixed parts: moving the boundary or merging parts changes the hash
    assert len({content_hash("ab", "c"), content_hash("a", "bc"), content_hash("abc"), content_hash("abc", "")}) == 4
    assert content_hash("", "a") != content_hash("a", "")
    digest = content_hash("x", length=32)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert content_hash("x", length=8) == digest[:8]
    assert content_hash("é") != content_hash("e")


def test_canonical_json_is_order_free_compact_and_typed():
    a = {"b": [1, 2], "a": {"y": 1, "x": "é"}}
    b = {"a": {"x": "é", "y": 1}, "b": [1, 2]}
    assert canonical_json(a) == canonical_json(b) == '{"a":{"x":"é","y":1},"b":[1,2]}'
    assert json.loads(canonical_json(a)) == a
    numpy_values = {"n": np.int64(3), "f": np.float32(0.5), "arr": np.array([1, 2]), "t": (1, 2), "s": {4}}
    assert json.loads(canonical_json(numpy_values)) == {"n": 3, "f": 0.5, "arr": [1, 2], "t": [1, 2], "s": [4]}


def test_problem_ids_depend_on_content_only():
    reordered = [{"content": m["content"], "role": m["role"]} for m in PROMPT]
    assert Problem.make_id(PROMPT, "5") == Problem.make_id(reordered, "5")
    assert Problem.make_id(PROMPT, "5") != Problem.make_id(PROMPT, "6")
    assert Problem.make_id(PROMPT, "5") != Problem.make_id(PROMPT[1:], "5")
