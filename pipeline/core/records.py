"""The record types that flow through gradus, one per stage, and their Arrow schemas.

Stages exchange columnar tables (pandas DataFrames / Arrow tables) so that a million-row pool stays
cheap; these dataclasses define the columns and are used where rows are built one at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def content_hash(*parts: str, length: int = 20) -> str:
    """A stable hex digest of text parts (unambiguous: parts are length-prefixed)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:length]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings (and hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays (`item` would refuse arrays)
        return value.tolist()
    return str(value)


class Record:
    """Base for stage records: a dataclass with an Arrow schema and frame conversion."""

    SCHEMA: ClassVar[pa.Schema]

    def as_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def to_table(cls, records: list[Any]) -> pa.Table:
        return pa.Table.from_pylist([r.as_row() for r in records], schema=cls.SCHEMA)

    @classmethod
    def to_frame(cls, records: list[Any]) -> pd.DataFrame:
        return cls.to_table(records).to_pandas()

    @classmethod
    def empty_frame(cls) -> pd.DataFrame:
        return cls.SCHEMA.empty_table().to_pandas()


@dataclass(frozen=True)
class Problem(Record):
    """One normalised problem, whatever its source."""

    problem_id: str
    """Stable content hash of the prompt and gold answer (independent of the source)."""
    source: str
    """Where it came from, e.g. `reasoning_gym/chain_sum` or `hf/my_dataset.parquet`."""
    prompt: list[dict[str, str]]
    """Chat messages (`role`, `content`), as the model will see them before its chat template."""
    answer: str
    """The gold answer as text."""
    verifier: str
    """Which verifier scores answers: `math` (math-verify) or `reasoning_gym` (the generator's scorer)."""
    category: str
    """A grouping for reports and grouped cross-validation, e.g. `chain_sum/level_1`."""
    metadata: str = "{}"
    """Source metadata as canonical JSON (for reasoning-gym: the generator's entry metadata)."""

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("problem_id", pa.string()),
            ("source", pa.string()),
            ("prompt", pa.list_(MESSAGE)),
            ("answer", pa.string()),
            ("verifier", pa.string()),
            ("category", pa.string()),
            ("metadata", pa.string()),
        ]
    )

    @staticmethod
    def make_id(prompt: list[dict[str, str]], answer: str) -> str:
        return content_hash(canonical_json(prompt), answer)


@dataclass(frozen=True)
class QuarantinedRow(Record):
    """An input row that could not be used, kept with the reason instead of being dropped."""

    source: str
    row_index: int
    reason: str
    """A short machine-readable reason code, e.g. `missing_answer`, `duplicate_problem_id`."""
    detail: str
    """A human-readable explanation."""
    raw: str
    """The original row, as JSON (truncated for gigantic rows)."""

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("source", pa.string()),
            ("row_index", pa.int64()),
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("raw", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Rollout(Record):
    """One sampled completion, keyed by (label key, problem_id, sample_index)."""

    problem_id: str
    sample_index: int
    text: str
    num_tokens: int
    finish_reason: str
    """`stop` (the model ended), `length` (hit max tokens) or `error`."""
    model_id: str
    revision: str
    sampling_key: str
    engine: str
    created_at: str = field(default="")

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("problem_id", pa.string()),
            ("sample_index", pa.int32()),
            ("text", pa.string()),
            ("num_tokens", pa.int32()),
            ("finish_reason", pa.string()),
            ("model_id", pa.string()),
            ("revision", pa.string()),
            ("sampling_key", pa.string()),
            ("engine", pa.string()),
            ("created_at", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Reward(Record):
    """The verdict on one rollout."""

    problem_id: str
    sample_index: int
    extracted: str | None
    score: float
    passed: bool
    status: str
    """`ok`, `no_answer`, `timeout`, `error` or `bad_gold`."""
    verifier: str
    verifier_version: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("problem_id", pa.string()),
            ("sample_index", pa.int32()),
            ("extracted", pa.string()),
            ("score", pa.float64()),
            ("passed", pa.bool_()),
            ("status", pa.string()),
            ("verifier", pa.string()),
            ("verifier_version", pa.string()),
        ]
    )


@dataclass(frozen=True)
class PassRate(Record):
    """A difficulty label: one problem's measured pass rate for one model, revision and sampling."""

    problem_id: str
    successes: int
    trials: int
    truncated: int | None
    """Rollouts cut at the token cap (`max_tokens`); None where the rollouts were not counted."""
    truncated_failures: int | None
    """Of those, the ones that failed: a problem whose failures are mostly these is bound by the
    cap, not by its difficulty."""
    pass_rate: float
    ci_low: float
    ci_high: float
    model_id: str
    revision: str
    sampling_key: str
    verifier_version: str
    label_key: str
    labelled_at: str

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("problem_id", pa.string()),
            ("successes", pa.int64()),
            ("trials", pa.int64()),
            ("truncated", pa.int64()),
            ("truncated_failures", pa.int64()),
            ("pass_rate", pa.float64()),
            ("ci_low", pa.float64()),
            ("ci_high", pa.float64()),
            ("model_id", pa.string()),
            ("revision", pa.string()),
            ("sampling_key", pa.string()),
            ("verifier_version", pa.string()),
            ("label_key", pa.string()),
            ("labelled_at", pa.string()),
        ]
    )
