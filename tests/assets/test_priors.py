"""relabel_job with per-problem priors, through Dagster on a real instance: a relabel at another
temperature allocates each problem under a prior from the previous label version, and a checkpoint
the sensor finds is relabelled under priors from the base model's and another real model's labels."""

import json

import pytest
import yaml
from dagster import Definitions, instance_for_test

from assets.deployment import resources
from assets.history import difficulty_history, difficulty_matrix
from assets.jobs import all_assets, probe_assets, relabel_job
from assets.resources import TargetModel, TransformersEngineResource
from assets.sensors import model_checkpoint_sensor
from pipeline.probes.hidden_states import HiddenStateExtractor
from pipeline.probes.persistence import save_probe
from tests.assets.checkpoint_folders import evaluate, perturbed_copy
from tests.pipeline.probes.planted import fitted

PROBLEMS = 60


def run(home, instance, model_path, temperature, rollouts):
    defs = Definitions(assets=all_assets + probe_assets + [difficulty_history, difficulty_matrix], jobs=[relabel_job],
                       resources=resources({"GRADUS_HOME": str(home)}, engine=TransformersEngineResource(batch_size=64),
                                           target_model=TargetModel(model_path=model_path, max_tokens=4,
                                                                    temperature=temperature)))
    config = {"ops": {
        "problems": {"config": {"generators": [{"name": "basic_arithmetic", "levels": [0],
                                                "size_per_level": PROBLEMS}]}},
        "rollouts": {"config": rollouts},
    }}
    return defs.resolve_job_def("relabel_job").execute_in_process(run_config=config, instance=instance)


def alloc_metadata(result):
    [event] = [m for m in result.asset_materializations_for_node("rollouts") if m.asset_key.path == ["rollout_allocation"]]
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def test_a_relabel_at_another_temperature_starts_from_the_previous_labels(home, tiny_llama, instance):
    # tiny_llama fails every problem: the first labels say "unsolved" 4 times over, the relabel's
    # first round agrees, so every problem is allocated under its own prior and stops there. The
    # relabel is configured like the first labelling (uniform): earlier labels make it adaptive.
    first = run(home, instance, tiny_llama.path, 0.8, {"samples_per_problem": 4})
    assert alloc_metadata(first)["policy"] == "uniform"
    source = TargetModel(model_path=tiny_llama.path, max_tokens=4, temperature=0.8).target(home).key
    meta = alloc_metadata(run(home, instance, tiny_llama.path, 0.7, {}))
    assert meta["policy"] == "adaptive (relabel under per-problem priors)"
    problems = meta["uniform_equivalent"] // 8  # after dedup: samples_per_problem is 8 by default
    assert first.success and problems > 50
    assert meta["rollouts_spent"] == meta["prior_rollouts"] == 4 * problems
    assert meta["prior_with_own_prior"] == problems and meta["prior_rejected_priors"] == 0
    assert meta["prior_uniform_rollouts"] == 8 * problems
    table = meta["priors"]
    assert source[:24] in table and "| pool |" not in table and "strength" in table


def test_a_saved_probe_makes_a_pool_no_model_labelled_a_relabel_under_its_predictions(home, tiny_llama, instance):
    # A probe fitted for another label key, on tiny_llama's own hidden states (planted pass rates):
    # the run predicts the pool from a prefill and samples adaptively under those predictions.
    prompts = [[{"role": "user", "content": f"What is {i} + {i % 7}?"}] for i in range(120)]
    features = HiddenStateExtractor(tiny_llama, device="cpu").extract(prompts, (1, 2))
    save_probe(fitted(features, (1, 2), "org-m@r1/s-x/auto/v-1", "2026-12-01T00:00:00+00:00", signal=True),
               home / "probes" / "org-m@r1" / "fit")
    result = run(home, instance, tiny_llama.path, 0.8, {"samples_per_problem": 4})
    assert result.success and alloc_metadata(result)["policy"] == "adaptive (relabel under per-problem priors)"
    logs = [event.message for event in instance.all_logs(result.run_id)]
    assert any("relabel: adaptive under priors from ['probe of org-m@r1/s-x/auto/v-1']" in m for m in logs)
    assert any(m.startswith("probe prefill: ") and "(100%)" in m for m in logs)
    assert list((home / "hidden_states").rglob("*.parquet")), "the prefill is cached"


def labelled_models(result):
    [event] = [m for m in result.asset_materializations_for_node("difficulty_matrix")]
    return event.metadata


@pytest.mark.e2e
def test_a_checkpoint_dropped_in_the_folder_is_relabelled_under_priors_from_two_real_models(
        home, tmp_path, smollm2, gemma3, instance, monkeypatch):
    checkpoints = tmp_path / "checkpoints"
    unattended = tmp_path / "run.yaml"
    unattended.write_text(yaml.safe_dump({"ops": {
        "problems": {"config": {"generators": [{"name": "basic_arithmetic", "levels": [0], "size_per_level": PROBLEMS}]}},
        # Capped at 8: a problem a model solves sometimes would otherwise take rounds up to 256.
        "rollouts": {"config": {"samples_per_problem": 4, "max_samples": 8}},
    }}))
    monkeypatch.setenv("GRADUS_RUN_CONFIG", str(unattended))
    deployed = resources({"GRADUS_HOME": str(home), "GRADUS_CHECKPOINT_DIR": str(checkpoints)},
                         engine=TransformersEngineResource(batch_size=64),
                         target_model=TargetModel(model_path=smollm2.path, max_tokens=4))
    defs = Definitions(assets=all_assets + probe_assets + [difficulty_history, difficulty_matrix], jobs=[relabel_job],
                       sensors=[model_checkpoint_sensor], resources=deployed)
    job = defs.resolve_job_def("relabel_job")
    config = yaml.safe_load(unattended.read_text())

    base = job.execute_in_process(run_config=config, instance=instance)
    assert alloc_metadata(base)["policy"] == "uniform"  # nothing known yet
    gemma = {**config, "resources": {"target_model": {"config": {"model_path": gemma3.path, "max_tokens": 4}}}}
    other = job.execute_in_process(run_config=gemma, instance=instance)
    assert alloc_metadata(other)["policy"].startswith("adaptive (relabel")  # SmolLM2's labels as priors

    perturbed_copy(smollm2.path, checkpoints / "step-100")
    [request] = evaluate(model_checkpoint_sensor, instance, deployed, None).run_requests
    relabel = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
    assert base.success and other.success and relabel.success
    meta = alloc_metadata(relabel)
    problems = meta["uniform_equivalent"] // 4
    assert meta["policy"] == "adaptive (relabel under per-problem priors)"
    assert meta["prior_with_own_prior"] + meta["prior_rejected_priors"] == problems
    allocation = relabel.output_for_node("rollouts", "rollout_allocation")
    used = set(" + ".join(allocation["prior_source"].dropna()).split(" + "))
    assert {key.split("@")[0] for key in used} == {"HuggingFaceTB-SmolLM2-135M-Instruct", "google-gemma-3-270m"}

    matrix = labelled_models(relabel)
    assert matrix["models"].value == 3 and matrix["problems"].value == problems
    # A checkpoint folder without a gradus marker is named by its folder.
    assert "google/gemma-3-270m" in matrix["groups"].value and matrix["target"].value == "step-100"
    manifest = json.loads((home / "curricula" / "default" / "manifest.json").read_text())
    assert sorted(m["model_id"] for m in manifest["other_models"]["models"]) == [
        "HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"]
