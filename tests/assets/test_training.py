"""`staged_rl_policy` through Dagster on the real SmolLM2: a two-stage curriculum of real
reasoning-gym problems written to disk, one GRPO step per stage, loadable checkpoints; and the
Dagster config that mirrors the training spec field for field."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from dagster import DagsterInstance, materialize

from assets.definitions import defs
from assets.deployment import resources as gradus_resources
from assets.metadata import picture_key
from assets.training import TrainingConfig, staged_rl_policy
from pipeline.core.model import resolve_model
from pipeline.core.records import Problem
from pipeline.curriculum.build import CurriculumSpec, build_curriculum
from pipeline.ingest.sources import ReasoningGymSource, load_problems
from pipeline.training import TrainingSpec


def test_training_runs_in_its_own_job():
    assert defs.resolve_job_def("train_job").asset_layer.executable_asset_keys == {staged_rl_policy.key}
    assert staged_rl_policy.key not in defs.resolve_job_def("label_job").asset_layer.executable_asset_keys


def spec_fields(spec_class):
    """{name: default} of a spec dataclass, nested specs as their own {name: default} dicts."""
    out = {}
    for f in dataclasses.fields(spec_class):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out[f.name] = spec_fields(type(default)) if dataclasses.is_dataclass(default) else default
    return out


def config_fields(config_class):
    """{name: default} of a Dagster config, nested configs as their own {name: default} dicts."""
    out = {}
    for name, info in config_class.model_fields.items():
        default = info.get_default(call_default_factory=True)
        out[name] = config_fields(type(default)) if hasattr(type(default), "model_fields") else default
    return out


def test_training_config_mirrors_the_training_spec():
    spec, config = spec_fields(TrainingSpec), config_fields(TrainingConfig)
    assert list(config) == list(spec)  # same names, same order
    assert config == spec  # same defaults, nested sampler and schedule included
    assert all(info.description for info in TrainingConfig.model_fields.values())
    assert TrainingConfig().to_spec() == TrainingSpec()
    changed = TrainingConfig(sampler={"kind": "ucb", "window": 3}, schedule={"kind": "threshold"}, top_p=0.9).to_spec()
    assert (changed.sampler.kind, changed.sampler.window, changed.schedule.kind, changed.top_p) == (
        "ucb", 3, "threshold", 0.9)


def weights(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


@pytest.mark.e2e
def test_staged_rl_policy_trains_smollm2_stage_by_stage(home, smollm2, tmp_path):
    sources = [ReasoningGymSource("basic_arithmetic", levels=(0,), size_per_level=6),
               ReasoningGymSource("chain_sum", levels=(0,), size_per_level=6)]
    problems = Problem.to_frame(load_problems(sources).problems)
    # constructed labels: the arithmetic problems easy (stage 1), the chain sums hard (stage 3)
    successes = np.where(problems["source"].str.endswith("basic_arithmetic"), 6, 2)
    labels = pd.DataFrame({"problem_id": problems["problem_id"], "successes": successes, "trials": 8,
                           "pass_rate": successes / 8, "ci_low": 0.0, "ci_high": 1.0})
    provenance = {"model": {"id": smollm2.model_id, "revision": smollm2.revision},
                  "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 16, "seed": 0},
                  "extraction_policy": "auto"}
    build_curriculum(problems, labels, CurriculumSpec("rl"), home, provenance)
    resources = gradus_resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": smollm2.path})
    # no sampling settings: they follow the labels' (16 tokens); 4 completions per problem so that,
    # at this seed, some group's rewards disagree and GRPO has a gradient
    config = {"ops": {"staged_rl_policy": {"config": {
        "curriculum": "rl", "schedule": {"steps_per_stage": 1}, "prompts_per_step": 2, "num_generations": 4}}}}

    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as instance:
        result = materialize([staged_rl_policy], resources=resources, run_config=config, instance=instance)

    assert result.success
    [event] = result.asset_materializations_for_node("staged_rl_policy")
    checkpoints = event.metadata["checkpoints"].value
    assert [c["phase"] for c in checkpoints] == [1, 2]
    assert list(event.metadata)[0] == picture_key("train reward per stage")
    assert "data:image/png;base64," in event.metadata[picture_key("train reward per stage")].value
    assert event.metadata["sampling"].value == {
        "temperature": 1.0, "top_p": 1.0, "max_completion_length": 16, "extraction_policy": "auto"}
    for checkpoint in checkpoints:
        spec = resolve_model(checkpoint["path"])
        assert spec.revision == checkpoint["revision"] != smollm2.revision
        assert spec.model_id == smollm2.model_id

    log = pd.read_parquet(home / "assets" / "staged_rl_policy.parquet")
    assert log["step"].tolist() == [1, 2] and log["phase"].tolist() == [1, 2] and log["stage"].tolist() == [1, 3]
    assert log["samples_seen"].tolist() == [8, 16]
    assert log["reward"].between(0, 1).all() and log["wall_s"].is_monotonic_increasing
    assert log["batch_pass_rate"].tolist() == [0.75, 0.25]
    assert (home / "checkpoints" / "rl-sequential" / "training_log.parquet").is_file()

    # GRPO learns only from groups whose rewards disagree; the seeded run has one, so it must learn
    assert (log["frac_reward_zero_std"] < 1).any(), log[["step", "reward", "reward_std", "frac_reward_zero_std"]]
    base, first, final = (weights(p) for p in (smollm2.path, checkpoints[0]["path"], checkpoints[1]["path"]))
    assert base.keys() == first.keys() == final.keys()
    assert any(not torch.equal(base[k], final[k]) for k in base), "training ran but no weight moved"
    # a revision is the content hash of the weights: two checkpoints share one exactly when equal
    same = all(torch.equal(first[k], final[k]) for k in first)
    assert (checkpoints[0]["revision"] == checkpoints[1]["revision"]) == same
