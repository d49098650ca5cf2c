"""Checkpoints: a policy saved as a Hugging Face folder with a `gradus_model.json` marker (model id
and a content-hash revision), so relabelling the checkpoint gives labels under a new key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.model import ModelSpec, write_marker
from pipeline.core.storage import replacing


def save_checkpoint(
    model: Any, tokenizer: Any, folder: Path, base: ModelSpec, provenance: dict[str, Any]
) -> ModelSpec:
    """Save a policy as a Hugging Face folder that `resolve_model` loads with a new revision.

    The revision is the content hash of the saved files, recorded in the `gradus_model.json`
    marker with the base model's id, so labels of the checkpoint never mix with the base's. The
    folder is written beside its final place and swapped in whole.
    """
    with replacing(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        revision = write_marker(staging, base.model_id,
                                base_model={"model_id": base.model_id, "revision": base.revision, "path": base.path},
                                **provenance)
    return ModelSpec(str(folder), base.model_id, revision)
