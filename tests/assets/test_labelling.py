"""The labelling assets (`rollouts`, `rewards`, `pass_rates`) on the tiny random Llama with the
transformers engine: the counts each policy asks for, the check, and the label key."""

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from assets.deployment import resources
from assets.jobs import all_assets, probe_assets
from assets.resources import TargetModel, TransformersEngineResource
from pipeline.core.storage import StorageLayout
from pipeline.rollouts.handles import read_handle

LABELLING = ["problems", "quarantined_problems", "unique_problems", "duplicate_problems", "rollouts",
             "rollout_allocation", "rewards", "pass_rates"]
PROBLEMS = {"generators": [{"name": "chain_sum", "levels": [0, 1], "size_per_level": 2}]}


@pytest.fixture
def label(home, tiny_llama):
    def run(rollouts: dict):
        deployed = resources({"GRADUS_HOME": str(home)}, engine=TransformersEngineResource(batch_size=8),
                             target_model=TargetModel(model_path=tiny_llama.path, max_tokens=4))
        with DagsterInstance.ephemeral() as instance:
            result = materialize(all_assets + probe_assets, selection=LABELLING, resources=deployed,
                                 instance=instance, run_config={"ops": {"problems": {"config": PROBLEMS},
                                                                        "rollouts": {"config": rollouts}}})
            logs: dict[str, list[str]] = {}
            for entry in instance.all_logs(result.run_id):
                if entry.dagster_event is None and entry.step_key:  # what the steps logged
                    logs.setdefault(entry.step_key, []).append(entry.user_message)
        layout = StorageLayout(str(home))
        frames = {name: pd.read_parquet(layout.asset([name])) for name in ("rollout_allocation", "pass_rates")}
        # rollouts and rewards are dataset handles: their rows stay on disk
        frames |= {name: read_handle(layout.handle([name])).to_frame() for name in ("rollouts", "rewards")}
        return result, frames, logs

    return run


def test_uniform_policy_gives_every_problem_samples_per_problem(label, tiny_llama, home):
    result, frames, logs = label({"samples_per_problem": 3})
    assert result.success
    assert frames["rollouts"].groupby("problem_id").size().tolist() == [3] * 4
    assert frames["rollout_allocation"]["trials"].tolist() == [3] * 4
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "rollouts_match_allocation"]
    assert check.passed
    assert len(frames["rewards"]) == 12 and not frames["rewards"]["passed"].any()  # random weights: noise
    rates = frames["pass_rates"]
    assert rates["trials"].tolist() == [3] * 4 and (rates["pass_rate"] == 0).all()
    assert rates["label_key"].str.startswith(TargetModel(model_path=tiny_llama.path).spec(home).key + "/").all()
    meta = {m.asset_key.path[0]: m.metadata for m in result.asset_materializations_for_node("rollouts")}
    assert meta["rollout_allocation"]["uniform_equivalent"].value == 12
    assert meta["rollouts"]["generated"].value == 12
    # What the UI's step log shows of long steps: done/total, rate and ETA lines.
    def progress(step: str, label: str) -> list[str]:
        return [line for line in logs[step] if line.startswith(label) and "/s, elapsed" in line and "ETA" in line]

    assert progress("rewards", "verifying: 12/12 answers (100%)")
    assert progress("rollouts.sample_shard[0]", "round 1: generating: 12/12 rollouts (100%)")
    assert progress("pass_rates", "counting passes: 12/12 rewards (100%)")
    assert progress("pass_rates", "counting truncations: 12/12 rollouts (100%)")
    [rewards] = result.asset_materializations_for_node("rewards")
    assert rewards.metadata["resumed_rows"].value == 0 and rewards.metadata["rows"].value == 12


def test_pass_rates_count_the_rollouts_cut_at_the_token_cap_and_warn(label):
    result, frames, _ = label({"samples_per_problem": 3})
    cut = frames["rollouts"].assign(cut=frames["rollouts"]["finish_reason"] == "length").groupby("problem_id")["cut"]
    rates = frames["pass_rates"].set_index("problem_id")
    assert rates["truncated"].tolist() == cut.sum().tolist()
    assert rates["truncated_failures"].tolist() == cut.sum().tolist()  # every rollout fails (random weights)
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "rollouts_rarely_hit_token_cap"]
    # Four tokens of a random model: every rollout (seeded, so every run) is cut.
    assert rates["truncated"].tolist() == [3] * 4
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["max_tokens"].value == 4 and check.metadata["truncated"].value == 12
    assert "Raise target_model's max_tokens" in check.description


def test_adaptive_policy_runs_unsettled_problems_to_max_samples(label):
    # Every rollout fails and the pool is too small to fit a prior, so no problem settles early.
    result, frames, _ = label({"policy": "adaptive", "min_samples": 2, "max_samples": 4, "batch_per_problem": 2})
    assert result.success
    alloc = frames["rollout_allocation"]
    assert alloc["trials"].tolist() == [4] * 4 and set(alloc["stop_reason"]) == {"max_samples"}
    assert frames["rollouts"].groupby("problem_id").size().tolist() == [4] * 4


def test_rewards_are_a_dataset_replaced_whole_on_a_rerun(label, home):
    label({"samples_per_problem": 2})
    layout = StorageLayout(str(home))
    first = read_handle(layout.handle(["rewards"]))
    assert first.kind == "parts" and first.rows == 8 and first.parts()
    assert {p.name for p in layout.dataset(["rewards"]).iterdir()} == {
        name for p in first.parts() for name in (p.name, p.name + ".sha256")}
    result, frames, _ = label({"samples_per_problem": 3})
    again = read_handle(layout.handle(["rewards"]))
    assert again.rows == 12 and len(frames["rewards"]) == 12
    assert not [p for p in layout.dataset([]).iterdir() if p.name.startswith(".")]  # no staging left behind
    rollouts = read_handle(layout.handle(["rollouts"]))
    assert rollouts.kind == "rollouts" and rollouts.rows == 12 and rollouts.label_key in again.label_key
