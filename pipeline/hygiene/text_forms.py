"""Text normalisations for duplicate and contamination checks, vectorised over Arrow string arrays.

Every form is defined on one whitespace-free token (`pipeline.hygiene.minhash.Tokens` splits texts once and
keeps each distinct token once, so a form runs over a vocabulary, not over every text); a rewritten
token may become several words, which callers split on whitespace. A text's form is the forms of its
tokens, words joined by single spaces.
- `canonical_form`: equality of problems (exact duplicates). Unicode NFKC, with super- and subscripts
  written out first (`2³` is `2^3`, not the `23` NFKC makes of it), words of two or more letters in
  lower case (single letters and LaTeX commands keep theirs: `A` and `a`, `\\Delta` and `\\delta` are
  different things), LaTeX spacing commands (`\\,`, `\\ `, `\\quad`, `~`) and `\\left`/`\\right`
  dropped, `\\dfrac`/`\\tfrac` read as `\\frac`, `^{2}` as `^2`, and every symbol a word of its own, so
  `\\frac {1}{ 2 }` and `\\frac{1}{2}` meet (and `x+1` is three words, as `x + 1` is, for word shingles).
- `folded_form`: `canonical_form` with every letter in lower case, for similarity (word shingles,
  contamination), where a letter's case is no more than any other changed word.
- `open_r1_form`: open-r1's `decontaminate.py` normalisation (lower case; words split on spaces).
- `datatrove_form`: datatrove-style n-gram text (NFKC, lower case, every number replaced by `0`,
  punctuation and symbols removed), which catches the same problem with changed numbers.

Arrow's compute kernels (RE2 regular expressions) keep a million problems out of Python objects.
"""

from __future__ import annotations

import re
import unicodedata

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


# A run of letters that starts a word and is not a LaTeX command's name.
_FOLDED_WORD = re.compile(r"(?<!\\)\b[^\W\d_]{2,}")


def canonical_form(tokens: pa.Array) -> pa.Array:
    """The form two copies of one problem share, whatever their spacing, LaTeX spacing or the case
    of their words."""
    t = pc.utf8_normalize(_rewritten(tokens, _SCRIPTS_PATTERN, _scripts_written_out), form="NFKC")
    t = _rewritten(t, r"[\p{Lu}\p{Lt}]", lambda token: _FOLDED_WORD.sub(lambda m: m.group().lower(), token))
    t = pc.replace_substring_regex(t, pattern=_LATEX_SPACING, replacement=" ")
    t = pc.replace_substring_regex(t, pattern=_LATEX_DELIMITER_SIZE, replacement="")
    t = pc.replace_substring_regex(t, pattern=r"\\[dt]frac\b", replacement=r"\\frac")
    t = pc.replace_substring_regex(t, pattern=_SINGLE_BRACED, replacement=r"\1\2")
    return pc.replace_substring_regex(t, pattern=_SYMBOL, replacement=r" \1 ")


def folded_form(tokens: pa.Array) -> pa.Array:
    """`canonical_form` in lower case throughout."""
    return pc.utf8_lower(canonical_form(tokens))


def _rewritten(tokens: pa.Array, pattern: str, rewrite) -> pa.Array:
    """`rewrite` applied to the tokens matching the RE2 `pattern`, in Python: few tokens of a
    vocabulary need it, and Arrow has no kernel for it."""
    hit = pc.fill_null(pc.match_substring_regex(tokens, pattern=pattern), False)
    if not pc.any(hit).as_py():
        return tokens
    return pc.replace_with_mask(tokens, hit, pa.array([rewrite(t) for t in tokens.filter(hit).to_pylist()],
                                                      tokens.type))


def _scripts() -> dict[str, tuple[str, str]]:
    """Each superscript or subscript character (by its compatibility decomposition, which NFKC
    applies) → (`^` or `_`, the plain text it stands for)."""
    table = {}
    for code in range(0x10000):
        kind, _, plain = unicodedata.decomposition(chr(code)).partition(" ")
        if kind in ("<super>", "<sub>"):
            table[chr(code)] = ("^" if kind == "<super>" else "_", "".join(chr(int(c, 16)) for c in plain.split()))
    return table


_SCRIPTS = _scripts()
_SCRIPTS_PATTERN = "[" + "".join(sorted(_SCRIPTS)) + "]"


def _scripts_written_out(token: str) -> str:
    """Runs of super- or subscripts as `^{…}` / `_{…}` (`x¹⁰` is `x^{10}`)."""
    out, run, mark = [], [], ""
    for char in token + " ":
        kind, plain = _SCRIPTS.get(char, ("", char))
        if run and kind != mark:
            out.append(f"{mark}{{{''.join(run)}}}")
            run = []
        if kind:
            run.append(plain)
            mark = kind
        else:
            out.append(char)
    return "".join(out)[:-1]


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
    are left out: one shared instruction would make every problem of a source look alike
    (`prompt_contexts` tells problems under different ones apart). Chunk by chunk of the prompt
    column, and without a copy where each prompt is one user message: a million-problem pool is not
    held twice."""
    chunks = [_user_texts(c) for c in _prompts(problems).chunks if len(c)]
    return pa.chunked_array(chunks, chunks[0].type) if chunks else pa.chunked_array([], pa.string())


def prompt_contexts(problems: pd.DataFrame | pa.Table) -> np.ndarray:
    """An id per problem for what the model sees besides the user's text: the system and assistant
    messages, verbatim, and where the user's turns fall. Two problems with the same user text are
    one problem only under the same id."""
    ids: dict[str, int] = {}
    out = []
    for lists in (c for c in _prompts(problems).chunks if len(c)):
        if _only_user_messages(lists):
            # The context the general path below gives a lone user message, so copies of one
            # problem get one id whichever chunk of the column they fall in.
            out.append(np.full(len(lists), ids.setdefault("user\x1f", len(ids)), np.int64))
            continue
        messages = lists.flatten()
        roles = messages.field("role")
        shown = pc.if_else(pc.equal(roles, "user"), "", pc.fill_null(messages.field("content"), ""))
        contexts = pc.fill_null(pc.binary_join(_grouped(lists, pc.binary_join_element_wise(roles, shown, "\x1f"),
                                                        None), "\x1e"), "")
        distinct = pc.unique(contexts)
        global_ids = np.array([ids.setdefault(c, len(ids)) for c in distinct.to_pylist()], np.int64)
        out.append(global_ids[pc.index_in(contexts, value_set=distinct).to_numpy(zero_copy_only=False)])
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _prompts(problems: pd.DataFrame | pa.Table) -> pa.ChunkedArray:
    table = problems if isinstance(problems, pa.Table) else pa.Table.from_pandas(
        problems[["prompt"]], preserve_index=False)
    return table.column("prompt")


def _only_user_messages(lists: pa.ListArray) -> bool:
    return (lists.null_count == 0 and pc.all(pc.equal(pc.list_value_length(lists), 1)).as_py()
            and pc.all(pc.equal(lists.flatten().field("role"), "user")).as_py())


def _grouped(lists: pa.ListArray, values: pa.Array, keep: np.ndarray | None) -> pa.ListArray:
    """`values`, one per message of `lists` (only those where `keep`), as one list per problem."""
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    if keep is not None:
        parents, values = parents[keep], values.filter(pa.array(keep))
    offsets = np.searchsorted(parents, np.arange(len(lists) + 1)).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _user_texts(lists: pa.ListArray) -> pa.Array:
    contents = lists.flatten().field("content")
    if _only_user_messages(lists):
        return pc.fill_null(contents, "") if contents.null_count else contents
    user = pc.equal(lists.flatten().field("role"), "user").to_numpy(zero_copy_only=False)
    return pc.fill_null(pc.binary_join(_grouped(lists, contents, user), "\n"), "")
