"""Saved probes, never pickled: linear probes are plain arrays (NPZ, read with `allow_pickle=False`)
plus JSON; the non-linear one is a skops file loaded against an explicit list of trusted types."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.core.storage import write_bytes_atomic, write_text_atomic
from pipeline.probes.probe import LINEAR_KINDS, ProbeConfig, ProbeReport

FORMAT = "gradus-probe/1"


# Types a saved hist_gbt probe may contain beyond those skops trusts by default. Anything else in a
# file is refused: skops rebuilds objects without pickle, but only types named here.
SKOPS_TRUSTED_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


def save_probe(probe: ProbeReport, folder: Path) -> Path:
    """Write `probe.npz` (arrays), `model.skops` (non-linear kinds only) and `probe.json` (last, so
    a folder with metadata always has its weights)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"oof_pred": probe.oof_pred, "measured": probe.measured}
    models = (probe.estimator, *probe.fold_estimators)
    if probe.config.kind in LINEAR_KINDS:
        arrays.update(_linear_arrays(models))
    else:
        import skops.io

        write_bytes_atomic(skops.io.dumps(list(models)), folder / "model.skops")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(buffer.getvalue(), folder / "probe.npz")
    meta = {
        "format": FORMAT,
        "config": asdict(probe.config),
        "layers": list(probe.layers),
        "chosen_layer": probe.chosen_layer,
        "metrics": probe.metrics,
        "layer_scores": probe.layer_scores.to_dict(orient="records"),
        "calibration": probe.calibration.to_dict(orient="records"),
        "residual_sd": probe.residual_sd,
        "provenance": probe.provenance,
        "notes": list(probe.notes),
    }
    write_text_atomic(json.dumps(_finite(meta), indent=2), folder / "probe.json")
    return folder


def load_probe(folder: Path) -> ProbeReport:
    """Read a probe written by `save_probe`, without unpickling anything."""
    folder = Path(folder)
    fix = f"delete {folder} and rematerialize `difficulty_probe`"
    try:
        meta = json.loads((folder / "probe.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{folder / 'probe.json'} is truncated or garbled ({exc}): {fix}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{folder / 'probe.json'} is not a probe's metadata: {fix}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder} holds {meta.get('format')!r}, not a {FORMAT} probe")
    config_fields = dict(meta["config"])
    for name in ("alphas", "layers"):
        if config_fields.get(name) is not None:
            config_fields[name] = tuple(config_fields[name])
    config = ProbeConfig(**config_fields)
    try:
        with np.load(folder / "probe.npz", allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{folder / 'probe.npz'} is truncated or garbled ({type(exc).__name__}: {exc}): {fix}") from None
    weights = [name for name in ("mean", "scale", "coef", "intercept", "alpha") if name in arrays]
    if broken := [name for name in weights if not np.isfinite(arrays[name]).all()]:
        raise ValueError(f"{folder / 'probe.npz'} holds non-finite weights ({', '.join(broken)}): every "
                         f"prediction would be NaN. {fix[0].upper()}{fix[1:]}")
    if config.kind in LINEAR_KINDS:
        models = _linear_models(config.kind, arrays)
    else:
        models = _load_skops(folder / "model.skops")
    return ProbeReport(
        config=config,
        layers=tuple(meta["layers"]),
        chosen_layer=int(meta["chosen_layer"]),
        metrics={k: math.nan if v is None else float(v) for k, v in meta["metrics"].items()},
        layer_scores=pd.DataFrame(meta["layer_scores"], columns=["layer", "spearman", "pearson"]).astype(
            {"spearman": float, "pearson": float}
        ),
        calibration=pd.DataFrame(
            meta["calibration"], columns=["lo", "hi", "count", "mean_predicted", "mean_measured"]
        ),
        oof_pred=arrays["oof_pred"],
        measured=arrays["measured"],
        estimator=models[0],
        fold_estimators=tuple(models[1:]),
        residual_sd=float(meta["residual_sd"]),
        provenance=meta["provenance"],
        notes=tuple(meta["notes"]),
    )


def _linear_arrays(models: Sequence[Pipeline]) -> dict[str, np.ndarray]:
    """Scaler and linear-head parameters of each model, stacked: row 0 final, then the folds."""
    scalers = [m.named_steps["scale"] for m in models]
    heads = [m.named_steps["model"] for m in models]
    arrays = {
        "mean": np.stack([s.mean_ for s in scalers]),
        "scale": np.stack([s.scale_ for s in scalers]),
        "coef": np.stack([np.ravel(h.coef_) for h in heads]),
        "intercept": np.array([float(np.ravel(h.intercept_)[0]) for h in heads]),
        "alpha": np.array([_alpha(h) for h in heads]),
    }
    if is_classifier(heads[0]):
        arrays["classes"] = np.asarray(heads[0].classes_)
    return arrays


def _alpha(head: Any) -> float:
    if hasattr(head, "alpha_"):
        return float(head.alpha_)
    return 1.0 / float(np.ravel(head.C_)[0])


def _linear_models(kind: str, arrays: dict[str, np.ndarray]) -> list[Pipeline]:
    """Pipelines rebuilt from stored parameters; they compute exactly what the fitted ones did."""
    models = []
    for i in range(len(arrays["coef"])):
        scaler = StandardScaler()
        scaler.mean_ = arrays["mean"][i]
        scaler.scale_ = arrays["scale"][i]
        scaler.var_ = arrays["scale"][i] ** 2
        scaler.n_features_in_ = arrays["mean"].shape[1]
        head: Any
        if kind == "ridge":
            head = Ridge(alpha=float(arrays["alpha"][i]))
            head.coef_ = arrays["coef"][i]
            head.intercept_ = float(arrays["intercept"][i])
        else:
            head = LogisticRegression(C=1.0 / float(arrays["alpha"][i]))
            head.coef_ = arrays["coef"][i][None, :]
            head.intercept_ = arrays["intercept"][i : i + 1]
            head.classes_ = arrays["classes"]
        head.n_features_in_ = arrays["coef"].shape[1]
        models.append(Pipeline([("scale", scaler), ("model", head)]))
    return models


def _load_skops(path: Path) -> list[Any]:
    import skops.io

    data = path.read_bytes()
    untrusted = skops.io.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - set(SKOPS_TRUSTED_TYPES))
    if refused:
        raise ValueError(f"{path} contains types outside the trusted list: {refused}")
    return list(skops.io.loads(data, trusted=list(untrusted)))


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null (read back as NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
