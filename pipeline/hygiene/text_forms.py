"""Text normalisations for duplicate and contamination checks, vectorised over Arrow string arrays.

Every form is defined on one whitespace-free token (`pipeline.hygiene.minhash.Tokens` splits texts once and
keeps each distinct token once, so a form runs over a vocabulary, not over every text); a rewritten
token may become several words, which callers split on whitespace. A text's form is the forms of its
tokens, words joined by single spaces.
- `canonical_form`: equality of problems (exact duplicates). Unicode NFKC, lower case, LaTeX spacing
  commands (`\\,`, `\\ `, `\\quad`, `~`) and `\\left`/`\\right` dropped, `\\dfrac`/`\\tfrac` read as
  `\\frac`, `^{2}` as `^2`, and every symbol a word of its own, so `\\frac {1}{ 2 }` and `\\frac{1}{2}`
  meet (and `x+1` is three words, as `x + 1` is, for word shingles).
- `open_r1_form`: open-r1's `decontaminate.py` normalisation (lower case; words split on spaces).
- `datatrove_form`: datatrove-style n-gram text (NFKC, lower case, every number replaced by `0`,
  punctuation and symbols removed), which catches the same problem with changed numbers.

Arrow's compute kernels (RE2 regular expressions) keep a million problems out of Python objects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.hygiene.minhash import Tokens

NUMBER = r"\d+(?:[.,]\d+)*"
"""A number as written: digits with optional decimal or thousands parts (`3`, `3.25`, `1,000`)."""
# A backslash before whitespace (or at the end of a token, which whitespace follows) is LaTeX's
# control space.
_LATEX_SPACING = r"\\(?:[,;:!]|quad\b|qquad\b|\s|$)|~"
_LATEX_DELIMITER_SIZE = r"\\(?:left|right|big|Big|bigg|Bigg)\b"
_SINGLE_BRACED = r"([\^_])\{([\p{L}\p{N}])\}"
_SYMBOL = r"([^\p{L}\p{N}_\s])"
_PUNCTUATION = r"[\p{P}\p{S}]+"


def canonical_form(tokens: pa.Array) -> pa.Array:
    """The form two copies of one problem share, whatever their case, spacing or LaTeX spacing."""
    t = pc.utf8_lower(pc.utf8_normalize(tokens, form="NFKC"))
    t = pc.replace_substring_regex(t, pattern=_LATEX_SPACING, replacement=" ")
    t = pc.replace_substring_regex(t, pattern=_LATEX_DELIMITER_SIZE, replacement="")
    t = pc.replace_substring_regex(t, pattern=r"\\[dt]frac\b", replacement=r"\\frac")
    t = pc.replace_substring_regex(t, pattern=_SINGLE_BRACED, replacement=r"\1\2")
    return pc.replace_substring_regex(t, pattern=_SYMBOL, replacement=r" \1 ")


def canonical(texts: pa.Array) -> pa.Array:
    """Each text in canonical form: its tokens' canonical words joined by single spaces."""
    return Tokens.of(texts).words(canonical_form).texts()


def open_r1_form(tokens: pa.Array) -> pa.Array:
    """open-r1's `normalize_string`: lower case (with whitespace collapsed, words are the tokens)."""
    return pc.utf8_lower(tokens)


def datatrove_form(tokens: pa.Array) -> pa.Array:
    """Lower case, every number `0`, punctuation and symbols gone: n-grams that survive a change
    of numbers (numbers first, so `3.25` is one number, not two)."""
    t = pc.utf8_lower(pc.utf8_normalize(tokens, form="NFKC"))
    t = pc.replace_substring_regex(t, pattern=NUMBER, replacement="0")
    return pc.replace_substring_regex(t, pattern=_PUNCTUATION, replacement=" ")


def number_shape(tokens: pa.Array) -> pa.Array:
    """Each token with its numbers replaced by `0`: the template a token belongs to."""
    return pc.replace_substring_regex(tokens, pattern=NUMBER, replacement="0")


def problem_texts(problems: pd.DataFrame | pa.Table) -> pa.ChunkedArray:
    """What a reader sees as each problem: its user messages joined by newlines. System prompts
    are left out: one shared instruction would make every problem of a source look alike. Chunk by
    chunk of the prompt column, and without a copy where each prompt is one user message: a
    million-problem pool is not held twice."""
    table = problems if isinstance(problems, pa.Table) else pa.Table.from_pandas(
        problems[["prompt"]], preserve_index=False)
    chunks = [_user_texts(c) for c in table.column("prompt").chunks if len(c)]
    return pa.chunked_array(chunks, chunks[0].type) if chunks else pa.chunked_array([], pa.string())


def _user_texts(lists: pa.ListArray) -> pa.Array:
    messages = lists.flatten()
    contents = messages.field("content")
    user = pc.equal(messages.field("role"), "user").to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(lists)
    if user.all() and lists.null_count == 0 and pc.all(pc.equal(lengths, 1)).as_py():
        return pc.fill_null(contents, "") if contents.null_count else contents
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    offsets = np.searchsorted(parents[user], np.arange(len(lists) + 1)).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), contents.filter(pa.array(user))), "\n")
    return pc.fill_null(joined, "")
