"""The whole run's configuration is checked before any step does work."""

import inspect

import pytest
from dagster import AssetsDefinition, DagsterInstance, GraphDefinition, materialize

from assets.definitions import defs
from assets.deployment import resources
from assets.jobs import all_assets, probe_assets
from assets.main import main
from assets.preflight import OP_CONFIGS, check_run_config, config_errors
from assets.resources import TargetModel, TransformersEngineResource
from pipeline.core.storage import StorageLayout

BAD = {
    "ops": {"curriculum": {"config": {"name": "../evil"}},
            "rollouts": {"config": {"samples_per_problem": 1_000_000_000}}},
    "resources": {"strata": {"config": {"edges": [1.0, 0.2, 0.5, 0.0]}},
                  "target_model": {"config": {"extraction_policy": "nope"}},
                  "hub": {"config": {"repo_id": "me/x", "token": {"env": "HF_TOKEN"}}}},
}


def test_every_bad_value_is_named_at_once():
    errors = config_errors(BAD)
    assert len(errors) == 4
    for expected in ("curriculum: config: Value error, invalid name '../evil'",
                     "rollouts: config: Value error, samples_per_problem = 1000000000 exceeds",
                     "strata: config: Value error, strata edges must be strictly descending",
                     "target_model: extraction_policy"):
        assert any(expected in e for e in errors), (expected, errors)
    assert config_errors({"ops": {"curriculum": {"config": {"name": "ok"}}},
                          "resources": {"hub": {"config": {"token": {"env": "HF_TOKEN"}}}}}) == []
    with pytest.raises(ValueError, match="nothing was run"):
        check_run_config(BAD)


def takes_config(node) -> bool:
    if isinstance(node, GraphDefinition):
        return node.config_mapping is not None
    return "config" in inspect.signature(node.compute_fn.decorated_fn).parameters


def test_every_configurable_op_is_checked():
    configurable = {a.node_def.name for a in defs.assets if isinstance(a, AssetsDefinition) and takes_config(a.node_def)}
    assert configurable == set(OP_CONFIGS)


def test_a_bad_value_for_a_late_step_stops_the_run_at_its_first_step(home, tiny_llama, tmp_path):
    config = {"ops": {"problems": {"config": {"generators": [{"name": "chain_sum", "levels": [0], "size_per_level": 2}]}},
                      "curriculum": {"config": {"name": "../evil"}}}}
    deployment = resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": tiny_llama.path},
                           engine=TransformersEngineResource(batch_size=4))
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as instance:
        result = materialize(all_assets + probe_assets, selection=all_assets, resources=deployment,
                             run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "problems" and "invalid name '../evil'" in str(failure.step_failure_data.error)
    assert not (StorageLayout(str(home)).root / "rollouts").exists()


def test_the_command_line_refuses_a_bad_config_before_dagster_starts(home, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text("resources:\n  strata:\n    config: {edges: [1.0, 0.2, 0.5, 0.0]}\n")
    assert main(["--config", str(path)]) == 2
    assert "strictly descending" in capsys.readouterr().err
    assert not (StorageLayout(str(home)).root / "dagster").exists()


def test_greedy_sampling_with_several_samples_is_refused_at_the_first_step(home, tiny_llama, tmp_path):
    config = {"ops": {"problems": {"config": {"generators": [{"name": "chain_sum", "levels": [0], "size_per_level": 2}]}},
                      "rollouts": {"config": {"samples_per_problem": 4}}}}
    deployment = resources({"GRADUS_HOME": str(home)}, engine=TransformersEngineResource(batch_size=4),
                           target_model=TargetModel(model_path=tiny_llama.path, temperature=0.0))
    with DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster")) as instance:
        result = materialize(all_assets + probe_assets, selection=all_assets, resources=deployment,
                             run_config=config, instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "problems"
    assert "temperature 0 with 4 samples per problem" in str(failure.step_failure_data.error)
    assert not (StorageLayout(str(home)).root / "rollouts").exists()
