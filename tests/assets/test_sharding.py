"""Sharded rollouts: two shards fanned out by Dagster's multiprocess executor (one step and one
engine each) give the same tables as one shard.

The two-shard run is the real code location launched by the `dagster` CLI with GRADUS_SHARDS=2 in
a temporary DAGSTER_HOME; the one-shard run is an in-process `materialize`. Both use the
transformers engine on the tiny random Llama with one sequence per batch: that engine seeds each
batch from its requests' keys, so only unbatched texts are independent of how the pool is split
(vLLM seeds every request on its own).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, materialize

from assets.deployment import resources
from assets.jobs import all_assets, probe_assets
from assets.resources import StrataResource, TargetModel, TransformersEngineResource
from pipeline.core.storage import StorageLayout
from pipeline.rollouts.handles import read_handle
from pipeline.rollouts.sharding import shard_of

REPO = Path(__file__).resolve().parents[2]
GENERATORS = [{"name": "basic_arithmetic", "levels": [0], "size_per_level": 6},
              {"name": "chain_sum", "levels": [0], "size_per_level": 2}]
SAMPLES, MAX_TOKENS = 2, 12
ENGINE_MODULES = ["pipeline.engines.transformers_engine", "transformers.models.llama.modeling_llama"]
OPS = {
    "problems": {"config": {"generators": GENERATORS}},
    "rollouts": {"config": {"samples_per_problem": SAMPLES}},
}
STRATA = {"exclude_solved": False, "exclude_unsolved": False}


def table(home: Path, name: str, drop: str | None = None) -> pd.DataFrame:
    handle = StorageLayout(str(home)).handle([name])  # rollouts and rewards: a handle on a dataset
    frame = read_handle(handle).to_frame() if handle.exists() else pq.read_table(
        home / "assets" / f"{name}.parquet").to_pandas()
    return frame.drop(columns=drop) if drop else frame


def test_two_shards_through_the_multiprocess_executor_equal_one_shard(tiny_llama, tmp_path):
    one, two, dagster_home = tmp_path / "one", tmp_path / "two", tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    # Resource config given at launch replaces the defaults from the environment, so all of it is here.
    sharded = {
        "ops": OPS,
        "resources": {"target_model": {"config": {"model_path": tiny_llama.path, "max_tokens": MAX_TOKENS}},
                      "engine": {"config": {"batch_size": 1}}, "strata": {"config": STRATA}},
        # A fork server that has imported the code location and the engine's model code once
        # starts each step in about a second, rather than every step importing them itself.
        "execution": {"config": {"multiprocess": {
            "max_concurrent": 2,
            "start_method": {"forkserver": {"preload_modules": ["assets.definitions", *ENGINE_MODULES]}},
        }}},
    }
    config, log = tmp_path / "run.yaml", tmp_path / "dagster.log"
    config.write_text(yaml.safe_dump(sharded))
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "GRADUS_HOME": str(two),
           "GRADUS_ENGINE": "transformers", "GRADUS_SHARDS": "2"}
    dagster = str(Path(sys.executable).with_name("dagster"))
    with open(log, "w") as out:
        cli = subprocess.Popen([dagster, "job", "execute", "-m", "assets.definitions", "-j", "label_job",
                                "-c", str(config)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)

    # Meanwhile, the one-shard run in this process.
    deployed = resources({"GRADUS_HOME": str(one)}, engine=TransformersEngineResource(batch_size=1),
                         target_model=TargetModel(model_path=tiny_llama.path, max_tokens=MAX_TOKENS),
                         strata=StrataResource(**STRATA))
    single = {"ops": {**OPS, "rollouts": {"config": {"samples_per_problem": SAMPLES, "shards": 1}}}}
    try:
        with DagsterInstance.ephemeral(tempdir=str(tmp_path / "ephemeral")) as instance:
            assert materialize(all_assets + probe_assets, selection=all_assets, resources=deployed,
                               instance=instance, run_config=single).success
        assert cli.wait(timeout=600) == 0, log.read_text()[-4000:]
    finally:
        if cli.poll() is None:  # the CLI and its step processes
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()

    problem_ids = table(one, "problems")["problem_id"]
    assert problem_ids.map(lambda pid: shard_of(pid, 2)).nunique() == 2, "both shards must have problems"

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        logs = instance.all_logs(run.run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS})
    shard_steps: dict[str, dict] = {}
    for entry in logs:
        if (entry.step_key or "").startswith("rollouts.sample_shard"):
            shard_steps.setdefault(entry.step_key, {})[entry.dagster_event.event_type_value] = entry
    assert sorted(shard_steps) == ["rollouts.sample_shard[0]", "rollouts.sample_shard[1]"]
    a, b = shard_steps.values()
    assert a["STEP_START"].dagster_event.pid != b["STEP_START"].dagster_event.pid, "one process per shard"
    assert a["STEP_START"].timestamp < b["STEP_SUCCESS"].timestamp, "the shards ran at the same time"
    assert b["STEP_START"].timestamp < a["STEP_SUCCESS"].timestamp, "the shards ran at the same time"

    rollouts = table(two, "rollouts", drop="created_at")
    assert len(rollouts) == len(problem_ids) * SAMPLES
    assert rollouts["engine"].eq("transformers").all()
    pd.testing.assert_frame_equal(rollouts, table(one, "rollouts", drop="created_at"))
    pd.testing.assert_frame_equal(table(two, "rollout_allocation"), table(one, "rollout_allocation"))
    pd.testing.assert_frame_equal(table(two, "pass_rates", drop="labelled_at"),
                                  table(one, "pass_rates", drop="labelled_at"))
