"""Gold answers in the formats real datasets store them, read into the canonical gold a verifier
compares with: GSM8K's rationale ending in `#### N`, a MATH / NuminaMath solution with a
`\\boxed{}`, a bare LaTeX answer, or plain text."""

from __future__ import annotations

import re
from typing import Literal, get_args

from pipeline.verify.extraction import boxed_contents, decimal_text, undelimited

GoldFormat = Literal["auto", "plain", "gsm8k", "boxed_solution", "latex"]
GOLD_FORMATS = get_args(GoldFormat)

_GSM8K_ANSWER = re.compile(r"####[ \t]*(.*)")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CURRENCY = re.compile(r"^\\?\$(?=\d)")


class Rejected(Exception):
    """A row cannot be used; `reason` is a stable code, the message explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def canonical_gold(text: str, gold_format: str, verifier: str) -> str:
    """The gold a verifier compares with, read out of `text` as `gold_format` says; raises
    `Rejected` (`unusable_answer` when the format's answer is missing, `ambiguous_answer` when
    the text offers several different ones). `auto` reads a `#### N` line as GSM8K, a `\\boxed{}`
    as a solution, anything else as LaTeX, for math; a reasoning-gym gold is its scorer's, as is."""
    text = text.strip()
    asked = gold_format
    if gold_format == "auto":
        if verifier != "math":
            gold_format = "plain"
        elif _GSM8K_ANSWER.search(text):
            gold_format = "gsm8k"
        elif "\\boxed" in text:
            gold_format = "boxed_solution"
        else:
            gold_format = "latex"
    if gold_format == "plain":
        return _number(text)
    if gold_format == "latex":
        return _number(undelimited(text))
    if gold_format == "gsm8k":
        finals = [_number(_CURRENCY.sub("", m.group(1).strip().rstrip("."))) for m in _GSM8K_ANSWER.finditer(text)]
        return _one(finals, "'#### <answer>' line", _format_note(asked, gold_format))
    if gold_format == "boxed_solution":
        return _one([_number(undelimited(b)) for b in boxed_contents(text)], "\\boxed{<answer>}",
                    _format_note(asked, gold_format))
    raise ValueError(f"unknown gold_format {gold_format!r}; expected one of {', '.join(GOLD_FORMATS)}")


def _format_note(asked: str, used: str) -> str:
    return f"gold_format {asked}" + (f", read as {used}" if asked != used else "")


def _one(finals: list[str], what: str, note: str) -> str:
    """The one final answer a solution gives."""
    distinct = list(dict.fromkeys(finals))
    if not distinct or distinct == [""]:
        raise Rejected("unusable_answer", f"the gold answer has no {what} with an answer in it "
                                          f"({note}); set the source's gold_format to its format")
    if len(distinct) > 1:
        shown = ", ".join(repr(f[:40]) for f in distinct[:4])
        raise Rejected("ambiguous_answer", f"the gold answer gives {len(distinct)} different answers ({shown}) "
                                           f"as {what} ({note})")
    return distinct[0]


def _number(text: str) -> str:
    """A numeric gold as an exact plain decimal ("1e+16" → "10000000000000000", "1,250" → "1250");
    anything else unchanged."""
    text = decimal_text(text)
    if _THOUSANDS.fullmatch(text):
        return text.replace(",", "")
    return text
