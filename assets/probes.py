"""`hidden_states`, `difficulty_probe` and `predicted_difficulty`: difficulty for the price of a prefill.

A probe on the last prompt token's hidden states learns the target model's measured pass rates,
is scored by grouped cross-validation (groups = category) and stopped by a blocking check when its
held-out ranking is too weak, then predicts a pass rate with an uncertainty for every problem in
the pool, rolled out or not, and marks the unmeasured problems whose stratum it is least sure of as
the best use of the next rollouts. `curriculum` can stage these predictions (its `labels` option).
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    Failure,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from assets.config import StrataConfig
from assets.io_manager import ParquetIOManager
from assets.metadata import histogram_png, picture, preview
from assets.resources import GradusStorage, TargetModel
from pipeline.hidden_states import HiddenStateStore, compute_hidden_states, default_layers, num_hidden_layers
from pipeline.labels import check_counts
from pipeline.model import ModelSpec
from pipeline.probe import (
    ProbeConfig,
    ProbeReport,
    fit_probe,
    load_probe,
    predict,
    probe_figures,
    probe_passes,
    save_probe,
    select_for_rollouts,
)
from pipeline.records import canonical_json, content_hash
from pipeline.storage import slug, within
from pipeline.strata import Strata

GROUP = "probes"
PROBE_CHECK = "difficulty_probe_is_good_enough"
# Progress lines per extraction: enough to watch a long run, few enough to read.
_PROGRESS_LINES = 20


def hidden_state_root(home: Path) -> Path:
    """Where the hidden-state cache lives: `$GRADUS_HOME/hidden_states/`."""
    return within(home, "hidden_states")


def hidden_state_store(index: pd.DataFrame, home: Path, model: ModelSpec) -> HiddenStateStore:
    """The cache the `hidden_states` asset filled (`index` is its output), for `model`."""
    if index.empty:
        raise ValueError("hidden_states has no rows: materialize problems, then hidden_states")
    keys = sorted(set(index["model_key"]))
    if keys != [model.key]:
        raise ValueError(
            f"hidden_states were computed for {keys}, but the target model is {model.key}: "
            "re-materialize hidden_states"
        )
    layers = [int(layer) for layer in index["layers"].iloc[0]]
    return HiddenStateStore(hidden_state_root(home), model.key, layers, str(index["dtype"].iloc[0]))


def predicted_difficulty_path(home: Path) -> Path:
    """The `predicted_difficulty` asset's Parquet file."""
    return ParquetIOManager(home=str(home)).path_for(["predicted_difficulty"])


def predicted_labels(home: Path, label_key: str) -> pd.DataFrame:
    """The stored `predicted_difficulty` rows, refused unless they were made for `label_key`."""
    path = predicted_difficulty_path(home)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: materialize hidden_states, difficulty_probe and predicted_difficulty "
            "(probe_job) first, or stage measured labels only (labels: measured)"
        )
    frame = pd.read_parquet(path)
    keys = sorted(set(frame["label_key"]))
    if keys and keys != [label_key]:
        raise ValueError(
            f"{path} predicts labels for {keys}, not for the current target {label_key}: "
            "re-materialize predicted_difficulty"
        )
    return frame


# --- hidden_states -------------------------------------------------------------------------------


class HiddenStatesConfig(Config):
    """Which hidden states are extracted and how they are stored."""

    layers: Optional[list[int]] = Field(
        default=None,
        description="hidden-state indices (0 = embeddings, i = after layer i); "
        "default: 6 spread over depth, ending at the last layer",
    )
    dtype: Literal["float16", "float32"] = Field(default="float16", description="cache precision")
    batch_size: int = Field(default=16, description="prompts per forward pass")
    threads: int = Field(
        default=0,
        description="torch CPU threads during extraction (0: torch's default); 1 is several times "
        "faster than 2 on a 2-core machine that is busy with other work",
    )


@asset(group_name=GROUP)
def hidden_states(
    context: AssetExecutionContext,
    config: HiddenStatesConfig,
    problems: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
) -> Output[pd.DataFrame]:
    """The target model's hidden states at the last prompt token (after the chat template's
    generation prompt), at the configured layers, for every problem. The states live in a cache
    under `$GRADUS_HOME/hidden_states/`, keyed by model, revision, layers and dtype, and are never
    recomputed: the model is not even loaded when nothing is missing. This asset is the index, one
    row per problem with whether this run computed it."""
    home = storage.root()
    model = target_model.spec(home)
    layers = tuple(config.layers) if config.layers else default_layers(num_hidden_layers(model))
    store = HiddenStateStore(hidden_state_root(home), model.key, layers, config.dtype)
    ids = problems["problem_id"].astype(str)
    missing = set(store.missing(list(ids)))
    computed = ids.isin(missing).to_numpy()
    batches = math.ceil(len(missing) / config.batch_size)
    every = max(batches // _PROGRESS_LINES, 1)

    def progress(done: int, total: int) -> None:
        batch = math.ceil(done / config.batch_size)
        if batch % every == 0 or done == total:
            context.log.info(f"hidden states: batch {batch}/{batches} ({done}/{total} prompts)")

    context.log.info(f"hidden states for {model.key}, layers {list(layers)}: "
                     f"{len(missing)} to compute, {len(ids) - len(missing)} cached")
    with _torch_threads(config.threads):
        compute_hidden_states(
            model, problems[computed], hidden_state_root(home), layers, config.dtype, config.batch_size, progress
        )
    frame = pd.DataFrame({
        "problem_id": ids.to_numpy(),
        "computed": computed,
        "model_key": model.key,
        "layers": [list(layers)] * len(ids),
        "dtype": config.dtype,
    })
    return Output(
        frame,
        metadata={
            "rows": len(frame),
            "computed": int(computed.sum()),
            "reused": int((~computed).sum()),
            "layers": MetadataValue.json(list(layers)),
            "dtype": config.dtype,
            "model": model.key,
            "store": MetadataValue.path(str(store.folder)),
        },
    )


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's thread count set for one block: the setting is process-wide, and other steps of an
    in-process run must not inherit it."""
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


# --- difficulty_probe ----------------------------------------------------------------------------


class DifficultyProbeConfig(Config):
    """How the probe is fitted, and the floor it must reach."""

    kind: Literal["ridge", "logistic", "hist_gbt"] = Field(
        default="ridge",
        description="ridge on the logit pass rate, logistic on ever solved, or gradient-boosted trees",
    )
    min_spearman: float = Field(
        default=0.3,
        description="floor on the held-out Spearman correlation; below it the blocking check "
        f"{PROBE_CHECK} fails and predicted_difficulty does not run",
    )
    cv_folds: int = Field(default=5, description="grouped cross-validation folds (groups = category)")
    layers: Optional[list[int]] = Field(default=None, description="layers to sweep; default: every stored layer")


def probe_folder(home: Path, report: ProbeReport) -> Path:
    """`$GRADUS_HOME/probes/<model key>/<id>`: the id hashes what the probe was fitted on and how,
    so refitting the same labels with the same settings lands in the same folder."""
    identity = canonical_json({
        "provenance": {k: v for k, v in report.provenance.items() if k != "created_at"},
        "config": asdict(report.config),
    })
    return within(home, "probes", slug(report.provenance["model_key"]), content_hash(identity, length=16))


@asset(
    group_name=GROUP,
    check_specs=[AssetCheckSpec(PROBE_CHECK, asset="difficulty_probe", blocking=True,
                                description="The probe's held-out Spearman reaches the configured floor.")],
)
def difficulty_probe(
    context: AssetExecutionContext,
    config: DifficultyProbeConfig,
    problems: pd.DataFrame,
    hidden_states: pd.DataFrame,
    pass_rates: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
):
    """A probe from prompt hidden states to the measured pass rate, fitted on every problem with
    rollouts. Layers are swept with grouped cross-validation (groups = category, so a held-out fold
    is a generator at a level the probe never saw) and the best held-out Spearman picks the layer.
    Saved under `$GRADUS_HOME/probes/<model key>/`; this asset is a one-row card pointing at it."""
    home = storage.root()
    target = target_model.target(home)
    store = hidden_state_store(hidden_states, home, target.model)
    check_counts(pass_rates, "pass_rates")
    labelled = pass_rates.merge(problems[["problem_id", "category"]], on="problem_id")
    labelled = labelled[labelled["problem_id"].isin(hidden_states["problem_id"])]
    probe_config = ProbeConfig(
        kind=config.kind,
        cv_folds=config.cv_folds,
        min_spearman=config.min_spearman,
        layers=tuple(config.layers) if config.layers else None,
    )
    context.log.info(f"fitting a {config.kind} probe on {len(labelled)} labelled problems, layers {list(store.layers)}")
    report = fit_probe(
        store.load(labelled["problem_id"].tolist()),
        labelled["pass_rate"].to_numpy(),
        labelled["trials"].to_numpy(),
        labelled["category"].to_numpy(),
        store.layers,
        probe_config,
        problem_ids=labelled["problem_id"].tolist(),
        model_key=target.model.key,
    )
    report = replace(report, provenance={
        **report.provenance, "label_key": target.key, "verifier_version": target.verifier_version,
    })
    folder = save_probe(report, probe_folder(home, report))
    passed, reason = probe_passes(report)
    m = report.metrics
    context.log.info(f"probe saved to {folder}: {reason}")
    card = pd.DataFrame([{
        "probe_path": str(folder),
        "model_key": target.model.key,
        "label_key": target.key,
        "kind": config.kind,
        "chosen_layer": report.chosen_layer,
        **{name: float(m[name]) for name in ("spearman", "pearson", "auroc", "within_group_spearman", "mae")},
        **{name: int(m[name]) for name in ("n_problems", "n_groups", "n_folds")},
        "min_spearman": config.min_spearman,
        "passes": passed,
        "reason": reason,
    }])
    figures = probe_figures(report)
    yield Output(
        card,
        metadata={
            "path": MetadataValue.path(str(folder)),
            "chosen_layer": report.chosen_layer,
            **{name: _number(m[name]) for name in ("spearman", "pearson", "auroc", "within_group_spearman", "mae")},
            "labelled_problems": int(m["n_problems"]),
            "groups": int(m["n_groups"]),
            "layer_scores": MetadataValue.md(report.layer_scores.to_markdown(index=False, floatfmt=".3f")),
            "calibration": MetadataValue.md(report.calibration.to_markdown(index=False, floatfmt=".3f")),
            "predicted_vs_measured": picture(figures["predicted_vs_measured.png"], "predicted vs measured"),
            "layer_curve": picture(figures["layer_scores.png"], "held-out score by layer"),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in report.notes) or "none"),
        },
    )
    yield AssetCheckResult(
        check_name=PROBE_CHECK,
        passed=passed,
        description=reason,
        metadata={"reason": reason, "spearman": _number(m["spearman"]), "floor": config.min_spearman},
    )


def _number(value: float) -> Optional[float]:
    """Metadata has no NaN (e.g. AUROC with one class): undefined scores are shown as empty."""
    return round(float(value), 4) if math.isfinite(value) else None


# --- predicted_difficulty ------------------------------------------------------------------------


class PredictedDifficultyConfig(Config):
    """How many problems are marked for rollouts, and which boundaries make a prediction doubtful."""

    select_for_rollouts: int = Field(
        default=16,
        description="unmeasured problems to mark as most worth rollouts: those whose stratum the probe "
        "is least sure of (prediction nearest a class boundary, in units of its uncertainty)",
    )
    strata: StrataConfig = Field(default=StrataConfig(), description="the strata whose boundaries count")


def class_boundaries(strata: Strata) -> list[float]:
    """Pass rates where a problem changes class: interior edges, plus 1 and 0 when always-solved
    and never-solved problems are classes of their own."""
    bounds = list(strata.edges[1:-1])
    if strata.exclude_solved:
        bounds.append(1.0)
    if strata.exclude_unsolved:
        bounds.append(0.0)
    return bounds


@asset(group_name=GROUP)
def predicted_difficulty(
    context: AssetExecutionContext,
    config: PredictedDifficultyConfig,
    problems: pd.DataFrame,
    hidden_states: pd.DataFrame,
    pass_rates: pd.DataFrame,
    difficulty_probe: pd.DataFrame,
    storage: GradusStorage,
    target_model: TargetModel,
) -> Output[pd.DataFrame]:
    """The probe's pass rate for every problem in the pool, rolled out or not, with its uncertainty
    (`ci_low`/`ci_high` = prediction ± uncertainty, clipped to [0, 1]) and `label_source` =
    `predicted`. `select_for_rollouts` marks the unmeasured problems most worth rollouts (ranked
    by `rollout_rank`, 1 first). `curriculum` stages these rows with `labels: predicted | both`."""
    home = storage.root()
    target = target_model.target(home)
    card = difficulty_probe.iloc[0]
    if not bool(card["passes"]):
        raise Failure(
            description=f"the probe at {card['probe_path']} failed {PROBE_CHECK}: {card['reason']}. "
            "Refit it on more or better labels, or lower difficulty_probe's min_spearman.",
        )
    if card["label_key"] != target.key:
        raise Failure(description=f"the probe was fitted for {card['label_key']}, not {target.key}: "
                                  "re-materialize difficulty_probe")
    probe = load_probe(Path(card["probe_path"]))
    store = hidden_state_store(hidden_states, home, target.model)
    if tuple(probe.layers) != store.layers:
        raise Failure(description=f"the probe reads layers {list(probe.layers)}, hidden_states holds "
                                  f"{list(store.layers)}: re-materialize difficulty_probe")
    ids = problems["problem_id"].astype(str).tolist()
    pred, uncertainty = predict(probe, store.load(ids))
    measured_rate = pass_rates.set_index("problem_id")["pass_rate"].reindex(ids).to_numpy(np.float64)
    measured = ~np.isnan(measured_rate)

    candidates = np.flatnonzero(~measured)
    picked = candidates[select_for_rollouts(
        pred[candidates], uncertainty[candidates], class_boundaries(config.strata.strata()),
        config.select_for_rollouts,
    )]
    rank = pd.array([pd.NA] * len(ids), dtype="Int64")
    rank[picked] = np.arange(1, len(picked) + 1)
    frame = pd.DataFrame({
        "problem_id": ids,
        "category": problems["category"].to_numpy(),
        "pass_rate": pred,
        "uncertainty": uncertainty,
        "ci_low": np.clip(pred - uncertainty, 0.0, 1.0),
        "ci_high": np.clip(pred + uncertainty, 0.0, 1.0),
        "label_source": "predicted",
        "measured": measured,
        "measured_pass_rate": measured_rate,
        "select_for_rollouts": np.isin(np.arange(len(ids)), picked),
        "rollout_rank": rank,
        "label_key": target.key,
        "probe_path": str(card["probe_path"]),
    })
    context.log.info(f"predicted {len(frame)} problems ({int(measured.sum())} also measured); "
                     f"{len(picked)} of {len(candidates)} unmeasured marked for rollouts")
    series = {"measured": pred[measured].tolist(), "unmeasured": pred[~measured].tolist()}
    chosen = frame[frame["select_for_rollouts"]].sort_values("rollout_rank")
    return Output(
        frame,
        metadata={
            "rows": len(frame),
            "measured": int(measured.sum()),
            "unmeasured": len(candidates),
            "selected_for_rollouts": len(picked),
            "mean_predicted_pass_rate": _number(float(pred.mean())) if len(pred) else None,
            "mean_uncertainty": _number(float(uncertainty.mean())) if len(pred) else None,
            "histogram": picture(histogram_png(series, "predicted pass rate"), "predicted pass rate"),
            "selected_preview": preview(chosen, ["rollout_rank", "problem_id", "category", "pass_rate", "uncertainty"]),
            "probe": MetadataValue.path(str(card["probe_path"])),
        },
    )
