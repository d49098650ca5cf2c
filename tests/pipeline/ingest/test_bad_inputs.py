"""The bad-input corpus in tests/data: every bad row is quarantined with its own reason, good rows
beside them are accepted verbatim, and files that cannot be read at all fail with a clear error.

Each corpus row declares what should happen to it: JSONL lines carry an `expected_reason` field
(written first, so even a line that is not JSON states it; `null` means accepted), CSV rows an
`expected_reason` column (empty means accepted). The loader sees the field as ordinary metadata.
"""

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.core.model import load_tokenizer, special_token_strings
from pipeline.core.records import QuarantinedRow
from pipeline.core.storage import write_parquet_atomic
from pipeline.ingest import sources
from pipeline.ingest.readers import MAX_RAW_CHARS
from pipeline.ingest.sources import DatasetSource, RawRow, ReasoningGymSource, load_problems, normalise

DATA = Path(__file__).resolve().parents[2] / "data"
_DECLARED = re.compile(rb"expected_reason\W+(\w+)")

CORPUS = (
    DatasetSource(str(DATA / "bad_rows.jsonl"), id_field="id"),
    DatasetSource(str(DATA / "bad_bytes.jsonl")),
    DatasetSource(str(DATA / "bad_rows.csv"), prompt_field="question"),
)
"""The corpus files as sources, with the field mapping each needs."""


def expected_reasons(path: Path) -> list[str | None]:
    """The declared outcome of each row of a corpus file, in row order (None: accepted)."""
    data = path.read_bytes()
    if path.suffix == ".csv":
        # Latin-1 decodes any byte, and the CSV structure (commas, quotes, newlines) is ASCII.
        csv.field_size_limit(len(data))  # the corpus has a field beyond csv's default limit
        rows = list(csv.reader(io.StringIO(data.decode("latin-1"), newline="")))[1:]
        return [row[0] or None for row in rows if row]
    declared = [_DECLARED.search(line) for line in data.splitlines() if line.strip()]
    assert all(declared), f"a line of {path.name} does not declare its expected_reason"
    return [None if m.group(1) == b"null" else m.group(1).decode() for m in declared]


def corpus_source_name(src: DatasetSource) -> str:
    return f"dataset/{Path(src.path).name}"


@pytest.fixture(scope="module")
def loaded(verifier_pool, smollm2):
    tokens = special_token_strings(load_tokenizer(smollm2))
    return load_problems(datasets=CORPUS, pool=verifier_pool, special_tokens=tokens)


def test_corpus_is_broad():
    reasons = [r for src in CORPUS for r in expected_reasons(Path(src.path)) if r]
    assert len(set(reasons)) >= 25
    # Each bad JSONL row names its kind in a `note`; several kinds share a reason code.
    notes = {m.group(1) for file in ("bad_rows.jsonl", "bad_bytes.jsonl")
             for line in (DATA / file).read_bytes().splitlines()
             if b'"expected_reason": null' not in line and (m := re.search(rb'"note": "([^"]+)"', line))}
    assert len(notes) >= 30


@pytest.mark.parametrize("src", CORPUS, ids=lambda s: Path(s.path).name)
def test_every_bad_row_is_quarantined_with_its_reason(loaded, src):
    expected = expected_reasons(Path(src.path))
    name = corpus_source_name(src)
    got = {q.row_index: q.reason for q in loaded.quarantined if q.source == name}
    assert got == {i: r for i, r in enumerate(expected) if r}
    assert Counter(got.values()) == Counter(r for r in expected if r)
    accepted = [p for p in loaded.problems if p.source == name]
    assert len(accepted) == expected.count(None)
    assert all(q.detail for q in loaded.quarantined)


def test_good_rows_are_accepted_verbatim(loaded):
    """Prompt-injection text, SQL and shell syntax are data, kept as written."""
    by_id = {json.loads(p.metadata)["id"]: p for p in loaded.problems if p.source == "dataset/bad_rows.jsonl"}
    good = [json.loads(line) for line in (DATA / "bad_rows.jsonl").read_text().splitlines()
            if line.startswith('{"expected_reason": null')]
    assert len(good) == len(by_id)
    for row in good:
        problem = by_id[row["id"]]
        prompt = row["problem"]
        assert problem.prompt == (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])
        assert problem.answer == str(row["answer"]).strip()
    injected = by_id["g2"].prompt[0]["content"]
    assert injected.startswith("Ignore all previous instructions")


def test_csv_values_stay_as_written(loaded):
    """Read by `datasets`, a CSV answer column with an empty cell turns "2" into "2.0"."""
    answers = sorted(p.answer for p in loaded.problems if p.source == "dataset/bad_rows.csv")
    assert answers == ["2", "4", "6"]
    assert any("\n" in p.prompt[0]["content"] for p in loaded.problems if p.source == "dataset/bad_rows.csv")


def test_quarantine_is_storable_and_bounded(loaded, tmp_path):
    """Undecodable bytes are escaped (Parquet needs UTF-8) and gigantic rows truncated."""
    path = tmp_path / "quarantined.parquet"
    write_parquet_atomic(QuarantinedRow.to_table(loaded.quarantined), path)
    table = pq.read_table(path).to_pandas()
    assert len(table) == len(loaded.quarantined)
    assert table["raw"].str.len().max() <= MAX_RAW_CHARS + len("…[truncated]")
    latin1 = table[(table["source"] == "dataset/bad_bytes.jsonl") & (table["raw"].str.contains("Combien"))]
    assert len(latin1) == 1 and r"\xd7" in latin1["raw"].iloc[0]


@pytest.mark.parametrize("name", ["undecodable_utf16.jsonl", "undecodable_utf16.csv"])
def test_undecodable_file_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"UTF-8") as info:
        load_problems(datasets=[DatasetSource(str(DATA / name))])
    assert name in str(info.value)


def test_missing_path_fails_before_any_row_is_read(tmp_path, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("rows were read before every dataset path was checked")

    monkeypatch.setattr(sources, "normalise", must_not_run)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_problems(reasoning_gym=[ReasoningGymSource("chain_sum", levels=(0,), size_per_level=1)],
                      datasets=[CORPUS[0], DatasetSource(str(missing))])


def test_folder_mixing_file_types_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"problem": "What is 1 + 1?", "answer": "2"}\n')
    (tmp_path / "b.csv").write_text("problem,answer\nWhat is 2 + 2?,4\n")
    with pytest.raises(ValueError, match="mixes file types"):
        load_problems(datasets=[DatasetSource(str(tmp_path))])


def with_id(prompt, answer, source_id, index):
    return RawRow("ids", index, prompt, answer, "c", {}, "math", source_id=source_id)


def test_the_first_usable_row_keeps_a_source_id():
    out = normalise([
        with_id("", "1", "a", 0),  # unusable: does not claim "a"
        with_id("What is 1 + 1?", "2", "a", 1),
        with_id("What is 1 + 2?", "3", "a", 2),  # "a" reused for another problem
        with_id("What is 1 + 1?", "2", "a", 3),  # the same problem again
        with_id("What is 1 + 3?", "4", "b", 4),
    ])
    assert [q.reason for q in out.quarantined] == ["empty_prompt", "duplicate_source_id", "duplicate_problem_id"]
    assert [q.row_index for q in out.quarantined] == [0, 2, 3]
    assert [p.answer for p in out.problems] == ["2", "4"]


def test_source_ids_are_scoped_per_source():
    out = normalise([with_id("What is 1 + 1?", "2", 7, 0),
                     RawRow("other", 0, "What is 2 + 2?", "4", "c", {}, "math", source_id=7)])
    assert out.quarantined == [] and len(out.problems) == 2
