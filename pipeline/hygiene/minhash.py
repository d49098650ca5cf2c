"""Word n-gram hashes, MinHash signatures and LSH banding, vectorised with numpy.

Texts are split into words by Arrow; every distinct word is hashed once from its UTF-8 bytes (a
polynomial hash computed over the byte buffer, no Python loop); an n-gram's hash combines its
words' hashes with a position weight each. All hashes are stable across processes and machines
(no Python `hash`), so indexes built in one run match texts checked in another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_RNG = np.random.default_rng(0x6772616475)  # fixed: hashes must be the same in every process
_BYTE_BASE = np.uint64(0x100000001B3)
_MAX_NGRAM = 64
_POSITION = _RNG.integers(1, 2**63, size=_MAX_NGRAM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole word."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


_UNICODE_SPACE = r"[\p{Z}\x{85}\x{1c}-\x{1f}]"
"""Whitespace beyond ASCII's (no-break and typographic spaces, line and paragraph separators)."""


def split_words(texts: pa.Array) -> pa.ListArray:
    """Each text's whitespace-separated words (empty strings where whitespace repeats or ends a
    text). Not `utf8_split_whitespace`: in pyarrow 26 it sometimes keeps a word's trailing space
    (`"3 . "` gives `"."` or `". "` from one call to the next), so copies of one problem hashed
    apart at random. Other whitespace is made an ASCII space first, whose split is exact."""
    if not pc.all(pc.string_is_ascii(texts)).as_py():
        texts = pc.replace_substring_regex(texts, pattern=_UNICODE_SPACE, replacement=" ")
    return pc.ascii_split_whitespace(texts)


def string_hashes(strings: pa.Array) -> np.ndarray:
    """A stable 64-bit hash of each string's UTF-8 bytes."""
    strings = strings.cast(pa.large_string()) if strings.type != pa.large_string() else strings
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], np.int64)[strings.offset: strings.offset + n + 1]
    data = np.frombuffer(strings.buffers()[2], np.uint8) if strings.buffers()[2] else np.zeros(0, np.uint8)
    data = data[offsets[0]: offsets[-1]]
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(n), lengths)
    position = np.arange(data.size) - (offsets[:-1] - offsets[0])[owner]
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, _BYTE_BASE, np.uint64)) if n else np.zeros(1, np.uint64)
    terms = (data.astype(np.uint64) + np.uint64(1)) * powers[position]
    sums = np.zeros(n, np.uint64)
    nonempty = lengths > 0
    if data.size:
        sums[nonempty] = np.add.reduceat(terms, (offsets[:-1] - offsets[0])[nonempty])
    return mix(sums + lengths.astype(np.uint64))


@dataclass(frozen=True)
class Tokens:
    """The whitespace-separated tokens of many texts, each distinct token stored once (`vocab`), so
    that normalisations run over the vocabulary rather than over every text: a million problems
    repeat most of their tokens. `ids[i]` is a token of text `doc[i]` (non-decreasing)."""

    ids: np.ndarray
    doc: np.ndarray
    n_docs: int
    vocab: pa.Array

    @classmethod
    def of(cls, texts: pa.Array) -> Tokens:
        texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
        lists = split_words(texts)
        flat = lists.flatten()
        doc = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        keep = pc.greater(pc.utf8_length(flat), 0)
        encoded = pc.dictionary_encode(flat.filter(keep))
        ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        return cls(ids, doc[keep.to_numpy(zero_copy_only=False)], len(texts), encoded.dictionary)

    def words(self, form: Callable[[pa.Array], pa.Array] | None = None) -> Words:
        """The words of every text once `form` has rewritten each token; a rewritten token may be
        several words (`x+1` -> `x + 1`) or none."""
        lists = split_words(form(self.vocab) if form else self.vocab)
        flat = lists.flatten()
        nonempty = pc.greater(pc.utf8_length(flat), 0)
        parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        mask = nonempty.to_numpy(zero_copy_only=False)
        per_token = np.bincount(parent[mask], minlength=len(self.vocab))
        words = flat.filter(nonempty)
        first = np.r_[0, np.cumsum(per_token)[:-1]].astype(np.int64)
        if (per_token == 1).all():
            ids, doc = first[self.ids], self.doc
        else:
            count = per_token[self.ids]
            doc = np.repeat(self.doc, count)
            ids = np.repeat(first[self.ids] - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        return Words(string_hashes(words)[ids], doc, self.n_docs, ids, words)


@dataclass(frozen=True)
class Words:
    """The words of many texts, flattened: `hashes[i]` belongs to text `doc[i]` (non-decreasing) and
    is the hash of `vocab[ids[i]]`."""

    hashes: np.ndarray
    doc: np.ndarray
    n_docs: int
    ids: np.ndarray
    vocab: pa.Array

    @classmethod
    def of(cls, texts: pa.Array) -> Words:
        return Tokens.of(texts).words()

    def rehashed(self, form: Callable[[pa.Array], pa.Array]) -> Words:
        """The same positions with each word rewritten by `form`, which keeps it one word (such as
        its number shape)."""
        return Words(string_hashes(form(self.vocab))[self.ids], self.doc, self.n_docs, self.ids, self.vocab)

    def sequence_keys(self) -> np.ndarray:
        """(n_docs, 2) uint64: a 128-bit hash of each text's word sequence. Texts share a key exactly
        when they have the same words in the same order (collisions aside: about 2^-128 a pair),
        which is equality of their joined texts without building them."""
        counts = np.bincount(self.doc, minlength=self.n_docs)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        position = (np.arange(self.doc.size) - starts[self.doc]).astype(np.uint64)
        keys = np.zeros((self.n_docs, 2), np.uint64)
        nonempty = counts > 0
        for column, salt in enumerate((_POSITION[0], _POSITION[1])):
            terms = mix(self.hashes ^ mix(position * salt + np.uint64(column + 1)))
            if terms.size:
                keys[nonempty, column] = np.add.reduceat(terms, starts[nonempty])
            keys[:, column] = mix(keys[:, column] + counts.astype(np.uint64) * salt)
        return keys

    def texts(self) -> pa.Array:
        """Each text's words joined by single spaces."""
        offsets = np.r_[0, np.cumsum(np.bincount(self.doc, minlength=self.n_docs))]
        lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), self.vocab.take(pa.array(self.ids)))
        return pc.binary_join(lists, pa.scalar(" ", self.vocab.type)).cast(pa.string())


@dataclass(frozen=True)
class Ngrams:
    """Word n-gram hashes and the text each came from (`doc` non-decreasing)."""

    hashes: np.ndarray
    doc: np.ndarray
    n_docs: int


def _weighted_sums(h: np.ndarray, n: int, count: int, block: int = 1 << 17) -> np.ndarray:
    """`sum(h[i + k] * _POSITION[k] for k < n)` for each start `i < count`, a cache-sized block at a
    time (n passes over the whole array would each go to memory)."""
    acc = np.zeros(count, np.uint64)
    term = np.empty(min(block, count), np.uint64)
    for lo in range(0, count, block):
        hi = min(lo + block, count)
        part, t = acc[lo:hi], term[: hi - lo]
        for k in range(n):
            np.multiply(h[lo + k: hi + k], _POSITION[k], out=t)
            np.add(part, t, out=part)
    return acc


def ngrams(words: Words, n: int, *, short_texts: bool = False) -> Ngrams:
    """Every run of `n` consecutive words of one text, hashed. A text with fewer than `n` words has
    no n-gram (open-r1's rule), or, with `short_texts`, one made of all its words (MinHash needs
    every text to have a shingle)."""
    if not 1 <= n <= _MAX_NGRAM:
        raise ValueError(f"n-gram size {n} is outside 1..{_MAX_NGRAM}")
    h, doc = words.hashes, words.doc
    count = max(h.size - n + 1, 0)
    acc = _weighted_sums(h, n, count)
    valid = doc[:count] == doc[n - 1: n - 1 + count]
    hashes, docs = mix(acc[valid]), doc[:count][valid]
    if short_texts:
        lengths = np.bincount(doc, minlength=words.n_docs)
        short = np.flatnonzero((lengths > 0) & (lengths < n))
        if short.size:
            starts = np.searchsorted(doc, short)
            acc_short = np.zeros(short.size, np.uint64)
            for k in range(n - 1):
                inside = lengths[short] > k
                acc_short[inside] += h[starts[inside] + k] * _POSITION[k]
            hashes = np.concatenate([hashes, mix(acc_short)])
            docs = np.concatenate([docs, short])
            order = np.argsort(docs, kind="stable")
            hashes, docs = hashes[order], docs[order]
    return Ngrams(hashes, docs, words.n_docs)


@dataclass(frozen=True)
class MinHasher:
    """MinHash over word shingles, with LSH banding: `bands` × `rows` = `num_perm` hashes."""

    num_perm: int = 64
    bands: int = 16
    seed: int = 1

    def __post_init__(self) -> None:
        if self.num_perm % self.bands:
            raise ValueError(f"num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")

    @property
    def rows(self) -> int:
        return self.num_perm // self.bands

    def signatures(self, shingles: Ngrams, chunk: int = 1 << 17) -> np.ndarray:
        """(n_docs, num_perm) uint32 minimum hashes; a text without shingles gets all-max (it
        matches nothing)."""
        rng = np.random.default_rng(self.seed)
        a = rng.integers(1, 2**63, size=self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        b = rng.integers(0, 2**63, size=self.num_perm, dtype=np.uint64)
        out = np.full((shingles.n_docs, self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        h, doc = shingles.hashes, shingles.doc
        # Whole texts per slice, so each text's minimum is taken once; slices small enough to stay
        # in the CPU cache for all permutations.
        bounds = np.searchsorted(doc, doc[np.arange(0, h.size, chunk)]) if h.size else np.zeros(0, int)
        bounds = np.unique(np.append(bounds, h.size))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part, part_doc = h[lo:hi], doc[lo:hi]
            starts = np.flatnonzero(np.r_[True, part_doc[1:] != part_doc[:-1]])
            rows = part_doc[starts]
            buffer = np.empty_like(part)
            for p in range(self.num_perm):
                np.multiply(part, a[p], out=buffer)
                np.add(buffer, b[p], out=buffer)
                np.right_shift(buffer, np.uint64(32), out=buffer)
                out[rows, p] = np.minimum.reduceat(buffer, starts)
        return out

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(n_docs, bands) uint64: texts that agree on a whole band share its key."""
        n = signatures.shape[0]
        keys = np.zeros((n, self.bands), np.uint64)
        for band in range(self.bands):
            acc = np.full(n, np.uint64(band + 1), np.uint64)
            for r in range(self.rows):
                acc += signatures[:, band * self.rows + r].astype(np.uint64) * _POSITION[r]
            keys[:, band] = mix(acc)
        return keys


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of paired signature rows: the share of equal minimum hashes."""
    return (a == b).mean(axis=1)
