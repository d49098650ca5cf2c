"""Problem sources and their normalisation into `Problem` rows, with bad rows quarantined.

Every source yields raw rows; `normalise` turns each into a `Problem` or a `QuarantinedRow` with a
reason, so one bad row never stops a run and nothing is silently dropped.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import Problem, QuarantinedRow, canonical_json
from pipeline.verification import VerificationTask, VerifierPool

MAX_RAW_CHARS = 2_000
"""Quarantined rows keep at most this much of the original row (gigantic rows stay readable)."""


@dataclass(frozen=True)
class ReasoningGymSource:
    """Problems from a `reasoning-gym` generator at several difficulty levels."""

    name: str
    """Generator name, e.g. `basic_arithmetic`, `chain_sum`, `leg_counting`."""
    levels: tuple[int, ...] = (0, 1, 2)
    """Curriculum levels (reasoning-gym's `set_global_level`); 0 is the easiest."""
    size_per_level: int = 8
    """Problems generated per level."""
    seed: int | None = None
    """Base seed. Default: derived from the generator name, because the same seed in two generators
    can yield identical numbers."""
    config: dict[str, Any] = field(default_factory=dict)
    """Extra generator config applied on top of each level's configuration."""

    @property
    def base_seed(self) -> int:
        return self.seed if self.seed is not None else zlib.crc32(self.name.encode()) % 1_000_000


@dataclass(frozen=True)
class FieldMapping:
    """Which columns of a tabular dataset hold what."""

    prompt: str = "problem"
    """Column with the question text, or with chat messages (a list of {role, content})."""
    answer: str = "answer"
    """Column with the gold answer."""
    category: str | None = None
    """Optional column used as the category (default: the source name)."""
    system_prompt: str | None = None
    """Optional system message prepended to text prompts."""


@dataclass(frozen=True)
class DatasetSource:
    """Problems from a Hugging Face `datasets` dataset on local disk: Parquet/JSONL/JSON/CSV files,
    or a folder written by `save_to_disk`. Nothing is downloaded."""

    path: str
    fields: FieldMapping = FieldMapping()
    verifier: str = "math"
    """`math` (math-verify) or `reasoning_gym` (needs `metadata.source_dataset` per row)."""
    split: str = "train"
    name: str | None = None
    """Source name in reports; default: the file or folder name."""
    limit: int | None = None


@dataclass
class Normalised:
    """The outcome of normalising a batch of rows."""

    problems: list[Problem] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)


# --- reading sources ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRow:
    """One input row before normalisation."""

    source: str
    index: int
    prompt: Any
    answer: Any
    category: Any
    metadata: Any
    verifier: str
    system_prompt: str | None = None


def reasoning_gym_rows(src: ReasoningGymSource) -> Iterator[RawRow]:
    import reasoning_gym
    from reasoning_gym.factory import create_curriculum

    index = 0
    for level in src.levels:
        curriculum = create_curriculum(src.name)
        curriculum.set_global_level(level)
        seed = src.base_seed + 1000 * level
        cfg = curriculum.generate_configuration({"seed": seed, "size": src.size_per_level})
        options = {k: v for k, v in vars(cfg).items() if k not in {"seed", "size"}}
        options.update(src.config)
        dataset = reasoning_gym.create_dataset(src.name, seed=seed, size=src.size_per_level, **options)
        for entry in dataset:
            meta = dict(entry["metadata"])
            meta["level"] = level
            yield RawRow(
                source=f"reasoning_gym/{src.name}",
                index=index,
                prompt=entry["question"],
                answer=entry["answer"],
                category=f"{src.name}/level_{level}",
                metadata=meta,
                verifier="reasoning_gym",
            )
            index += 1


def dataset_rows(src: DatasetSource) -> Iterator[RawRow]:
    dataset = load_local_dataset(src.path, src.split)
    name = src.name or Path(src.path).name
    f = src.fields
    for index, row in enumerate(dataset):
        if src.limit is not None and index >= src.limit:
            break
        yield RawRow(
            source=f"dataset/{name}",
            index=index,
            prompt=row.get(f.prompt, _MISSING),
            answer=row.get(f.answer, _MISSING),
            category=row.get(f.category) if f.category else name,
            metadata={k: v for k, v in row.items() if k not in {f.prompt, f.answer}},
            verifier=src.verifier,
            system_prompt=f.system_prompt,
        )


def load_local_dataset(path: str, split: str = "train"):
    """Open a local dataset with `datasets`, by file type; never reaches the Hub."""
    import datasets

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist (gradus reads local data only)")
    if p.is_dir() and any((p / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        loaded = datasets.load_from_disk(str(p))
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    kinds = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.suffix in kinds)
    if not files:
        raise ValueError(f"no Parquet/JSONL/JSON/CSV files under {p}")
    kind = kinds.get(files[0].suffix)
    if kind is None:
        raise ValueError(f"unsupported file type {files[0].suffix!r}: use {sorted(kinds)}")
    return datasets.load_dataset(kind, data_files=[str(x) for x in files], split="train")


# --- normalisation ------------------------------------------------------------------------------

_MISSING = object()


class Rejected(Exception):
    """A row cannot be used; `reason` is a stable code, the message explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _text(value: Any, what: str) -> str:
    if value is _MISSING or value is None:
        raise Rejected(f"missing_{what}", f"the {what} field is missing or null")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise Rejected(f"nonfinite_{what}", f"the {what} is {value}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Rejected(f"non_text_{what}", f"the {what} is a {type(value).__name__}, not text")
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(f"invalid_utf8_{what}", f"the {what} contains unpaired surrogates") from None
    if "\x00" in text:
        raise Rejected(f"control_chars_{what}", f"the {what} contains NUL characters")
    if not text.strip():
        raise Rejected(f"empty_{what}", f"the {what} is empty or whitespace")
    return text


def _messages(value: Any, system_prompt: str | None) -> list[dict[str, str]]:
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        if not items:
            raise Rejected("empty_prompt", "the prompt has no messages")
        messages = []
        for m in items:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise Rejected("malformed_messages", "chat messages must be {role, content} objects")
            if m["role"] not in {"system", "user", "assistant"}:
                raise Rejected("malformed_messages", f"unknown chat role {m['role']!r}")
            messages.append({"role": m["role"], "content": _text(m["content"], "prompt")})
        if messages[-1]["role"] != "user":
            raise Rejected("malformed_messages", "the last message must be the user's")
        return messages
    messages = [{"role": "user", "content": _text(value, "prompt")}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _raw_json(row: RawRow) -> str:
    text = canonical_json({"prompt": row.prompt if row.prompt is not _MISSING else None,
                           "answer": row.answer if row.answer is not _MISSING else None,
                           "category": row.category})
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…[truncated]"


def normalise(
    rows: Iterable[RawRow],
    *,
    max_prompt_chars: int = 8_000,
    pool: VerifierPool | None = None,
    seen: dict[str, str] | None = None,
) -> Normalised:
    """Turn raw rows into problems; quarantine every row that cannot be used, with a reason.

    Gold answers are checked in `pool` (isolated workers: a pathological answer cannot hang
    ingest); without a pool they are not checked. `seen` maps problem_id → origin of problems
    already accepted, so a duplicate is caught across sources.
    """
    out = Normalised()
    seen = {} if seen is None else seen
    candidates: list[tuple[RawRow, Problem]] = []
    for row in rows:
        try:
            prompt = _messages(row.prompt, row.system_prompt)
            size = sum(len(m["content"]) for m in prompt)
            if size > max_prompt_chars:
                raise Rejected("prompt_too_long", f"the prompt has {size} characters (> {max_prompt_chars})")
            answer = _text(row.answer, "answer").strip()
            metadata = canonical_json(row.metadata if isinstance(row.metadata, dict) else {})
            category = row.category if isinstance(row.category, str) and row.category else row.source
            pid = Problem.make_id(prompt, answer)
            candidates.append((row, Problem(pid, row.source, prompt, answer, row.verifier, category, metadata)))
        except Rejected as rej:
            out.quarantined.append(QuarantinedRow(row.source, row.index, rej.reason, str(rej), _raw_json(row)))

    gold = [None] * len(candidates)
    if pool is not None and candidates:
        gold = pool.gold_problems([VerificationTask(p.verifier, p.answer, None, p.metadata) for _, p in candidates])
    for (row, problem), gold_issue in zip(candidates, gold):
        reject: Rejected | None = None
        if gold_issue:
            reject = Rejected("unusable_answer", gold_issue)
        elif problem.problem_id in seen:
            reject = Rejected("duplicate_problem_id", f"same prompt and answer as {seen[problem.problem_id]}")
        if reject is not None:
            out.quarantined.append(QuarantinedRow(row.source, row.index, reject.reason, str(reject), _raw_json(row)))
            continue
        seen[problem.problem_id] = f"{row.source}#{row.index}"
        out.problems.append(problem)
    return out


def load_problems(
    reasoning_gym: Sequence[ReasoningGymSource] = (),
    datasets: Sequence[DatasetSource] = (),
    *,
    max_prompt_chars: int = 8_000,
    pool: VerifierPool | None = None,
) -> Normalised:
    """Read every configured source and normalise all rows into one pool."""
    seen: dict[str, str] = {}
    total = Normalised()
    rows: list[Iterable[RawRow]] = [reasoning_gym_rows(rg) for rg in reasoning_gym]
    rows += [dataset_rows(ds) for ds in datasets]
    for part_rows in rows:
        part = normalise(part_rows, max_prompt_chars=max_prompt_chars, pool=pool, seen=seen)
        total.problems += part.problems
        total.quarantined += part.quarantined
    return total
