import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline.core.model import ModelSpec
from pipeline.engines.base import Completion, GenerationRequest, SamplingConfig
from pipeline.rollouts.store import RolloutStore, missing_requests, read_rows

MODEL = ModelSpec("/nowhere", "org/model", "rev1")
PROMPT = [{"role": "user", "content": "q"}]


def problems(*ids):
    return pd.DataFrame({"problem_id": list(ids), "prompt": [PROMPT] * len(ids)})


def fill(store, reqs):
    store.append(reqs, [Completion(f"{r.problem_id}:{r.sample_index}", 3, "stop") for r in reqs])


def test_missing_requests_cover_only_gaps():
    reqs = missing_requests(problems("a", "b"), {"a": 3, "b": 1}, np.array([[True, False, True], [False] * 3]))
    assert [(r.problem_id, r.sample_index) for r in reqs] == [("a", 1), ("b", 0)]


def test_store_roundtrip_and_caps(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig(), engine="test")
    fill(store, missing_requests(problems("a", "b"), 4))
    assert store.existing() == {"a": {0, 1, 2, 3}, "b": {0, 1, 2, 3}}
    frame = store.load(["a", "b"], 2)
    assert list(zip(frame["problem_id"], frame["sample_index"])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert frame["text"].tolist()[0] == "a:0" and (frame["model_id"] == "org/model").all()
    assert len(store.load(["a"], {"a": 3})) == 3


def test_label_keys_are_separate_stores(tmp_path):
    a = RolloutStore(tmp_path, MODEL, SamplingConfig(temperature=0.8))
    b = RolloutStore(tmp_path, MODEL, SamplingConfig(temperature=1.0))
    c = RolloutStore(tmp_path, ModelSpec("/nowhere", "org/model", "rev2"), SamplingConfig(temperature=0.8))
    fill(a, [GenerationRequest.of("a", 0, PROMPT)])
    assert b.existing() == {} and c.existing() == {}
    assert len({a.root, b.root, c.root}) == 3


def test_duplicate_writes_resolve_to_first_and_compaction_keeps_rows(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    reqs = missing_requests(problems("a"), 2)
    fill(store, reqs)
    store.append(reqs, [Completion("second", 1, "stop")] * 2)
    assert store.load(["a"])["text"].tolist() == ["a:0", "a:1"]
    assert store.compact() == 2
    assert len(store.parts()) == 1
    assert store.load(["a"])["text"].tolist() == ["a:0", "a:1"]


def test_a_torn_temp_file_is_ignored(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    (store.root / ".part-x.parquet.123.tmp").write_bytes(b"PAR1 half written")
    fill(store, missing_requests(problems("a"), 1))
    assert store.existing() == {"a": {0}}


def test_sampling_key_and_request_seed_are_stable():
    s = SamplingConfig(temperature=0.7, max_tokens=64, seed=3)
    assert s.key == SamplingConfig(temperature=0.7, max_tokens=64, seed=3).key
    assert s.key != SamplingConfig(temperature=0.7, max_tokens=65, seed=3).key
    assert s.request_seed("p", 0) == s.request_seed("p", 0) != s.request_seed("p", 1)


def test_scan_streams_bounded_batches_first_write_wins_and_caps_per_problem(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    fill(store, missing_requests(problems("a", "b", "c"), 4))
    store.append([GenerationRequest.of("a", 1, PROMPT)], [Completion("late", 1, "stop")])
    batches = list(store.scan(["b", "a"], np.array([2, 3]), columns=["problem_id", "sample_index", "text"],
                              batch_rows=3))
    assert max(b.num_rows for b in batches) <= 3
    rows = sorted(r for b in batches for r in zip(b.column("position").to_pylist(), b.column("text").to_pylist()))
    assert rows == [(0, "b:0"), (0, "b:1"), (1, "a:0"), (1, "a:1"), (1, "a:2")]
    assert store.coverage(["a", "d"], 5).tolist() == [[True] * 4 + [False], [False] * 5]


def test_compaction_streams_into_bounded_parts_and_keeps_the_first_write(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    for pid in "abcde":
        fill(store, missing_requests(problems(pid), 2))
    store.append([GenerationRequest.of("a", 0, PROMPT)], [Completion("late", 1, "stop")])
    assert store.compact(max_rows=4) == 6
    assert len(store.parts()) == 3  # 11 rows in parts of at most 4
    assert store.load(["a"])["text"].tolist() == ["a:0", "a:1"]
    assert len(store.load(list("abcde"))) == 10


def test_locate_names_the_rows_scan_yields_and_read_rows_reads_them_back(tmp_path):
    store = RolloutStore(tmp_path, MODEL, SamplingConfig())
    for pid in "abcd":
        fill(store, missing_requests(problems(pid), 4))
    store.append([GenerationRequest.of("b", 2, PROMPT)], [Completion("late", 1, "stop")])
    store.compact(max_rows=12)  # parts of several row groups each: one per part merged
    fill(store, missing_requests(problems("e"), 3))
    ids, start, upto = ["d", "b", "e"], np.array([1, 2, 0]), np.array([4, 4, 2])
    expected = sorted((b.column("position").to_pylist()[i], b.column("text").to_pylist()[i])
                      for b in store.scan(ids, upto, start, columns=["text"]) for i in range(b.num_rows))
    spans = list(store.locate(ids, upto, start, max_rows=2))
    assert max(pq.ParquetFile(part).num_row_groups for part, _, _ in spans) > 1
    assert all(len(rows) <= 2 for _, rows, _ in spans) and len({part for part, _, _ in spans}) == 3
    got = sorted((int(p), t) for part, rows, positions in spans
                 for p, t in zip(positions, read_rows(part, rows, ["text"]).column("text").to_pylist()))
    assert got == expected == [(0, "d:1"), (0, "d:2"), (0, "d:3"), (1, "b:2"), (1, "b:3"), (2, "e:0"), (2, "e:1")]
