"""Pull the final answer out of a model completion.

Verifiers compare a short answer with the gold one: handing them a whole completion gives
reasoning-gym partial credit for substrings and makes math-verify parse every number on the way.
Completions can be megabytes of degenerate repetition, so every policy is linear in the input and
the scanning ones look only at the tail, where a final answer lives.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

ExtractionPolicy = Literal["auto", "answer_tag", "boxed", "last_number", "full"]
EXTRACTION_POLICIES = get_args(ExtractionPolicy)

# A final answer sits at the end; bounding the scanned tail bounds the work on runaway completions.
_BOXED_TAIL_CHARS = 16_000
_NUMBER_TAIL_CHARS = 4_000

_OPEN_TAG = "<answer>"
_CLOSE_TAG = "</answer>"

# Escaped braces are literal characters in LaTeX, so they are matched (and skipped) as one token.
_BRACE_TOKEN = re.compile(r"\\boxed\s*\{|\\[{}]|[{}]")

# A minus counts only when it cannot be a binary operator ("7-3" ends in 3, "= -1" in -1).
# Thousands groups must be followed by a non-digit so "1,2345" is not read as 1,234 then 5.
# Every branch is anchored on literal characters, so matching is linear (no nested quantifiers
# over the same characters).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])[-\u2212])?"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
    r"(?:\.\d+)?"
    r"(?:/\d+)?"
)
# Characters a number can contain; used to drop a number cut in half by the tail window.
_NUMBER_CHARS = frozenset("0123456789.,/-\u2212")


def extract_answer(completion: str, policy: str = "auto") -> str | None:
    """The final answer in `completion` under `policy`, or None when the policy finds none.

    `auto` tries an `<answer>` tag, then a `\\boxed{}`, then the last number: tags and boxes are
    explicit, but SmolLM2-135M rarely writes either ("The answer is 12."), so the last number is
    the fallback that gives a small model any signal at all.
    """
    if policy == "answer_tag":
        return _answer_tag(completion)
    if policy == "boxed":
        return _boxed(completion)
    if policy == "last_number":
        return _last_number(completion)
    if policy == "full":
        return completion.strip() or None
    if policy == "auto":
        for extract in (_answer_tag, _boxed, _last_number):
            answer = extract(completion)
            if answer is not None:
                return answer
        return None
    raise ValueError(f"unknown extraction policy {policy!r}; expected one of {', '.join(EXTRACTION_POLICIES)}")


def _answer_tag(text: str) -> str | None:
    """Content of the last closed `<answer>` tag; an empty tag counts as no answer."""
    end = text.rfind(_CLOSE_TAG)
    if end < 0:
        return None
    start = text.rfind(_OPEN_TAG, 0, end)
    if start < 0:
        return None
    return text[start + len(_OPEN_TAG) : end].strip() or None


def _boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` to close, with nested braces kept.

    One pass with a brace stack: re-scanning from each `\\boxed{` would be quadratic on inputs
    like a thousand unclosed boxes. The last box to close is the outermost one at the end, so
    `\\boxed{\\boxed{1}}` gives `\\boxed{1}`, which math-verify still reads.
    """
    tail = text[-_BOXED_TAIL_CHARS:]
    stack: list[int] = []  # content start for a box's brace, -1 for a plain brace
    found: tuple[int, int] | None = None
    for token in _BRACE_TOKEN.finditer(tail):
        lexeme = token.group()
        if lexeme.startswith("\\boxed"):
            stack.append(token.end())
        elif lexeme == "{":
            stack.append(-1)
        elif lexeme == "}" and stack:  # an unmatched "}" may close a group cut off by the window
            start = stack.pop()
            if start >= 0:
                found = (start, token.start())
    if found is None:
        return None
    return tail[found[0] : found[1]].strip() or None


def _last_number(text: str) -> str | None:
    """The last number, with thousands separators dropped ("1,234" gives "1234")."""
    tail = text[-_NUMBER_TAIL_CHARS:]
    if len(text) > len(tail) and text[-len(tail) - 1] in _NUMBER_CHARS:
        # The window starts mid-number; a fragment like "34" of "1234" is not an answer.
        skip = 0
        while skip < len(tail) and tail[skip] in _NUMBER_CHARS:
            skip += 1
        tail = tail[skip:]
    last = None
    for last in _NUMBER.finditer(tail):
        pass
    if last is None:
        return None
    return last.group().replace(",", "").replace("\u2212", "-")
