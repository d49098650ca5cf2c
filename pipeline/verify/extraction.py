"""Pull the final answer out of a model completion.

Verifiers compare a short answer with the gold one: handing them a whole completion gives
reasoning-gym partial credit for substrings and makes math-verify parse every number on the way.
Completions can be megabytes of degenerate repetition, so every policy is linear in the input and
the scanning ones look only at the tail, where a final answer lives.

The two verifiers want different things. A reasoning-gym scorer compares text, so it gets the bare
answer (a box's content, the last number). math-verify reads math, and reads bare text with an
expression extractor that keeps a single number (`3\\sqrt{13}` is 3 to it, `(5, 3)` is 3), so the
math side keeps the markup: the `\\boxed{}` itself, the `$…$` span after "The answer is", a bare
LaTeX answer wrapped in `$…$`; and it never cuts a number out of LaTeX (`\\frac{10}{9}` is not 9).
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from typing import Literal, get_args

ExtractionPolicy = Literal["auto", "answer_tag", "boxed", "last_number", "full"]
EXTRACTION_POLICIES = get_args(ExtractionPolicy)

# A final answer sits at the end; bounding the scanned tail bounds the work on runaway completions.
_BOXED_TAIL_CHARS = 16_000
_NUMBER_TAIL_CHARS = 4_000
# How far after "The answer is" its answer may run.
_REGION_CHARS = 1_000

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

# The phrases a reader takes as "here comes the answer" (GSM8K's `####`, Minerva's "Final Answer:",
# "The answer is"); the last one in the text is the conclusion.
_MARKER = re.compile(
    r"####|\bfinal\s+answer\b(?:\s+is\b)?\s*:?|\banswer\s*(?:is\b\s*:?|:)", re.IGNORECASE
)
# Math delimiters, escaped dollars (literal text), and line breaks (an inline `$…$` never spans one).
_DELIMITER = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\n")
_CLOSER = {"$$": "$$", "\\[": "\\]", "\\(": "\\)"}
_SENTENCE_END = re.compile(r"[.!?;](?=\s|$)|\n")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_CURRENCY = re.compile(r"\\?\$(?=\d)")
_SCIENTIFIC = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def extract_answer(completion: str, policy: str = "auto", *, verifier: str) -> str | None:
    """The final answer in `completion` under `policy`, or None when the policy finds none.

    `auto` tries an `<answer>` tag, then a `\\boxed{}`, then (math) the last answer phrase
    ("The answer is", "####", "Final Answer:"), then the last number: tags and boxes are explicit,
    but SmolLM2-135M rarely writes either ("The answer is 12."), so the last number is the fallback
    that gives a small model any signal at all. For `math` the answer keeps its markup (see the
    module docstring); for `reasoning_gym` it is the bare text its scorer compares.
    """
    if policy not in EXTRACTION_POLICIES:
        raise ValueError(f"unknown extraction policy {policy!r}; expected one of {', '.join(EXTRACTION_POLICIES)}")
    if policy == "full":
        return completion.strip() or None
    for extract in (_MATH_STEPS if verifier == "math" else _TEXT_STEPS)[policy]:
        answer = extract(completion)
        if answer is not None:
            return answer
    return None


def as_math(text: str) -> str:
    """`text` as math-verify should read it: as it is when it carries math delimiters, a box or a
    plain number; wrapped in `$…$` when it is a bare expression (`\\frac{\\pi}{2}`, `(2, 3)`), which
    math-verify would otherwise read as one number; a scientific literal as its exact decimal
    (math-verify reads "1e16" as 1). Prose ("18 apples") stays as it is."""
    text = decimal_text(text.strip())
    if "$" in text or "\\(" in text or "\\[" in text or "\\boxed" in text or _NUMBER.fullmatch(text):
        return text
    return f"${text}$" if _bare_math(text) else text


def exact_decimal(literal: str | float) -> str:
    """A number as an exact decimal, never in scientific notation: 1e16 → "10000000000000000",
    2.5e-05 → "0.000025" (a float is written as its shortest round-trip decimal first)."""
    text = repr(literal) if isinstance(literal, float) else literal.strip()
    value = format(Decimal(text), "f")
    return value.removeprefix("+")


def decimal_text(text: str) -> str:
    """A scientific literal ("1e+16") as its exact decimal; any other text unchanged."""
    return exact_decimal(text) if _SCIENTIFIC.fullmatch(text) else text


def undelimited(text: str) -> str:
    """`text` without the one pair of math delimiters around all of it (`$…$`, `\\[…\\]`, …), if it has them."""
    text = text.strip()
    if _math_spans(text) == [(0, len(text))]:
        width = 2 if text[:2] in ("$$", "\\[", "\\(") else 1
        return text[width:-width].strip()
    return text


def ascii_digits(text: str) -> str:
    """Decimal digits of any script as ASCII digits: a model writing `４２` or `٤٢` means 42, as
    reasoning-gym's scorers (which call int/float) already take it."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if not c.isascii() and unicodedata.category(c) == "Nd" else c
                   for c in text)


def boxed_contents(text: str) -> list[str]:
    """The content of every outermost `\\boxed{...}` in `text`, in order (nested boxes belong to
    theirs), for reading golds out of whole solutions."""
    return [text[start:end].strip() for start, end, depth in _boxes(text) if depth == 0]


def _bare_math(text: str) -> bool:
    """Whether `text` is a formula without delimiters: no word of prose outside LaTeX commands."""
    return bool(text) and not _WORD.search(_COMMAND.sub(" ", text))


def answer_tag_content(text: str) -> str | None:
    """Content of the last closed `<answer>` tag; an empty tag counts as no answer."""
    end = text.rfind(_CLOSE_TAG)
    if end < 0:
        return None
    start = text.rfind(_OPEN_TAG, 0, end)
    if start < 0:
        return None
    return text[start + len(_OPEN_TAG) : end].strip() or None


def _math_tag(text: str) -> str | None:
    tagged = answer_tag_content(text)
    return None if tagged is None else as_math(tagged)


def _boxes(text: str) -> list[tuple[int, int, int]]:
    """(content start, content end, boxes around it) of every closed `\\boxed{...}`, in closing
    order. One pass with a brace stack: re-scanning from each `\\boxed{` would be quadratic on
    inputs like a thousand unclosed boxes."""
    stack: list[int] = []  # content start for a box's brace, -1 for a plain brace
    found: list[tuple[int, int, int]] = []
    for token in _BRACE_TOKEN.finditer(text):
        lexeme = token.group()
        if lexeme.startswith("\\boxed"):
            stack.append(token.end())
        elif lexeme == "{":
            stack.append(-1)
        elif lexeme == "}" and stack:  # an unmatched "}" may close a group cut off by the window
            start = stack.pop()
            if start >= 0:
                found.append((start, token.start(), sum(1 for s in stack if s >= 0)))
    return found


def _last_box(text: str) -> str | None:
    """Content of the last `\\boxed{...}` to close, with nested braces kept. The last box to close
    is the outermost one at the end, so `\\boxed{\\boxed{1}}` gives `\\boxed{1}`, which math-verify
    still reads."""
    tail = text[-_BOXED_TAIL_CHARS:]
    boxes = _boxes(tail) if "\\boxed" in tail else None
    if not boxes:
        return None
    start, end, _ = boxes[-1]
    return tail[start:end].strip() or None


def _math_boxed(text: str) -> str | None:
    content = _last_box(text)
    return None if content is None else f"\\boxed{{{content}}}"


def _math_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each math span (`$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]`), delimiters included, in
    one linear pass. An inline `$` opens only before a non-space and closes only after one and not
    before a digit (pandoc's rule), so "costs $5 and $7" holds no math."""
    spans: list[tuple[int, int]] = []
    opened: tuple[str, int] | None = None
    for token in _DELIMITER.finditer(text):
        lexeme, at = token.group(), token.start()
        if lexeme == "\\$":
            continue
        if opened is not None:
            kind, start = opened
            if kind == "$":
                if lexeme == "\n":
                    opened = None
                    continue
                if lexeme == "$" and not text[at - 1].isspace() and not text[at + 1 : at + 2].isdigit():
                    spans.append((start, token.end()))
                    opened = None
                    continue
                if lexeme != "$":
                    continue  # a `$` left open reopens below; other delimiters inside are text
            elif lexeme == _CLOSER[kind]:
                spans.append((start, token.end()))
                opened = None
                continue
            else:
                continue
        if lexeme in _CLOSER:
            opened = (lexeme, at)
        elif lexeme == "$" and text[token.end() : token.end() + 1].strip():
            opened = ("$", at)
    return spans


def _marked(text: str) -> str | None:
    """The answer after the last answer phrase: the math span it opens with, else its sentence
    (a number, a bare formula in `$…$`, or the words as written)."""
    tail = text[-_BOXED_TAIL_CHARS:]
    if "####" not in tail and "answer" not in tail.lower():
        return None
    last = None
    for last in _MARKER.finditer(tail):
        pass
    if last is None:
        return None
    region = tail[last.end() : last.end() + _REGION_CHARS].lstrip()
    end = _SENTENCE_END.search(region)
    stop = end.start() if end else len(region)
    spans = _math_spans(region)
    if spans and spans[0][0] < stop:
        start, finish = spans[0]
        return region[start:finish]
    sentence = _CURRENCY.sub("", region[:stop]).strip().rstrip(",:")
    if not sentence:
        return None
    if (number := _NUMBER.match(sentence)) and (number.end() == len(sentence) or not _bare_math(sentence)):
        return _plain(number.group())
    return as_math(sentence)


def _math_fallback(text: str) -> str | None:
    """Without a box, tag or answer phrase: the last number, unless math markup comes after it;
    then the last math span, or the last line's bare LaTeX wrapped as math."""
    tail = text[-_NUMBER_TAIL_CHARS:]
    spans = _math_spans(tail)
    commands = list(_COMMAND.finditer(tail))
    if not spans and not commands:
        return _last_number(text)
    span_end = spans[-1][1] if spans else -1
    line_end = -1
    if commands and commands[-1].start() > span_end:
        newline = tail.find("\n", commands[-1].end())
        line_end = len(tail) if newline < 0 else newline
    markup_end = max(span_end, line_end)
    after = tail[markup_end:]
    if _NUMBER.search(after):
        return _last_number(after)
    if span_end > line_end:
        return tail[spans[-1][0] : span_end]
    line = tail[tail.rfind("\n", 0, commands[-1].start()) + 1 : line_end]
    # The formula is what follows the line's last "=" or last word of prose.
    prose = _WORD.finditer(_COMMAND.sub(lambda m: " " * len(m.group()), line))
    cut = max(line.rfind("=") + 1, max((w.end() for w in prose), default=0))
    formula = line[cut:].strip().rstrip(".,;")
    return f"${formula}$" if _bare_math(formula) else line.strip()


def _plain(number: str) -> str:
    return number.replace(",", "").replace("\u2212", "-")


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
    return _plain(last.group())


_TEXT_STEPS = {"answer_tag": (answer_tag_content,), "boxed": (_last_box,), "last_number": (_last_number,),
               "auto": (answer_tag_content, _last_box, _last_number)}
_MATH_STEPS = {"answer_tag": (_math_tag,), "boxed": (_math_boxed,), "last_number": (_last_number,),
               "auto": (_math_tag, _math_boxed, _marked, _math_fallback)}
"""What each policy tries, in order, per kind of verifier (`full` is the whole text for both)."""
