"""The schedule and the checkpoint sensor against a real instance, and relabelling on the real
SmolLM2 model: after a new problem or a new checkpoint, only stale or new problems are generated."""

import json
import signal
import socket
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest
import yaml
from dagster import DagsterRunStatus, Definitions, build_schedule_context, instance_for_test

from assets.deployment import resources
from assets.history import difficulty_history, difficulty_matrix
from assets.jobs import HOST_TAG, PID_TAG, all_assets, probe_assets, relabel_job
from assets.resources import TargetModel, TransformersEngineResource
from assets.schedules import relabel_schedule_from_env
from assets.sensors import CHECKPOINT_TAG, model_checkpoint_sensor
from pipeline.core.model import folder_revision
from pipeline.core.storage import StorageLayout
from pipeline.difficulty.strata import Strata
from pipeline.labels.history import LabelHistory, stale_or_new
from pipeline.rollouts.handles import read_handle
from tests.assets.checkpoint_folders import age, evaluate, fake_checkpoint, perturbed_copy

N = 2
MAX_TOKENS = 8


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


@pytest.fixture
def run_config_file(tmp_path, monkeypatch):
    """GRADUS_RUN_CONFIG for unattended runs; `write(size)` sets how many problems they label."""
    path = tmp_path / "run.yaml"
    monkeypatch.setenv("GRADUS_RUN_CONFIG", str(path))

    def write(size: int) -> dict:
        config = {"ops": {
            "problems": {"config": {"generators": [{"name": "basic_arithmetic", "levels": [0], "size_per_level": size}]}},
            "rollouts": {"config": {"samples_per_problem": N}},
        }}
        path.write_text(yaml.safe_dump(config))
        return config

    return write


def deployment(home, checkpoints="", **replace):
    """The deployment's resources, as `definitions.py` builds them from the environment."""
    return resources({"GRADUS_HOME": str(home), "GRADUS_CHECKPOINT_DIR": str(checkpoints)}, **replace)


def definitions(home, model_path, checkpoints=""):
    return Definitions(assets=all_assets + probe_assets + [difficulty_history, difficulty_matrix], jobs=[relabel_job],
                       schedules=[relabel_schedule_from_env()], sensors=[model_checkpoint_sensor],
                       resources=deployment(home, checkpoints, engine=TransformersEngineResource(batch_size=8),
                                            target_model=TargetModel(model_path=model_path, max_tokens=MAX_TOKENS)))


def test_schedule_cron_and_timezone_come_from_the_environment(monkeypatch):
    schedule = relabel_schedule_from_env()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")
    monkeypatch.setenv("GRADUS_RELABEL_CRON", "30 4 * * 1-5")
    monkeypatch.setenv("GRADUS_TIMEZONE", "Europe/Paris")
    schedule = relabel_schedule_from_env()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 4 * * 1-5", "Europe/Paris")
    assert schedule.job_name == "relabel_job"


def test_schedule_launches_with_the_unattended_config_and_skips_while_a_relabel_runs(
        home, instance, run_config_file):
    config = run_config_file(3)
    defs = definitions(home, "")
    schedule = defs.resolve_schedule_def("nightly_relabel_schedule")
    when = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)

    [request] = schedule.evaluate_tick(build_schedule_context(instance, scheduled_execution_time=when)).run_requests
    assert request.run_config == config and request.tags["gradus/trigger"] == "schedule"

    instance.create_run_for_job(defs.resolve_job_def("relabel_job"), status=DagsterRunStatus.STARTED)
    data = schedule.evaluate_tick(build_schedule_context(instance, scheduled_execution_time=when))
    assert not data.run_requests and "still queued or running" in data.skip_message


def test_a_relabel_run_whose_process_was_killed_does_not_block_the_schedule(home, instance, run_config_file):
    """A SIGKILLed process leaves its run STARTED for ever; the schedule marks it failed and runs."""
    run_config_file(3)
    defs = definitions(home, "")
    schedule = defs.resolve_schedule_def("nightly_relabel_schedule")
    when = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    job = defs.resolve_job_def("relabel_job")
    tags = lambda pid: {PID_TAG: str(pid), HOST_TAG: socket.gethostname()}  # noqa: E731
    killed = instance.create_run_for_job(job, status=DagsterRunStatus.STARTED, tags=tags(owner.pid))
    data = schedule.evaluate_tick(build_schedule_context(instance, scheduled_execution_time=when))
    assert not data.run_requests and killed.run_id in data.skip_message  # its process is alive

    owner.send_signal(signal.SIGKILL)
    owner.wait()
    [request] = schedule.evaluate_tick(build_schedule_context(instance, scheduled_execution_time=when)).run_requests
    assert request.tags["gradus/trigger"] == "schedule"
    assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE

    # a run on another machine is not this machine's to judge: it still blocks
    elsewhere = instance.create_run_for_job(job, status=DagsterRunStatus.STARTED,
                                            tags={PID_TAG: str(owner.pid), HOST_TAG: "another-host"})
    data = schedule.evaluate_tick(build_schedule_context(instance, scheduled_execution_time=when))
    assert not data.run_requests and elsewhere.run_id in data.skip_message


def test_sensor_launches_each_finished_checkpoint_once(home, tmp_path, instance):
    root = tmp_path / "checkpoints"
    resources = deployment(home, root, target_model=TargetModel(temperature=1.0, max_tokens=32, model_id="pinned",
                                                                revision="pinned"))
    assert evaluate(model_checkpoint_sensor, instance, resources, None).skip_message  # no folder yet

    fake_checkpoint(root, "step-100")
    fake_checkpoint(root, "step-200", files=("config.json",))  # no weights yet
    writing = fake_checkpoint(root, "step-300", age_s=0)  # still being written
    fake_checkpoint(root, ".tmp-step-400", files=("config.json", "gradus_model.json"))  # hidden temporary folder
    fake_checkpoint(root, "grpo-run/stage_1", files=("config.json", "gradus_model.json"))  # a training run's stage
    fake_checkpoint(root, "grpo-run/.stage_2.staging", files=("config.json", "gradus_model.json"))

    data = evaluate(model_checkpoint_sensor, instance, resources, None)
    assert [r.run_key for r in data.run_requests] == ["grpo-run/stage_1", "step-100"]
    request = data.run_requests[1]
    assert request.tags[CHECKPOINT_TAG] == "step-100"
    target = request.run_config["resources"]["target_model"]["config"]
    assert target["model_path"] == str(root / "step-100")
    # The deployment's sampling settings carry over; identity comes from the folder, not the pin.
    assert (target["temperature"], target["max_tokens"], target["model_id"], target["revision"]) == (1.0, 32, "", "")
    assert instance.get_dynamic_partitions("model_checkpoints") == ["grpo-run/stage_1", "step-100"]

    assert evaluate(model_checkpoint_sensor, instance, resources, data.cursor).skip_message  # once only

    age(writing, 3600)
    (root / "step-200" / "trainer_state.json").write_text("{}")
    age(root / "step-200", 3600)
    again = evaluate(model_checkpoint_sensor, instance, resources, data.cursor)
    assert sorted(r.run_key for r in again.run_requests) == ["step-200", "step-300"]
    assert instance.get_dynamic_partitions("model_checkpoints") == [
        "grpo-run/stage_1", "step-100", "step-200", "step-300"]


def test_a_checkpoint_folder_rewritten_with_new_weights_is_relabelled_once(home, tmp_path, instance):
    root = tmp_path / "checkpoints"
    resources = deployment(home, root)
    folder = fake_checkpoint(root, "grpo-run/stage_1")
    first = evaluate(model_checkpoint_sensor, instance, resources, None)
    assert [r.run_key for r in first.run_requests] == ["grpo-run/stage_1"]

    age(folder, 0)  # touched, the same bytes: nothing new
    age(folder, 3600)
    assert evaluate(model_checkpoint_sensor, instance, resources, first.cursor).skip_message

    (folder / "model.safetensors").write_text('{"retrained": true}')  # same run and stage, new weights
    age(folder, 3600)
    rewritten = evaluate(model_checkpoint_sensor, instance, resources, first.cursor)
    [again] = rewritten.run_requests
    assert again.run_key == f"grpo-run/stage_1@{folder_revision(folder)}"
    assert again.tags[CHECKPOINT_TAG] == "grpo-run/stage_1"
    assert again.run_config["resources"]["target_model"]["config"]["model_path"] == str(folder)
    assert evaluate(model_checkpoint_sensor, instance, resources, rewritten.cursor).skip_message  # once only
    assert instance.get_dynamic_partitions("model_checkpoints") == ["grpo-run/stage_1"]

    older = evaluate(model_checkpoint_sensor, instance, resources, json.dumps(["grpo-run/stage_1"]))
    assert older.skip_message  # an older gradus's cursor names folders only: taken as labelled as they are
    (folder / "model.safetensors").write_text('{"retrained": 2}')
    age(folder, 3600)
    [third] = evaluate(model_checkpoint_sensor, instance, resources, older.cursor).run_requests
    assert third.run_key == f"grpo-run/stage_1@{folder_revision(folder)}"


def read(home, name):
    handle = StorageLayout(str(home)).handle([name])  # rollouts and rewards: a handle on a dataset
    return read_handle(handle).to_frame() if handle.exists() else pq.read_table(
        home / "assets" / f"{name}.parquet").to_pandas()


def metadata(result, node, key=None):
    events = [m for m in result.asset_materializations_for_node(node) if key is None or m.asset_key.path == [key]]
    return {k: v.value for k, v in events[0].metadata.items()}


def relabel(job, instance, run_config, tags=None):
    """Run relabel_job; return the result and how many rollouts it generated."""
    result = job.execute_in_process(run_config=run_config, instance=instance, tags=tags)
    assert result.success
    return result, metadata(result, "rollouts", "rollouts")["generated"]


@pytest.mark.e2e
def test_relabelling_generates_only_for_stale_or_new_problems(home, tmp_path, smollm2, instance,
                                                              run_config_file):
    root = tmp_path / "checkpoints"
    defs = definitions(home, smollm2.path, root)
    job = defs.resolve_job_def("relabel_job")
    strata = Strata()

    _, generated = relabel(job, instance, run_config_file(3))
    assert generated == 3 * N
    before = read(home, "pass_rates")
    target_a = TargetModel(model_path=smollm2.path, max_tokens=MAX_TOKENS).target(home)

    # One more problem, same model: only it is generated.
    second, generated = relabel(job, instance, run_config_file(4))
    problems = read(home, "problems")
    assert set(before["problem_id"]) < set(problems["problem_id"])
    assert len(stale_or_new(problems, before, target_a)) == 1 and generated == 1 * N
    assert metadata(second, "difficulty_history")["added"] == 1
    labels_a = read(home, "pass_rates")

    # A new checkpoint appears: the sensor points relabel_job at it, and every label is stale.
    perturbed_copy(smollm2.path, root / "ckpt-1")
    sensor = defs.resolve_sensor_def("model_checkpoint_sensor")
    deployed = deployment(home, root, target_model=TargetModel(model_path=smollm2.path, max_tokens=MAX_TOKENS))
    [request] = evaluate(sensor, instance, deployed, None).run_requests
    target_b = TargetModel(**request.run_config["resources"]["target_model"]["config"]).target(home)
    assert target_b.model.revision != target_a.model.revision and target_b.sampling == target_a.sampling
    stale = stale_or_new(problems, labels_a, target_b)
    third, generated = relabel(job, instance, request.run_config, request.tags)
    assert len(stale) == len(problems) == 4 and generated == len(stale) * N
    labels_b = read(home, "pass_rates")
    assert set(labels_b["revision"]) == {target_b.model.revision}
    assert set(read(home, "rollouts")["revision"]) == {target_b.model.revision}

    # The label history has all three versions, with the checkpoint's drift measured independently here.
    history = LabelHistory(home).summaries()
    assert list(history["label_key"]) == [target_a.key, target_a.key, target_b.key]
    old = labels_a.set_index("problem_id")
    new = labels_b.set_index("problem_id").loc[old.index]
    moved = int((strata.observed_class(old["successes"], old["trials"])
                 != strata.observed_class(new["successes"], new["trials"])).sum())
    meta = metadata(third, "difficulty_history")
    assert meta["changed_stratum"] == history["changed_stratum"].iloc[-1] == moved
    assert meta["versions"] == 3 and "| model_id | 4 |" in meta["relabelled_because"]
    assert "previous" in meta["drift"] and third.dagster_run.tags[CHECKPOINT_TAG] == "ckpt-1"

