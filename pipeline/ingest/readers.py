"""Local dataset files read as records: Parquet / JSON / `save_to_disk` through `datasets`, JSONL and
CSV by gradus's own bounded readers, so one gigantic or undecodable row is quarantined instead of
ending the run (`Unreadable`)."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

MAX_RAW_CHARS = 2_000
"""Quarantined rows keep at most this much of the original row (gigantic rows stay readable)."""


@dataclass(frozen=True)
class Unreadable:
    """A record the reader could not decode into fields: quarantined with this reason."""

    reason: str
    detail: str
    text: str
    """The record as read (undecodable bytes escaped), for the quarantine's `raw` column."""


_DATASETS_KINDS = {".parquet": "parquet", ".json": "json"}


_CSV_FIELD_LIMIT = 1 << 28
"""csv's default 128 KiB field limit would make one gigantic prompt fatal to the whole file."""


def local_records(
    path: str, split: str, max_row_bytes: int
) -> Iterator[dict[str, Any] | Unreadable]:
    """The rows of a local dataset, in file order; never reaches the Hub. The path and file types
    are checked at once, the rows read lazily.

    JSONL and CSV are read row by row, values kept as the file wrote them: `datasets` would fail
    the whole file on one line of bad JSON or bad UTF-8, and its type inference rewrites values
    (a CSV column of integers with one empty cell becomes floats, gold "4" becomes "4.0").
    A row that cannot be decoded comes back as `Unreadable`; a file none of whose rows can is an
    error. Parquet, JSON and `save_to_disk` folders are typed formats, read with `datasets`.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist (gradus reads local data only)")
    if p.is_dir() and any((p / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
        return _datasets_records(p, None, split)
    readers = {".jsonl": partial(_jsonl_records, max_row_bytes=max_row_bytes),
               ".csv": partial(_csv_records, max_row_bytes=max_row_bytes)}
    suffixes = set(readers) | set(_DATASETS_KINDS)
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file() and x.suffix in suffixes)
    if not files:
        raise ValueError(f"no Parquet/JSONL/JSON/CSV files under {p}")
    kinds = {x.suffix for x in files}
    if len(kinds) > 1:
        raise ValueError(f"{p} mixes file types {sorted(kinds)}: point each dataset at one type")
    suffix = files[0].suffix
    if suffix in readers:
        return chain.from_iterable(_whole_file_check(readers[suffix](file), file) for file in files)
    if suffix in _DATASETS_KINDS:
        return _datasets_records(files, _DATASETS_KINDS[suffix], split)
    raise ValueError(f"unsupported file type {suffix!r}: use {sorted(suffixes)}")


def _datasets_records(source: Path | list[Path], kind: str | None, split: str) -> Iterator[dict[str, Any]]:
    import datasets

    try:
        if kind is None:
            loaded = datasets.load_from_disk(str(source))
            dataset = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            files = [str(x) for x in source] if isinstance(source, list) else [str(source)]
            dataset = datasets.load_dataset(kind, data_files=files, split="train")
    except Exception as exc:  # a typed file is all or nothing: say which file and why
        raise ValueError(f"cannot read {source} with `datasets`: {type(exc).__name__}: {exc}") from exc
    yield from dataset


def _whole_file_check(
    records: Iterator[dict[str, Any] | Unreadable], file: Path
) -> Iterator[dict[str, Any] | Unreadable]:
    """Pass records through; fail if there were some and none could be decoded (the file is not
    the format its name says, e.g. UTF-16 or compressed)."""
    decoded = 0
    first: Unreadable | None = None
    for record in records:
        if isinstance(record, Unreadable):
            first = first or record
        else:
            decoded += 1
        yield record
    if first is not None and not decoded:
        raise ValueError(
            f"no row of {file} could be decoded (first: {first.reason}, {first.detail}); "
            f"is it UTF-8 {file.suffix.lstrip('.').upper()}?"
        )


def _jsonl_records(file: Path, max_row_bytes: int) -> Iterator[dict[str, Any] | Unreadable]:
    """One JSON object per non-blank line. Invalid UTF-8 inside a string value survives as lone
    surrogates, which normalisation quarantines with the field's name. A line longer than
    `max_row_bytes` is skipped in chunks, never held whole or parsed."""
    with open(file, "rb") as fh:
        for number, line in enumerate(_bounded_lines(fh, max_row_bytes), start=1):
            if isinstance(line, Unreadable):
                yield Unreadable(line.reason, f"line {number}: {line.detail}", line.text)
                continue
            if number == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            if not line.strip():
                continue
            try:
                text, valid_utf8 = line.decode("utf-8"), True
            except UnicodeDecodeError:
                text, valid_utf8 = line.decode("utf-8", "surrogateescape"), False
            try:
                value = json.loads(text)
            except RecursionError:
                yield Unreadable("too_deeply_nested", f"line {number} nests deeper than the JSON parser allows",
                                 printable(text))
                continue
            except ValueError as exc:
                reason = "invalid_json" if valid_utf8 else "invalid_utf8_row"
                detail = f"line {number}: {exc}" + ("" if valid_utf8 else " (the line is not valid UTF-8)")
                yield Unreadable(reason, detail, printable(text))
                continue
            if not isinstance(value, dict):
                yield Unreadable("non_object_row", f"line {number} is a JSON {type(value).__name__}, not an object",
                                 printable(text))
                continue
            yield value


def _bounded_lines(fh: Any, max_len: int) -> Iterator[Any]:
    """The lines of a file opened in binary or text mode; a line longer than `max_len` (bytes or
    characters) comes back as an `Unreadable` holding its start, the rest skipped in chunks."""
    newline = b"\n" if "b" in getattr(fh, "mode", "b") else "\n"
    while line := fh.readline(max_len + 1):
        if len(line) <= max_len or line.endswith(newline):
            yield line
            continue
        size = len(line)
        while (rest := fh.readline(1 << 20)) and not rest.endswith(newline):
            size += len(rest)
        size += len(rest)
        head = line[:MAX_RAW_CHARS]
        text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
        yield Unreadable("row_too_long", f"the line is {size} long (> {max_len}); skipped unparsed", text + "…")


_TOO_LONG = "\x00gradus:row_too_long\x00"
"""Stands in for an overlong CSV line, so the csv module never parses (or holds) it."""


def _csv_records(file: Path, max_row_bytes: int) -> Iterator[dict[str, Any] | Unreadable]:
    """Rows of a CSV file with a header; every value is text, as in the file. A line longer than
    `max_row_bytes` characters is quarantined without being parsed."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    skipped: list[Unreadable] = []

    def lines() -> Iterator[str]:
        for line in _bounded_lines(fh, max_row_bytes):
            if isinstance(line, Unreadable):
                skipped.append(line)
                line = _TOO_LONG + "\n"
            yield line

    with open(file, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(lines())
        try:
            header = next(reader, None)
            if header is None:
                return
            if not all(is_utf8(h) and "\x00" not in h for h in header):
                raise ValueError(f"the header of {file} is not UTF-8 text: is it a UTF-8 CSV file?")
            for cells in reader:
                if not cells:  # a blank line; a row of empty fields is a row (and quarantined)
                    continue
                if any(_TOO_LONG in c for c in cells):
                    long = skipped.pop(0) if skipped else Unreadable("row_too_long", "", "")
                    yield Unreadable(long.reason, f"line {reader.line_num}: {long.detail}", long.text)
                    continue
                if len(cells) != len(header):
                    yield Unreadable(
                        "malformed_row",
                        f"line {reader.line_num} has {len(cells)} fields, the header has {len(header)}",
                        printable(",".join(cells)),
                    )
                    continue
                yield dict(zip(header, cells))
        except csv.Error as exc:
            raise ValueError(f"{file}, line {reader.line_num}: not readable as CSV ({exc})") from exc


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """Text that can be stored as UTF-8: undecodable bytes shown as `\\xNN`, other lone
    surrogates as `\\uNNNN`."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from an undecodable byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
