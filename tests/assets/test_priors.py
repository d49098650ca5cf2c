"""relabel_job with per-problem priors, through Dagster on a real instance: a relabel at another
temperature allocates each problem under a prior from the previous label version."""

import pytest
from dagster import Definitions, instance_for_test

from assets.deployment import resources
from assets.history import difficulty_history, difficulty_matrix
from assets.jobs import all_assets, probe_assets, relabel_job
from assets.resources import TargetModel, TransformersEngineResource

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
    # first round agrees, so every problem is allocated under its own prior and stops there.
    first = run(home, instance, tiny_llama.path, 0.8, {"policy": "uniform", "samples_per_problem": 4})
    source = TargetModel(model_path=tiny_llama.path, max_tokens=4, temperature=0.8).target(home).key
    meta = alloc_metadata(run(home, instance, tiny_llama.path, 0.7, {"policy": "adaptive"}))
    problems = meta["uniform_equivalent"] // 8  # after dedup: samples_per_problem is 8 by default
    assert first.success and problems > 50
    assert meta["rollouts_spent"] == meta["prior_rollouts"] == 4 * problems
    assert meta["prior_with_own_prior"] == problems and meta["prior_rejected_priors"] == 0
    assert meta["prior_uniform_rollouts"] == 8 * problems
    table = meta["priors"]
    assert source[:24] in table and "| pool |" not in table and "strength" in table
