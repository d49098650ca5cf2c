"""`run.json`: what a finished training run records, written by the trainer and read by evaluation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.model import ModelSpec
from pipeline.core.storage import write_text_atomic

RUN_RECORD = "run.json"


@dataclass(frozen=True)
class StageRecord:
    """One phase of a run: the stage it trained on (None for mixing samplers) and its checkpoint."""

    phase: int
    stage: int | None
    steps: int
    checkpoint: str
    revision: str
    mean_reward: float | None = None
    wall_s: float | None = None
    save_s: float | None = None


@dataclass(frozen=True)
class RunRecord:
    """A finished training run: its settings, the base model, the curriculum and each phase."""

    base: ModelSpec
    curriculum_folder: str
    curriculum_label_key: str | None
    stages: tuple[StageRecord, ...]
    spec: dict[str, Any] = field(default_factory=dict)
    generation_settings: dict[str, Any] = field(default_factory=dict)
    generation: str = ""

    def write(self, folder: Path) -> Path:
        path = Path(folder) / RUN_RECORD
        record = {
            "spec": self.spec,
            "generation_settings": self.generation_settings,
            "base": asdict(self.base),
            "generation": self.generation,
            "curriculum": {"folder": self.curriculum_folder, "label_key": self.curriculum_label_key},
            "stages": [asdict(s) for s in self.stages],
        }
        write_text_atomic(json.dumps(record, indent=2, default=str), path)
        return path

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        path = Path(folder) / RUN_RECORD
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {folder} is not a finished training run "
                                    "(materialize `staged_rl_policy` to write one)")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                base=ModelSpec(**record["base"]),
                curriculum_folder=str(record["curriculum"]["folder"]),
                curriculum_label_key=record["curriculum"].get("label_key"),
                stages=tuple(StageRecord(**s) for s in record["stages"]),
                spec=record.get("spec", {}),
                generation_settings=record.get("generation_settings", {}),
                generation=record.get("generation", ""),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a training run record ({type(exc).__name__}: {exc}): "
                             "retrain the run") from None
