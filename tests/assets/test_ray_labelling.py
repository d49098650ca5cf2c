"""The labelling assets with `GRADUS_BACKEND=ray` on the real local cluster (tests/conftest.py): the
step joins the cluster, engine actors generate and store, Ray tasks verify, and the run's metadata
names the cluster, its actors and their throughput."""

import pandas as pd
from dagster import DagsterInstance, materialize

from assets.deployment import resources
from assets.jobs import all_assets, probe_assets
from assets.resources import TargetModel, TransformersEngineResource
from pipeline.core.storage import StorageLayout
from pipeline.rollouts.handles import read_handle

LABELLING = ["problems", "quarantined_problems", "unique_problems", "duplicate_problems", "rollouts",
             "rollout_allocation", "rewards", "pass_rates"]
PROBLEMS = {"generators": [{"name": "chain_sum", "levels": [0, 1], "size_per_level": 2}]}


def test_labelling_runs_on_the_ray_backend(ray_cluster, home, tiny_llama):
    deployed = resources({"GRADUS_HOME": str(home), "GRADUS_BACKEND": "ray", "RAY_ADDRESS": ray_cluster.address},
                         engine=TransformersEngineResource(batch_size=4),
                         target_model=TargetModel(model_path=tiny_llama.path, max_tokens=4))
    with DagsterInstance.ephemeral() as instance:
        result = materialize(all_assets + probe_assets, selection=LABELLING, resources=deployed, instance=instance,
                             run_config={"ops": {"problems": {"config": PROBLEMS},
                                                 "rollouts": {"config": {"samples_per_problem": 3}}}})
    assert result.success
    layout = StorageLayout(str(home))
    rollouts = read_handle(layout.handle(["rollouts"])).to_frame()
    rewards = read_handle(layout.handle(["rewards"])).to_frame().sort_values(["problem_id", "sample_index"],
                                                                            ignore_index=True)
    assert rollouts.groupby("problem_id").size().tolist() == [3] * 4
    assert rewards[["problem_id", "sample_index"]].equals(rollouts[["problem_id", "sample_index"]])
    [stats] = [e.event_specific_data.metadata for e in result.all_node_events
               if e.event_type_value == "STEP_OUTPUT" and e.step_key.startswith("rollouts.sample_shard")
               and e.event_specific_data.step_output_handle.output_name == "stats"]
    assert stats["ray_address"].value and stats["ray_nodes"].value == 2
    assert stats["ray_actors"].value >= 1 and stats["ray_tokens_per_second"].value > 0
    assert stats["generated"].value == 12


def test_adaptive_labelling_on_the_ray_backend_counts_passes_on_the_cluster(ray_cluster, home, tiny_llama):
    deployed = resources({"GRADUS_HOME": str(home), "GRADUS_BACKEND": "ray", "RAY_ADDRESS": ray_cluster.address},
                         engine=TransformersEngineResource(batch_size=4),
                         target_model=TargetModel(model_path=tiny_llama.path, max_tokens=4))
    adaptive = {"policy": "adaptive", "min_samples": 2, "max_samples": 4, "batch_per_problem": 2}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(all_assets + probe_assets, selection=LABELLING, resources=deployed, instance=instance,
                             run_config={"ops": {"problems": {"config": PROBLEMS},
                                                 "rollouts": {"config": adaptive}}})
    assert result.success
    layout = StorageLayout(str(home))
    allocation = pd.read_parquet(layout.asset(["rollout_allocation"])).set_index("problem_id").sort_index()
    rewards = read_handle(layout.handle(["rewards"])).to_frame()
    # the passes the rounds counted on the cluster are the rewards' own, problem by problem
    passes = rewards.groupby("problem_id")["passed"].sum().sort_index()
    assert allocation["trials"].between(2, 4).all() and len(rewards) == allocation["trials"].sum()
    assert allocation["successes"].tolist() == passes.astype(int).tolist()
