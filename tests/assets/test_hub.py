"""`hub_curriculum` through Dagster: dry run by default, pushes through an injected client, and the
token never reaches the run's records."""

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import pandas as pd
import pytest
from dagster import EnvVar, SourceAsset, instance_for_test, materialize, serialize_value

from assets.curriculum import curriculum
from assets.deployment import resources as gradus_resources
from assets.hub import hub_curriculum
from assets.hygiene import contamination, evaluation_problems, unique_problems
from assets.resources import HubPublisher, TargetModel
from pipeline.core.model import ModelSpec, write_marker
from pipeline.core.records import Problem
from pipeline.core.storage import StorageLayout
from pipeline.engines.base import SamplingConfig
from pipeline.labels.pass_rates import LabelTarget, pass_rates
from pipeline.verify.verification import VERIFIER_VERSION
from tests.pipeline.export.test_hub import FakeHub

SECRET = "hf_SeCrEt0123456789abcdefTOKEN"
current = SimpleNamespace(hub=None, token=None)


class RecordingPublisher(HubPublisher):
    """The real resource with the Hub client swapped for a recording fake."""

    def client(self):
        current.token = self.token
        return current.hub


@pytest.fixture
def labelled(home, tmp_path):
    """A tiny model folder (with a recorded id and revision) and stored problems and pass rates."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    write_marker(model, "org/tiny", "r1")
    target = LabelTarget(ModelSpec(str(model), "org/tiny", "r1"), SamplingConfig(), VERIFIER_VERSION)
    problems = Problem.to_frame([
        Problem(Problem.make_id([{"role": "user", "content": f"{i}+1?"}], str(i + 1)), "reasoning_gym/chain_sum",
                [{"role": "user", "content": f"{i}+1?"}], str(i + 1), "reasoning_gym", f"chain_sum/level_{i % 2}")
        for i in range(6)
    ])
    outcomes = [[True, True, True, False], [True, False, False, False], [True, True, False, False]] * 2
    rewards = pd.DataFrame([(pid, p) for pid, o in zip(problems["problem_id"], outcomes) for p in o],
                           columns=["problem_id", "passed"])
    for name, frame in (("problems", problems), ("pass_rates", pass_rates(rewards, target))):
        path = StorageLayout(str(home)).asset([name])
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
    return model


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def export(home, model, instance, hub, config=None):
    assets = [SourceAsset("problems"), SourceAsset("pass_rates"), SourceAsset("predicted_difficulty"),
              unique_problems, evaluation_problems, contamination, curriculum, hub_curriculum]
    resources = gradus_resources({"GRADUS_HOME": str(home), "GRADUS_MODEL_PATH": str(model)}, hub=hub)
    run_config = {"ops": {"curriculum": {"config": {"name": "nightly"}}, **(config or {})}}
    return materialize(assets, resources=resources, instance=instance, run_config=run_config, raise_on_error=False)


def hub_metadata(result):
    [event] = result.asset_materializations_for_node("hub_curriculum")
    return {k: v.value for k, v in event.metadata.items()}


def test_dry_run_builds_the_folder_of_the_latest_curriculum_and_uploads_nothing(home, labelled, instance):
    current.hub = FakeHub()
    result = export(home, labelled, instance, RecordingPublisher(repo_id="me/cur"))
    assert result.success
    meta = hub_metadata(result)
    folder = home / "hub" / "nightly"
    assert meta["dry_run"] is True and meta["path"] == str(folder)
    assert meta["configs"] == ["all", "stage_1", "stage_2", "stage_3"]
    assert "data/stage_1/train-00000-of-00001.parquet" in meta["files"] and "README.md" in meta["files"]
    assert "org/tiny" in meta["card"] and meta["license"] == "apache-2.0"
    assert current.hub.calls == []
    stage = datasets.load_dataset(str(folder), "stage_2", split="train", cache_dir=str(home / "hf_cache"))
    assert len(stage) == 2 and set(stage["pass_rate"]) == {0.5}


def scan_for(secret: str, instance, result, home: Path) -> list[str]:
    """Every place the run left a record of `secret`: event log entries, the run (config, tags), and
    any file the instance or gradus wrote."""
    found = [f"event {e.dagster_event_type}" for e in instance.all_logs(result.run_id) if secret in serialize_value(e)]
    if secret in serialize_value(instance.get_run_by_id(result.run_id)):
        found.append("run record")
    roots = [Path(instance.root_directory), home]
    found += [str(p) for root in roots for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    return found


def test_publish_pushes_through_the_client_and_never_records_the_token(home, labelled, instance, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    current.hub = FakeHub()
    hub = RecordingPublisher(repo_id="me/cur", dry_run=False, revision="v1", token=EnvVar("HF_TOKEN"))
    result = export(home, labelled, instance, hub)
    assert result.success
    assert current.token == SECRET  # the token did reach the client ...
    assert current.hub.names() == ["repo_exists", "create_repo", "create_branch", "upload_folder"]
    upload = current.hub.calls[-1][2]
    assert upload["repo_id"] == "me/cur" and upload["revision"] == "v1"
    assert upload["folder_path"] == str(home / "hub" / "nightly")
    meta = hub_metadata(result)
    assert meta["commit"] == "c0ffee" and meta["revision"] == "v1" and meta["created_repo"] is True
    assert scan_for(SECRET, instance, result, home) == []  # ... and nowhere else,
    assert scan_for("me/cur", instance, result, home)  # though the scan does see what the run recorded


def test_a_failed_push_neither_overwrites_nor_leaks_the_token(home, labelled, instance, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    current.hub = FakeHub(existing={"me/cur"})
    hub = RecordingPublisher(repo_id="me/cur", dry_run=False, token=EnvVar("HF_TOKEN"))
    refused = export(home, labelled, instance, hub)
    assert not refused.success and "upload_folder" not in current.hub.names()
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert "already exists" in str(failure.step_failure_data.error)

    class LeakyHub(FakeHub):  # a client whose error message quotes the token
        def answer(self, name, *args, **kwargs):
            if name == "upload_folder":
                raise RuntimeError(f"401 for Authorization: Bearer {SECRET}")
            return super().answer(name, *args, **kwargs)

    current.hub = LeakyHub()
    failed = export(home, labelled, instance, RecordingPublisher(repo_id="me/cur", dry_run=False, overwrite=True,
                                                                 token=EnvVar("HF_TOKEN")))
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert "Bearer ***" in str(failure.step_failure_data.error)
    assert scan_for(SECRET, instance, failed, home) == []


def test_a_curriculum_of_labels_made_at_other_settings_is_refused(home, labelled, instance):
    """Labels measured at T = 0.8, target_model now at T = 0.2: the manifest (and the card after it)
    would claim T = 0.2, so the build stops and says how to fix it."""
    assets = [SourceAsset("problems"), SourceAsset("pass_rates"), SourceAsset("predicted_difficulty"),
              unique_problems, evaluation_problems, contamination, curriculum]
    changed = TargetModel(model_path=str(labelled), temperature=0.2, max_tokens=512)
    result = materialize(assets, instance=instance, raise_on_error=False,
                         resources=gradus_resources({"GRADUS_HOME": str(home)}, target_model=changed))
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "rematerialize pass_rates" in failure.step_failure_data.error.cause.message
    assert not (StorageLayout(str(home)).curriculum("default") / "manifest.json").exists()


def test_a_curriculum_read_under_another_extraction_policy_is_refused(home, labelled, instance):
    """Labels measured with `auto`, the curriculum re-materialized alone with `answer_tag`: its manifest
    would hand the trainer a reward policy under which these problems were never solved."""
    assets = [SourceAsset("problems"), SourceAsset("pass_rates"), SourceAsset("predicted_difficulty"),
              unique_problems, evaluation_problems, contamination, curriculum]
    changed = TargetModel(model_path=str(labelled), extraction_policy="answer_tag")
    result = materialize(assets, instance=instance, raise_on_error=False,
                         resources=gradus_resources({"GRADUS_HOME": str(home)}, target_model=changed))
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    assert "extraction_policy auto → answer_tag" in message and "rematerialize pass_rates" in message
    assert not (StorageLayout(str(home)).curriculum("default") / "manifest.json").exists()
