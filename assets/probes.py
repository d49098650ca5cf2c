"""`hidden_states`, `difficulty_probe` and `predicted_difficulty`: difficulty for the price of a prefill.

A probe on the last prompt token's hidden states learns the target model's measured pass rates,
is scored by grouped cross-validation (groups = category) and checked against a floor: below it, its
predictions are withheld (the check fails, `predicted_difficulty` is empty, and a curriculum that
asks for predicted labels refuses to build, while one on measured labels goes on). Otherwise it predicts a pass rate with an uncertainty for every problem in
the pool, rolled out or not, and marks the unmeasured problems whose stratum it is least sure of as
the best use of the next rollouts. `curriculum` can stage these predictions (its `labels` option).
"""

from dataclasses import replace
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from assets.config import op_config, spec_config
from assets.metadata import figure, histogram_png, picture_entry, preview
from assets.resources import GradusStorage, StrataResource, TargetModel
from pipeline.core.progress import Progress
from pipeline.labels.pass_rates import check_counts
from pipeline.probes.hidden_states import (
    HiddenStateSpec,
    HiddenStateStore,
    compute_hidden_states,
    indexed_store,
    torch_threads,
)
from pipeline.probes.persistence import load_probe, save_probe
from pipeline.probes.probe import (
    PredictionSpec,
    ProbeConfig,
    fit_probe,
    prediction_frame,
    probe_figures,
    probe_id,
    probe_passes,
    withheld_predictions,
)

GROUP = "probes"
PROBE_CHECK = "difficulty_probe_is_good_enough"


# --- hidden_states -------------------------------------------------------------------------------


@op_config("hidden_states")
class HiddenStatesConfig(spec_config(HiddenStateSpec)):
    """Which hidden states are extracted and how they are stored."""


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
    layout = storage.layout()
    model = target_model.spec(storage.layout().root)
    spec = config.to_spec()
    layers = spec.layers_for(model)
    store = HiddenStateStore(layout.hidden_states, model.key, layers, config.dtype)
    ids = problems["problem_id"].astype(str)
    missing = set(store.missing(list(ids)))
    computed = ids.isin(missing).to_numpy()
    tracker = Progress("hidden states", len(missing), context.log.info, unit="prompts")
    context.log.info(f"hidden states for {model.key}, layers {list(layers)}: "
                     f"{len(missing)} to compute, {len(ids) - len(missing)} cached")
    with torch_threads(config.threads):
        compute_hidden_states(
            model, problems[computed], layout.hidden_states, layers, config.dtype, config.batch_size,
            lambda done, _total: tracker.update(done),
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


# --- difficulty_probe ----------------------------------------------------------------------------


@op_config("difficulty_probe")
class DifficultyProbeConfig(spec_config(ProbeConfig)):
    """How the probe is fitted, and the floor it must reach."""


@asset(
    group_name=GROUP,
    # Not blocking: a weak probe must not stop a curriculum built from measured labels downstream;
    # predicted_difficulty withholds its predictions instead.
    check_specs=[AssetCheckSpec(PROBE_CHECK, asset="difficulty_probe",
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
    layout = storage.layout()
    target = target_model.target(storage.layout().root)
    store = indexed_store(hidden_states, layout.hidden_states, target.model)
    check_counts(pass_rates, "pass_rates")
    labelled = pass_rates.merge(problems[["problem_id", "category"]], on="problem_id")
    labelled = labelled[labelled["problem_id"].isin(hidden_states["problem_id"])]
    probe_config = config.to_spec()
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
    folder = save_probe(report, layout.probe(target.model.key, probe_id(report)))
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
            **picture_entry(figures["predicted_vs_measured.png"], "predicted vs measured"),
            **picture_entry(figures["layer_scores.png"], "held-out score by layer"),
            "path": MetadataValue.path(str(folder)),
            "chosen_layer": report.chosen_layer,
            **{name: figure(m[name]) for name in ("spearman", "pearson", "auroc", "within_group_spearman", "mae")},
            "labelled_problems": int(m["n_problems"]),
            "groups": int(m["n_groups"]),
            "layer_scores": MetadataValue.md(report.layer_scores.to_markdown(index=False, floatfmt=".3f")),
            "calibration": MetadataValue.md(report.calibration.to_markdown(index=False, floatfmt=".3f")),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in report.notes) or "none"),
        },
    )
    yield AssetCheckResult(
        check_name=PROBE_CHECK,
        passed=passed,
        description=reason,
        metadata={"reason": reason, "spearman": figure(m["spearman"]), "floor": config.min_spearman},
    )


# --- predicted_difficulty ------------------------------------------------------------------------


@op_config("predicted_difficulty")
class PredictedDifficultyConfig(spec_config(PredictionSpec)):
    """How many unmeasured problems are marked for rollouts (the boundaries come from `strata`)."""


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
    strata: StrataResource,
) -> Output[pd.DataFrame]:
    """The probe's pass rate for every problem in the pool, rolled out or not, with its uncertainty
    (`ci_low`/`ci_high` = prediction ± uncertainty, clipped to [0, 1]) and `label_source` =
    `predicted`. `select_for_rollouts` marks the unmeasured problems most worth rollouts (ranked
    by `rollout_rank`, 1 first). `curriculum` stages these rows with `labels: predicted | both`."""
    target = target_model.target(storage.layout().root)
    card = difficulty_probe.iloc[0]
    if not bool(card["passes"]):
        reason = (f"the probe at {card['probe_path']} failed {PROBE_CHECK}: {card['reason']}. "
                  "Refit it on more or better labels, or lower difficulty_probe's min_spearman.")
        context.log.warning(f"predictions withheld: {reason}")
        empty = withheld_predictions().assign(label_key=target.key, probe_path=str(card["probe_path"]))
        return Output(empty, metadata={"rows": 0, "withheld": reason})
    if card["label_key"] != target.key:
        raise Failure(description=f"the probe was fitted for {card['label_key']}, not {target.key}: "
                                  "re-materialize difficulty_probe")
    probe = load_probe(Path(card["probe_path"]))
    store = indexed_store(hidden_states, storage.layout().hidden_states, target.model)
    if tuple(probe.layers) != store.layers:
        raise Failure(description=f"the probe reads layers {list(probe.layers)}, hidden_states holds "
                                  f"{list(store.layers)}: re-materialize difficulty_probe")
    frame = prediction_frame(probe, store.load(problems["problem_id"].astype(str).tolist()), problems,
                             pass_rates, strata.strata(), config.to_spec())
    frame = frame.assign(label_key=target.key, probe_path=str(card["probe_path"]))
    pred, measured = frame["pass_rate"].to_numpy(), frame["measured"].to_numpy()
    candidates = int((~measured).sum())
    picked = int(frame["select_for_rollouts"].sum())
    context.log.info(f"predicted {len(frame)} problems ({int(measured.sum())} also measured); "
                     f"{picked} of {candidates} unmeasured marked for rollouts")
    series = {"measured": pred[measured].tolist(), "unmeasured": pred[~measured].tolist()}
    chosen = frame[frame["select_for_rollouts"]].sort_values("rollout_rank")
    return Output(
        frame,
        metadata={
            **picture_entry(histogram_png(series, "predicted pass rate"), "predicted pass-rate histogram"),
            "rows": len(frame),
            "measured": int(measured.sum()),
            "unmeasured": candidates,
            "selected_for_rollouts": picked,
            "mean_predicted_pass_rate": figure(pred.mean()) if len(pred) else None,
            "mean_uncertainty": figure(frame["uncertainty"].mean()) if len(pred) else None,
            "selected_preview": preview(chosen, ["rollout_rank", "problem_id", "category", "pass_rate", "uncertainty"]),
            "probe": MetadataValue.path(str(card["probe_path"])),
        },
    )
