"""A model's own representation of each prompt, read in one forward pass without generating.

Difficulty probes ("The LLM Already Knows", Prompt Curriculum Learning) regress a problem's pass
rate on the hidden state of the last prompt token: after the chat template's generation prompt,
that position is where the model is about to start answering. vLLM only exposes the last layer, so
features come from transformers, and a Parquet cache keeps them: a prefill is cheap, not free.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.core.model import ModelSpec, load_tokenizer
from pipeline.core.storage import slug, within, write_parquet_atomic, write_text_atomic

Progress = Callable[[int, int], None]
"""Called after each batch with (prompts done, prompts total)."""

STORE_DTYPES = ("float16", "float32")
# Bounds how much work an interrupted run loses: every chunk is persisted as its own part file.
_ROWS_PER_PART = 1024


@dataclass(frozen=True)
class HiddenStateSpec:
    """Which hidden states are extracted and how they are stored."""

    layers: tuple[int, ...] | None = field(default=None, metadata={
        "help": "hidden-state indices (0 = embeddings, i = after layer i); empty: 6 spread over depth, "
        "ending at the last layer"})
    dtype: Literal["float16", "float32"] = field(default="float16", metadata={"help": "cache precision"})
    batch_size: int = field(default=16, metadata={"help": "prompts per forward pass"})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads during extraction (0: torch's default); 1 is several times faster than 2 "
        "on a 2-core machine that is busy with other work"})

    def layers_for(self, model: ModelSpec) -> tuple[int, ...]:
        """The configured layers, or the default spread for `model`."""
        return tuple(self.layers) if self.layers else default_layers(num_hidden_layers(model))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's thread count set for one block (0 leaves it alone): the setting is process-wide,
    and other work in the same process must not inherit it."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_layers(num_hidden_layers: int, k: int = 6) -> tuple[int, ...]:
    """`k` hidden-state indices spread evenly over depth, ending at the last layer.

    Indices follow transformers' `output_hidden_states` (0 = embedding output, i = after layer i),
    so a 30-layer model has valid indices 0..30. Index 0 is skipped: after the chat template the
    last prompt token is the same for every prompt, so its embedding carries no information.
    Fewer than `k` indices come back when the model has fewer than `k` layers.
    """
    if num_hidden_layers < 1 or k < 1:
        raise ValueError(f"need num_hidden_layers >= 1 and k >= 1, got {num_hidden_layers}, {k}")
    return tuple(sorted({max(1, round(i * num_hidden_layers / k)) for i in range(1, k + 1)}))


def num_hidden_layers(model: ModelSpec) -> int:
    """The model's transformer layer count, read from its config (no weights loaded)."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(model.path).num_hidden_layers)


class HiddenStateExtractor:
    """Last-prompt-token hidden states of a causal LM, float32, on CUDA when available."""

    def __init__(self, model: ModelSpec, device: str = "auto") -> None:
        import torch
        from transformers import AutoModel

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model
        self.device = device
        self._tokenizer = load_tokenizer(model)
        # The base model without its LM head: logits over the vocabulary would cost more than the
        # hidden states themselves.
        self._model = AutoModel.from_pretrained(model.path, dtype=torch.float32).to(device).eval()

    @property
    def num_hidden_layers(self) -> int:
        return int(self._model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self._model.config.hidden_size)

    def extract(
        self,
        prompts: Sequence[Sequence[dict[str, str]]],
        layers: Sequence[int],
        batch_size: int = 16,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Hidden states at `layers` for each chat prompt: float32 (n_prompts, n_layers, hidden)."""
        import torch

        layers = _check_layers(layers, self.num_hidden_layers)
        texts = [
            self._tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        lengths = [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]
        # Batching prompts of similar length wastes little compute on padding.
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), len(layers), self.hidden_size), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = self._tokenizer(
                [texts[i] for i in rows], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            mask = enc["attention_mask"]
            # A plain forward numbers positions from the first (pad) column; generate() derives them
            # from the mask, and so must we, or left-padded rows would see shifted positions.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode(), _first_layers(self._model, max(layers)):
                hidden = self._model(
                    input_ids=enc["input_ids"],
                    attention_mask=mask,
                    position_ids=positions,
                    output_hidden_states=True,
                ).hidden_states
            stacked = torch.stack([hidden[layer][:, -1, :] for layer in layers], dim=1)
            out[rows] = stacked.float().cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        return out


@contextmanager
def _first_layers(model: object, depth: int) -> Iterator[None]:
    """Run only the first `depth` decoder layers while inside: the layers above the deepest one read
    cost compute and change nothing below them (a probe on layer 10 of 30 pays a third).

    transformers reports the final norm's output as the last hidden state, so the norm is skipped
    too, or the state at `depth` would come back normalised. Models without the usual `layers` and
    `norm` attributes run whole.
    """
    import torch

    layers, norm = getattr(model, "layers", None), getattr(model, "norm", None)
    if not isinstance(layers, torch.nn.ModuleList) or norm is None or depth >= len(layers):
        yield
        return
    model.layers, model.norm = layers[:depth], torch.nn.Identity()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        model.layers, model.norm = layers, norm  # type: ignore[attr-defined]


def _check_layers(layers: Sequence[int], num_hidden_layers: int) -> tuple[int, ...]:
    layers = tuple(int(layer) for layer in layers)
    if not layers:
        raise ValueError("need at least one layer")
    bad = [layer for layer in layers if not 0 <= layer <= num_hidden_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range 0..{num_hidden_layers} (0 = embeddings)")
    if len(set(layers)) != len(layers):
        raise ValueError(f"duplicate layers in {layers}")
    return layers


class HiddenStateStore:
    """Cached hidden states for one (model key, layers, dtype), as append-only Parquet part files.

    Each part holds `problem_id` and one fixed-size-list column `layer_<i>` per layer. Parts are
    written atomically and never rewritten, so an interrupted run keeps what it finished and two
    writers cannot tear each other's files; a problem stored twice is read once.
    """

    def __init__(
        self,
        store_root: Path,
        model_key: str,
        layers: Sequence[int],
        dtype: str = "float16",
    ) -> None:
        if dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {STORE_DTYPES}, got {dtype!r}")
        self.layers = tuple(int(layer) for layer in layers)
        self.dtype = dtype
        self.model_key = model_key
        layer_part = "L" + "-".join(str(layer) for layer in self.layers)
        self.folder = within(Path(store_root), slug(model_key), f"{layer_part}.{dtype}")

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []

    def stored_ids(self) -> set[str]:
        """Every problem id with cached states."""
        ids: set[str] = set()
        for part in self._parts():
            ids.update(pq.read_table(part, columns=["problem_id"]).column(0).to_pylist())
        return ids

    def missing(self, problem_ids: Sequence[str]) -> list[str]:
        """The ids without cached states, in input order, each once."""
        stored = self.stored_ids()
        return [pid for pid in dict.fromkeys(problem_ids) if pid not in stored]

    def append(self, problem_ids: Sequence[str], features: np.ndarray) -> None:
        """Store states (n, n_layers, hidden) for ids not stored yet; stored ids are left alone."""
        if features.ndim != 3 or features.shape[:2] != (len(problem_ids), len(self.layers)):
            raise ValueError(
                f"features of shape {features.shape} do not match "
                f"{len(problem_ids)} ids x {len(self.layers)} layers"
            )
        stored = self.stored_ids()
        keep: list[int] = []
        for i, pid in enumerate(problem_ids):
            if pid not in stored:
                stored.add(pid)
                keep.append(i)
        if not keep:
            return
        with np.errstate(over="ignore"):  # reported below, with advice
            values = features[keep].astype(self.dtype)
        if not np.isfinite(values).all():
            raise ValueError(f"hidden states overflow {self.dtype}; store them as float32")
        hidden = values.shape[2]
        value_type = pa.float16() if self.dtype == "float16" else pa.float32()
        columns: dict[str, pa.Array] = {"problem_id": pa.array([problem_ids[i] for i in keep], pa.string())}
        for j, layer in enumerate(self.layers):
            flat = pa.array(np.ascontiguousarray(values[:, j, :]).reshape(-1), value_type)
            columns[f"layer_{layer}"] = pa.FixedSizeListArray.from_arrays(flat, hidden)
        self._write_meta(hidden)
        # Names sort in write order, so when two writers raced on an id the first part is read.
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(pa.table(columns), self.folder / name)

    def _write_meta(self, hidden: int) -> None:
        meta = self.folder / "store.json"
        if not meta.is_file():
            text = json.dumps(
                {"model_key": self.model_key, "layers": list(self.layers), "dtype": self.dtype, "hidden": hidden},
                indent=2,
            )
            write_text_atomic(text, meta)

    def load(self, problem_ids: Sequence[str]) -> np.ndarray:
        """float32 states (n, n_layers, hidden) in the order of `problem_ids`; all must be stored."""
        wanted = list(problem_ids)
        parts = self._parts()
        if not wanted:
            return np.empty((0, len(self.layers), 0), dtype=np.float32)
        if not parts:
            raise KeyError(f"no hidden states stored in {self.folder}")
        table = ds.dataset([str(p) for p in parts], format="parquet").to_table(
            filter=ds.field("problem_id").isin(sorted(set(wanted)))
        )
        ids = table.column("problem_id").to_pylist()
        row_of: dict[str, int] = {}
        for row, pid in enumerate(ids):
            row_of.setdefault(pid, row)
        absent = [pid for pid in wanted if pid not in row_of]
        if absent:
            raise KeyError(f"{len(absent)} problem ids have no stored hidden states, e.g. {absent[:3]}")
        take = np.array([row_of[pid] for pid in wanted], dtype=np.int64)
        layers = []
        for layer in self.layers:
            column = table.column(f"layer_{layer}").combine_chunks()
            hidden = column.type.list_size
            matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, hidden)
            layers.append(matrix[take].astype(np.float32))
        return np.stack(layers, axis=1)


def compute_hidden_states(
    model: ModelSpec,
    problems: pd.DataFrame,
    store_root: Path,
    layers: Sequence[int] | None = None,
    dtype: str = HiddenStateSpec.dtype,
    batch_size: int = HiddenStateSpec.batch_size,
    progress: Progress | None = None,
) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Hidden states for `problems` (columns `problem_id`, `prompt`), computing only uncached ones.

    Returns (float32 states in row order (n, n_layers, hidden), the layers, how many were computed).
    The model is loaded only when something is missing.
    """
    layers = tuple(layers) if layers is not None else default_layers(num_hidden_layers(model))
    store = HiddenStateStore(store_root, model.key, layers, dtype)
    ids = [str(pid) for pid in problems["problem_id"]]
    missing = store.missing(ids)
    if missing:
        prompt_of = dict(zip(ids, problems["prompt"]))
        extractor = HiddenStateExtractor(model)
        for start in range(0, len(missing), _ROWS_PER_PART):
            chunk = missing[start : start + _ROWS_PER_PART]

            def chunk_progress(n: int, _total: int, offset: int = start) -> None:
                if progress is not None:
                    progress(offset + n, len(missing))

            features = extractor.extract(
                [_messages(prompt_of[pid]) for pid in chunk], layers, batch_size, chunk_progress
            )
            store.append(chunk, features)
    return store.load(ids), layers, len(missing)


def _messages(prompt: object) -> list[dict[str, str]]:
    """Chat messages from a `prompt` cell (a list, or the numpy array Arrow gives pandas)."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]  # type: ignore[attr-defined]


def indexed_store(index: pd.DataFrame, store_root: Path, model: ModelSpec) -> HiddenStateStore:
    """The cache that an index of stored states (the `hidden_states` asset: `model_key`, `layers`,
    `dtype` per problem) points at, refused unless it was computed for `model`."""
    if index.empty:
        raise ValueError("hidden_states has no rows: materialize problems, then hidden_states")
    keys = sorted(set(index["model_key"]))
    if keys != [model.key]:
        raise ValueError(
            f"hidden_states were computed for {keys}, but the target model is {model.key}: "
            "re-materialize hidden_states"
        )
    layers = [int(layer) for layer in index["layers"].iloc[0]]
    return HiddenStateStore(store_root, model.key, layers, str(index["dtype"].iloc[0]))
