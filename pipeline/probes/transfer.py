"""A saved probe read under a new target: its prediction of each problem's pass rate from the new
model's own prompt hidden states, for the price of one prefill of the pool.

In-training probes transfer across checkpoints (AUROC > 0.75 in 2604.01025), so a probe fitted on an
earlier checkpoint's labels is evidence about the next one before anything is generated. Only a
probe that passed its floor, fitted for another label key, whose chosen layer and width exist in
the new model is used: a probe of another architecture reads features it never saw. How far the
transferred prediction is trusted is not decided here: a relabel fits that from its first round
(`pipeline.labels.priors`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pipeline.core.model import ModelSpec
from pipeline.probes.hidden_states import Progress, compute_hidden_states
from pipeline.probes.persistence import load_probe
from pipeline.probes.probe import ProbeReport, predict, probe_passes


@dataclass(frozen=True)
class TransferredProbe:
    """A saved probe that can read the new target's hidden states."""

    probe: ProbeReport
    folder: Path

    @property
    def label_key(self) -> str:
        """The label key the probe was fitted on."""
        return str(self.probe.provenance.get("label_key", ""))

    def predict(self, model: ModelSpec, problems: pd.DataFrame, hidden_states: Path,
                progress: Progress | None = None) -> NDArray[np.float64]:
        """Predicted pass rates of `problems` (`problem_id`, `prompt`) under `model`, from its hidden
        states at the probe's chosen layer (cached under `hidden_states`, computed where missing)."""
        features, _, _ = compute_hidden_states(model, problems, hidden_states, layers=(self.probe.chosen_layer,),
                                               progress=progress)
        return predict(self.probe, features)[0]


def transferable_probe(probes: Path, model: ModelSpec, target_key: str) -> TransferredProbe | None:
    """The newest saved probe under `probes` that passed its floor, was fitted for a label key other
    than `target_key`, and reads a layer and width `model` has; None if there is none."""
    folders = _newest_first(probes)
    if not folders:
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model.path)
    layers, width = int(config.num_hidden_layers), int(config.hidden_size)
    for folder in folders:
        try:
            report = load_probe(folder)
        except ValueError:  # a torn or foreign folder: difficulty_probe refuses it where it is read
            continue
        if (str(report.provenance.get("label_key", "")) not in ("", target_key) and probe_passes(report)[0]
                and report.chosen_layer <= layers and int(report.estimator.n_features_in_) == width):
            return TransferredProbe(report, folder)
    return None


def _newest_first(probes: Path) -> list[Path]:
    """Saved probe folders (`probes/<model key>/<id>/probe.json`), newest fit first."""
    dated = []
    for meta in probes.glob("*/*/probe.json"):
        try:
            created = str(json.loads(meta.read_text(encoding="utf-8"))["provenance"]["created_at"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        dated.append((created, meta.parent))
    return [folder for _, folder in sorted(dated, reverse=True)]
