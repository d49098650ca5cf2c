"""Problem sources and their normalisation into `Problem` rows, with bad rows quarantined.

Every source yields raw rows; `normalise` turns each into a `Problem` or a `QuarantinedRow` with a
reason, so one bad row never stops a run and nothing is silently dropped.

Reason codes (stable; tests/data holds a row for each):
- per field (`prompt`, `answer`, `source_id`): `missing_*`, `empty_*` (blank or invisible),
  `non_text_*` (a prompt must be a string: a JSON number is not a question), `nonfinite_*`
  (NaN/inf, also as text), `invalid_utf8_*`, `control_chars_*`;
- per row: `prompt_too_long`, `malformed_messages`, `ambiguous_answer`, `unusable_answer`,
  `invalid_utf8_metadata`, `too_deeply_nested`, `duplicate_problem_id`, `duplicate_source_id`,
  `special_token_in_text` (the prompt or gold answer holds a special token of the target model's
  tokenizer, which would open a real chat turn after the chat template);
- from the JSONL / CSV readers: `invalid_json`, `invalid_utf8_row`, `non_object_row`,
  `malformed_row`, `row_too_long` (skipped unparsed, so a gigantic row costs no memory).

A source none of whose rows is usable, or a configured field that no row of a dataset has, is an
error rather than a run that ends green with nothing in it.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pipeline.core.records import Problem, QuarantinedRow, canonical_json
from pipeline.ingest.golds import GOLD_FORMATS, GoldFormat, Rejected, canonical_gold
from pipeline.ingest.readers import MAX_RAW_CHARS, Unreadable, is_utf8, local_records, printable
from pipeline.verify.extraction import exact_decimal
from pipeline.verify.verification import VerificationTask, VerifierPool

SPECIAL_TOKEN_POLICIES = ("quarantine", "escape")
InstructionPosition = Literal["suffix", "prefix"]
INSTRUCTION_POSITIONS = get_args(InstructionPosition)
ESCAPE = "\u200b"
"""Escaping a special token inserts this zero-width space after its first character: the text reads
the same, but the tokenizer no longer matches the token."""


@dataclass(frozen=True)
class ReasoningGymSource:
    """Problems from a `reasoning-gym` generator at several difficulty levels."""

    name: str = field(metadata={"help": "reasoning-gym generator name, e.g. chain_sum"})
    levels: tuple[int, ...] = field(default=(0, 1, 2), metadata={
        "help": "curriculum levels (reasoning-gym's set_global_level); 0 is the easiest"})
    size_per_level: int = field(default=8, metadata={"help": "problems generated per level"})
    seed: int | None = field(default=None, metadata={
        "help": "base seed; empty: derived from the generator name (the same seed in two generators "
        "can yield identical numbers)"})
    config: dict[str, Any] = field(default_factory=dict)
    """Extra generator config applied on top of each level's configuration."""

    @property
    def base_seed(self) -> int:
        return self.seed if self.seed is not None else zlib.crc32(self.name.encode()) % 1_000_000

    @property
    def source(self) -> str:
        """The source name its rows carry."""
        return f"reasoning_gym/{self.name}"


@dataclass(frozen=True)
class DatasetSource:
    """Problems from local files: JSONL and CSV read row by row (one undecodable row is quarantined,
    not fatal), Parquet/JSON files and `save_to_disk` folders through `datasets`. Nothing is
    downloaded."""

    path: str = field(metadata={"help": "local file or folder; nothing is downloaded"})
    prompt_field: str = field(default="problem", metadata={
        "help": "column with the question text, or with chat messages (a list of {role, content})"})
    answer_field: str = field(default="answer", metadata={"help": "column with the gold answer"})
    gold_format: GoldFormat = field(default="auto", metadata={
        "help": "how the answer column holds the gold: plain (as written), gsm8k (a rationale ending in "
        "'#### N'), boxed_solution (a MATH/NuminaMath solution with a \\boxed{}), latex (a bare LaTeX answer, "
        "one pair of $...$ around it dropped); auto: gsm8k when a '####' line is there, boxed_solution when a "
        "\\boxed{} is, else latex (for the math verifier; reasoning_gym golds stay as written). The canonical "
        "gold is stored, the column as written kept in the row's metadata"})
    instruction: str | None = field(default=None, metadata={
        "help": "text added to every prompt's last user message, e.g. 'Let's think step by step and output the "
        "final answer after \"####\".' It is part of the problem (another instruction, another problem_id "
        "and other labels), and staged rows carry the prompt with it, exactly as labelled"})
    instruction_position: InstructionPosition = field(default="suffix", metadata={
        "help": "suffix (after the question) or prefix (before it); joined by one space unless the instruction "
        "starts (suffix) or ends (prefix) with whitespace of its own"})
    category_field: str | None = field(default=None, metadata={
        "help": "column used as the category; empty: the source name"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message prepended to text prompts"})
    id_field: str | None = field(default=None, metadata={
        "help": "column with the source's own ids; every row needs one, and an id reused for a different "
        "problem is quarantined (duplicate_source_id): the first usable row keeps it"})
    verifier: str = field(default="math", metadata={
        "help": "math (math-verify) or reasoning_gym (needs metadata.source_dataset per row)"})
    split: str = field(default="train", metadata={"help": "split of a save_to_disk DatasetDict"})
    name: str | None = field(default=None, metadata={"help": "source name in reports; empty: the file or folder name"})
    limit: int | None = field(default=None, metadata={"help": "read at most this many rows"})
    special_tokens: str = field(default="quarantine", metadata={
        "help": "a prompt or gold answer holding a special token of the target model's tokenizer: quarantine "
        "the row (special_token_in_text), or escape the token (a zero-width space after its first character, "
        "so it stays visible text and opens no chat turn)"})
    max_row_bytes: int = field(default=8 << 20, metadata={
        "help": "JSONL / CSV lines longer than this are quarantined (row_too_long) without being parsed"})

    @property
    def display_name(self) -> str:
        return self.name or Path(self.path).name

    @property
    def source(self) -> str:
        """The source name its rows carry."""
        return f"dataset/{self.display_name}"

    def __post_init__(self) -> None:
        if self.special_tokens not in SPECIAL_TOKEN_POLICIES:
            raise ValueError(f"special_tokens must be one of {SPECIAL_TOKEN_POLICIES}, got {self.special_tokens!r}")
        if self.max_row_bytes < 1:
            raise ValueError(f"max_row_bytes must be >= 1, got {self.max_row_bytes}")
        if self.gold_format not in GOLD_FORMATS:
            raise ValueError(f"gold_format must be one of {GOLD_FORMATS}, got {self.gold_format!r}")
        if self.instruction_position not in INSTRUCTION_POSITIONS:
            raise ValueError(f"instruction_position must be one of {INSTRUCTION_POSITIONS}, "
                             f"got {self.instruction_position!r}")
        if self.instruction is not None and not self.instruction.strip():
            raise ValueError("instruction is blank: leave it unset for none")


DEFAULT_GENERATORS = tuple(
    ReasoningGymSource(name, (0,), 12) for name in ("products", "chain_sum", "basic_arithmetic")
)
"""The embedded default, chosen by measuring SmolLM2-135M-Instruct (8 rollouts, T = 0.8, last number):
of eight generators' easiest levels only these three give pass rates spread over (0, 1) (means 0.39,
0.27, 0.22; problems up to 7/8); aiw, count_bits, gcd, letter_counting and number_sequence
average under 0.1, and every harder level is mostly never solved, so they would
fill the `unsolved` class rather than the stages."""


@dataclass(frozen=True)
class ProblemsSpec:
    """Which problems to label: the default is three reasoning-gym generators at their easiest level."""

    generators: tuple[ReasoningGymSource, ...] = field(default=DEFAULT_GENERATORS, metadata={
        "help": "reasoning-gym generators"})
    datasets: tuple[DatasetSource, ...] = field(default=(), metadata={"help": "local datasets"})
    max_prompt_chars: int = field(default=8_000, metadata={"help": "longer prompts are quarantined"})

    def load(self, pool: VerifierPool | None = None, special_tokens: Collection[str] = ()) -> Normalised:
        """Every configured source, normalised into one pool (`load_problems`)."""
        return load_problems(self.generators, self.datasets, max_prompt_chars=self.max_prompt_chars, pool=pool,
                             special_tokens=special_tokens)


@dataclass
class Normalised:
    """The outcome of normalising a batch of rows."""

    problems: list[Problem] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)


# --- reading sources ---------------------------------------------------------------------------


_MISSING = object()
"""A field the row does not have (or has as null)."""


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
    source_id: Any = None
    """The source's own id (`_MISSING` when absent or null); None when the source has no ids."""
    unreadable: Unreadable | None = None
    """Set when the reader could not decode the row; every other field is then empty."""
    gold_format: str = "auto"
    answer_field: str = "answer"
    """The column the answer came from: its text is kept there in the metadata when the gold was read out of it."""
    instruction: str | None = None
    instruction_position: str = "suffix"


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
                source=src.source,
                index=index,
                prompt=entry["question"],
                answer=entry["answer"],
                category=f"{src.name}/level_{level}",
                metadata=meta,
                verifier="reasoning_gym",
            )
            index += 1


def dataset_rows(src: DatasetSource) -> Iterator[RawRow]:
    """The rows of a local dataset. Its path is checked now, so a bad path fails a run before any
    work; rows are read as the iterator is consumed."""
    records = local_records(src.path, src.split, src.max_row_bytes)
    name, source = src.display_name, src.source
    configured = {"prompt_field": src.prompt_field, "answer_field": src.answer_field,
                  "category_field": src.category_field, "id_field": src.id_field}
    configured = {k: v for k, v in configured.items() if v}

    def rows() -> Iterator[RawRow]:
        columns: set[str] = set()
        for index, record in enumerate(records):
            if src.limit is not None and index >= src.limit:
                break
            if isinstance(record, Unreadable):
                yield RawRow(source, index, _MISSING, _MISSING, None, {}, src.verifier, unreadable=record)
                continue
            columns.update(record)
            source_id = None
            if src.id_field:
                source_id = record.get(src.id_field)
                source_id = _MISSING if source_id is None else source_id
            yield RawRow(
                source=source,
                index=index,
                prompt=record.get(src.prompt_field, _MISSING),
                answer=record.get(src.answer_field, _MISSING),
                category=record.get(src.category_field) if src.category_field else name,
                metadata={k: v for k, v in record.items() if k not in {src.prompt_field, src.answer_field}},
                verifier=src.verifier,
                system_prompt=src.system_prompt,
                source_id=source_id,
                gold_format=src.gold_format,
                answer_field=src.answer_field,
                instruction=src.instruction,
                instruction_position=src.instruction_position,
            )
        absent = {k: v for k, v in configured.items() if v not in columns}
        if columns and absent:
            shown = sorted(columns)[:50]
            raise ValueError(
                f"{source}: " + ", ".join(f"{k} {v!r}" for k, v in absent.items())
                + f" is in no row of {src.path}; its rows have the columns {shown}"
                + (f" (and {len(columns) - 50} more)" if len(columns) > 50 else "")
                + ": fix the field mapping"
            )

    return rows()


# --- normalisation ------------------------------------------------------------------------------

# C0 controls and DEL, except tab, newline and carriage return: in a prompt they are encoding
# damage (a JSON "\frac" written with one backslash arrives as a form feed and "rac").
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Anything but whitespace and invisible format characters (zero-width spaces, BOM, soft hyphen).
_VISIBLE = re.compile(r"[^\s\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
# A math gold answer offering alternatives: math-verify would silently keep only the last one.
_ALTERNATIVES = re.compile(r"\b(?:or|either)\b", re.IGNORECASE)
_FLOAT_TEXT_CHARS = 32
"""Longer strings are not tried as float literals ("nan", "inf", "1e999")."""


def _text(value: Any, what: str, numbers: bool = True) -> str:
    """`value` as text; `numbers` accepts JSON numbers (a gold answer 4), else only strings."""
    if value is _MISSING or value is None:
        raise Rejected(f"missing_{what}", f"the {what} field is missing or null")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise Rejected(f"nonfinite_{what}", f"the {what} is {value}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float) if numbers else str):
        raise Rejected(f"non_text_{what}", f"the {what} is a {type(value).__name__}, not text")
    # A JSON/Parquet float is written as its exact decimal: math-verify reads "1e+16" as 1.
    text = value if isinstance(value, str) else exact_decimal(value) if isinstance(value, float) else str(value)
    if not is_utf8(text):
        raise Rejected(f"invalid_utf8_{what}", f"the {what} contains unpaired surrogates (bytes that are not UTF-8)")
    if control := _CONTROL.search(text):
        raise Rejected(f"control_chars_{what}", f"the {what} contains control character U+{ord(control.group()):04X}")
    if not _VISIBLE.search(text):
        raise Rejected(f"empty_{what}", f"the {what} is empty, whitespace or invisible characters")
    if len(text) <= _FLOAT_TEXT_CHARS and _nonfinite_literal(text):
        raise Rejected(f"nonfinite_{what}", f"the {what} is the non-finite number {text.strip()!r}")
    return text


def _nonfinite_literal(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _messages(value: Any, system_prompt: str | None) -> list[dict[str, str]]:
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        if not items:
            raise Rejected("empty_prompt", "the prompt has no messages")
        messages = []
        for m in items:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise Rejected("malformed_messages", "chat messages must be {role, content} objects")
            if not isinstance(m["role"], str) or m["role"] not in {"system", "user", "assistant"}:
                raise Rejected("malformed_messages", f"unknown chat role {m['role']!r}")
            messages.append({"role": m["role"], "content": _text(m["content"], "prompt", numbers=False)})
        if messages[-1]["role"] != "user":
            raise Rejected("malformed_messages", "the last message must be the user's")
        return messages
    messages = [{"role": "user", "content": _text(value, "prompt", numbers=False)}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _with_instruction(prompt: list[dict[str, str]], instruction: str | None, position: str) -> list[dict[str, str]]:
    """The prompt with `instruction` joined to its last user message."""
    if instruction is None:
        return prompt
    last = max(i for i, m in enumerate(prompt) if m["role"] == "user")
    question = prompt[last]["content"]
    if position == "prefix":
        content = instruction + ("" if instruction[-1].isspace() else " ") + question
    else:
        content = question + ("" if instruction[0].isspace() else " ") + instruction
    return [*prompt[:last], {**prompt[last], "content": content}, *prompt[last + 1 :]]


def _raw_json(row: RawRow) -> str:
    if row.unreadable is not None:
        text = row.unreadable.text
    else:
        fields = {"prompt": row.prompt, "answer": row.answer, "category": row.category}
        if row.source_id is not None:
            fields["id"] = row.source_id
        try:
            text = canonical_json({k: None if v is _MISSING else v for k, v in fields.items()})
        except RecursionError:
            text = "(nested too deeply to show)"
    text = printable(text)
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS] + "…[truncated]"


def _quarantine(row: RawRow, rejected: Rejected) -> QuarantinedRow:
    return QuarantinedRow(row.source, row.index, rejected.reason, printable(str(rejected)), _raw_json(row))


@dataclass(frozen=True)
class SpecialTokenGuard:
    """Finds the target tokenizer's special-token strings in problem text, and quarantines or
    escapes them."""

    tokens: Collection[str] = ()
    """`model.special_token_strings(tokenizer)`; empty checks nothing."""
    escape: bool = False
    """Escape each token (`ESCAPE` after its first character) instead of quarantining the row."""
    pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Longest first, so `<|im_start|>` is not reported as a shorter token it contains.
        ordered = sorted(set(self.tokens), key=len, reverse=True)
        object.__setattr__(self, "pattern", re.compile("|".join(map(re.escape, ordered))) if ordered else None)

    def apply(self, text: str, what: str) -> str:
        pattern = self.pattern
        if pattern is None or not (found := pattern.search(text)):
            return text
        if self.escape:
            return pattern.sub(lambda m: m.group()[0] + ESCAPE + m.group()[1:], text)
        raise Rejected("special_token_in_text", f"the {what} contains the model's special token {found.group()!r}, "
                                                "which would open a real chat turn (a source may set "
                                                "special_tokens: escape)")


def _candidate(row: RawRow, max_prompt_chars: int, guard: SpecialTokenGuard) -> tuple[Problem, str | None]:
    """The row as a problem, and its source id if it has one; raises `Rejected`."""
    if row.unreadable is not None:
        raise Rejected(row.unreadable.reason, row.unreadable.detail)
    prompt = [{**m, "content": guard.apply(m["content"], f"{m['role']} message")}
              for m in _with_instruction(_messages(row.prompt, row.system_prompt), row.instruction,
                                         row.instruction_position)]
    size = sum(len(m["content"]) for m in prompt)
    if size > max_prompt_chars:
        raise Rejected("prompt_too_long", f"the prompt has {size} characters (> {max_prompt_chars})")
    written = guard.apply(_text(row.answer, "answer").strip(), "gold answer")
    answer = canonical_gold(written, row.gold_format, row.verifier)
    if row.verifier == "math" and _ALTERNATIVES.search(answer):
        raise Rejected("ambiguous_answer", f"the gold answer {answer[:80]!r} offers alternatives; "
                                           "math-verify would keep only the last")
    source_id = None if row.source_id is None else _text(row.source_id, "source_id").strip()
    meta = row.metadata if isinstance(row.metadata, dict) else {}
    if answer != written:  # the gold was read out of a solution: the solution stays with the problem
        meta = {row.answer_field: written, **meta}
    try:
        metadata = canonical_json(meta)
    except RecursionError:
        raise Rejected("too_deeply_nested", "the row's other fields nest too deeply to store") from None
    category = row.category if isinstance(row.category, str) and row.category else row.source
    if not (is_utf8(metadata) and is_utf8(category)):
        raise Rejected("invalid_utf8_metadata", "a field other than prompt and answer is not valid UTF-8")
    pid = Problem.make_id(prompt, answer)
    return Problem(pid, row.source, prompt, answer, row.verifier, category, metadata), source_id


def normalise(
    rows: Iterable[RawRow],
    *,
    max_prompt_chars: int = ProblemsSpec.max_prompt_chars,
    pool: VerifierPool | None = None,
    seen: dict[str, str] | None = None,
    special_tokens: SpecialTokenGuard = SpecialTokenGuard(),
) -> Normalised:
    """Turn raw rows into problems; quarantine every row that cannot be used, with a reason.

    Gold answers are checked in `pool` (isolated workers: a pathological answer cannot hang
    ingest); without a pool they are not checked. `seen` maps problem_id → origin of problems
    already accepted, so a duplicate is caught across sources. `special_tokens` finds the target
    tokenizer's special tokens in prompts (system messages included) and gold answers.
    """
    out = Normalised()
    seen = {} if seen is None else seen
    candidates: list[tuple[RawRow, Problem, str | None]] = []
    for row in rows:
        try:
            candidates.append((row, *_candidate(row, max_prompt_chars, special_tokens)))
        except Rejected as rej:
            out.quarantined.append(_quarantine(row, rej))

    gold = [None] * len(candidates)
    if pool is not None and candidates:
        gold = pool.gold_problems([VerificationTask(p.verifier, p.answer, None, p.metadata) for _, p, _ in candidates])
    id_owner: dict[tuple[str, str], str] = {}  # (source, source id) → origin of the accepted row
    for (row, problem, source_id), gold_issue in zip(candidates, gold):
        reject: Rejected | None = None
        id_key = (row.source, source_id) if source_id is not None else None
        if gold_issue:
            reject = Rejected("unusable_answer", f"{gold_issue}: {problem.answer[:80]!r} (read as gold_format "
                                                 f"{row.gold_format}; set the source's gold_format if that is not its format)")
        elif problem.problem_id in seen:
            reject = Rejected("duplicate_problem_id", f"same prompt and answer as {seen[problem.problem_id]}")
        elif id_key in id_owner:
            reject = Rejected("duplicate_source_id", f"id {source_id!r} already belongs to {id_owner[id_key]}, "
                                                     "a different problem")
        if reject is not None:
            out.quarantined.append(_quarantine(row, reject))
            continue
        seen[problem.problem_id] = f"{row.source}#{row.index}"
        if id_key is not None:
            id_owner[id_key] = seen[problem.problem_id]
        out.problems.append(problem)
    return out


def load_problems(
    reasoning_gym: Sequence[ReasoningGymSource] = (),
    datasets: Sequence[DatasetSource] = (),
    *,
    max_prompt_chars: int = ProblemsSpec.max_prompt_chars,
    pool: VerifierPool | None = None,
    special_tokens: Collection[str] = (),
) -> Normalised:
    """Read every configured source and normalise all rows into one pool.

    `special_tokens` are the target tokenizer's special-token strings
    (`model.special_token_strings`): text holding one is quarantined, or escaped where a dataset
    source says so. A source with no rows, or with rows none of which is usable, is an error naming
    it (and the reasons).
    """
    seen: dict[str, str] = {}
    total = Normalised()
    parts: list[tuple[str, Iterable[RawRow], bool]] = [
        (f"{rg.source}: levels {list(rg.levels)} x {rg.size_per_level}", reasoning_gym_rows(rg), False)
        for rg in reasoning_gym]
    parts += [(f"{ds.source}: {ds.path}", dataset_rows(ds), ds.special_tokens == "escape") for ds in datasets]
    for where, part_rows, escape in parts:
        guard = SpecialTokenGuard(tuple(special_tokens), escape)
        part = normalise(part_rows, max_prompt_chars=max_prompt_chars, pool=pool, seen=seen, special_tokens=guard)
        if not (part.problems or part.quarantined):
            raise ValueError(f"{where} yielded no rows: an empty file, or a limit, split or level list that "
                             "selects nothing. Fix the source or remove it from the problems config")
        if part.quarantined and not part.problems:
            reasons = Counter(q.reason for q in part.quarantined)
            first = part.quarantined[0]
            raise ValueError(
                f"{first.source}: none of its {len(part.quarantined)} rows is usable ("
                + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
                + f"); first: row {first.row_index}, {first.detail}. Check the source's field mapping and data"
            )
        total.problems += part.problems
        total.quarantined += part.quarantined
    return total
