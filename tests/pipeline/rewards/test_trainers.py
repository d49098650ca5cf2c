import json

import pytest
import torch

from pipeline.rewards import trainers
from pipeline.rewards.trainers import (
    RewardRow,
    compute_score,
    reward_func,
    row_rewards,
    trainer_config,
    trl_reward,
    trl_reward_function,
)
from pipeline.verify.verification import VERIFIER_VERSION
from tests.pipeline.rewards.conftest import MATH_ROWS, WRONG, stage_rows


def test_every_curriculum_row_scores_its_gold_1_and_a_wrong_answer_0_through_each_entry_point(reward_curriculum):
    rows = stage_rows(reward_curriculum)
    assert len(rows) == 4 * 3 + len(MATH_ROWS)
    assert {r["data_source"] for r in rows} == {"reasoning_gym/products", "reasoning_gym/chain_sum",
                                                "reasoning_gym/basic_arithmetic", "reasoning_gym/gcd",
                                                "dataset/math.jsonl"}
    golds = [f"So the answer is <answer>{r['reward_model']['ground_truth']}</answer>." for r in rows]
    wrongs = [f"So the answer is <answer>{WRONG}</answer>." for _ in rows]
    for texts, expected in ((golds, 1.0), (wrongs, 0.0)):
        verl = [compute_score(r["data_source"], t, r["reward_model"]["ground_truth"], r["extra_info"])
                for r, t in zip(rows, texts)]
        prompt = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
        openrlhf = [reward_func([prompt + t], [prompt], [r["extra_info"]])["rewards"].item() for r, t in zip(rows, texts)]
        trl = trl_reward(prompts=[r["prompt"] for r in rows], completions=[[{"role": "assistant", "content": t}]
                                                                          for t in texts],
                         reward_model=[r["reward_model"] for r in rows], extra_info=[r["extra_info"] for r in rows])
        assert verl == openrlhf == trl == [expected] * len(rows)


def test_rows_say_how_they_were_labelled(reward_curriculum):
    row = next(r for r in stage_rows(reward_curriculum) if r["data_source"] == "reasoning_gym/gcd")
    info = row["extra_info"]
    assert info["extraction_policy"] == "auto" and info["verifier_version"] == VERIFIER_VERSION
    assert info["ground_truth"] == row["reward_model"]["ground_truth"]
    assert json.loads(info["metadata"])["source_dataset"] == row["data_source"].removeprefix("reasoning_gym/")


def math_row(policy: str, gold: str = "12") -> dict:
    return {"verifier": "math", "metadata": "{}", "extraction_policy": policy, "verifier_version": VERIFIER_VERSION,
            "ground_truth": gold}


def test_the_row_extraction_policy_is_the_one_applied_and_data_source_routes_nothing():
    # The same completion passes under last_number and fails under answer_tag: the row decides.
    assert compute_score("openai/gsm8k", "The answer is 12.", "12", math_row("last_number")) == 1.0
    assert compute_score("openai/gsm8k", "The answer is 12.", "12", math_row("answer_tag")) == 0.0
    row = RewardRow.of("12", math_row("answer_tag"), policy="last_number")
    assert row.extraction_policy == "last_number" and row_rewards(["The answer is 12."], [row]) == [1.0]


def test_a_row_without_its_labelling_settings_is_refused():
    with pytest.raises(ValueError, match="extra_info lacks verifier, metadata, extraction_policy.*Rebuild"):
        compute_score("src", "12", "12", {"problem_id": "p"})
    with pytest.raises(ValueError, match="extra_info lacks extraction_policy"):
        compute_score("src", "12", "12", {"verifier": "math", "metadata": "{}"})
    assert RewardRow.of("12", {"verifier": "math", "metadata": "{}"}, policy="full").extraction_policy == "full"


def test_another_verifier_version_is_warned_about_once(monkeypatch):
    monkeypatch.setattr(trainers, "_warned_versions", set())
    old = {**math_row("last_number"), "verifier_version": "gradus-verify/0"}
    with pytest.warns(RuntimeWarning, match="labelled with gradus-verify/0"):
        assert compute_score("src", "12", "12", old) == 1.0
    with pytest.warns() as seen:
        compute_score("src", "12", "12", old)
        import warnings
        warnings.warn("sentinel", UserWarning)
    assert [str(w.message) for w in seen] == ["sentinel"]


def test_openrlhf_gets_its_dict_of_tensors_and_a_foreign_query_is_refused():
    out = reward_func(["Q: 6*2? A: 12"], ["Q: 6*2? A:"], [math_row("last_number")])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].tolist() == [1.0]
    # The prompt holds a 12 too: it must never be read as the response's answer.
    with pytest.raises(ValueError, match="does not start with its prompt"):
        reward_func(["reformatted 12"], ["Q: 6*2? A:"], [math_row("last_number")])


def test_trl_reward_function_books_each_batch_with_the_other_columns(verifier_pool):
    booked = []
    reward = trl_reward_function(verifier_pool, "last_number", lambda rewards, columns: booked.append((rewards, columns)))
    got = reward(prompts=["a", "b"], completions=["12", "13"], reward_model=[{"ground_truth": "12"}] * 2,
                 extra_info=[math_row("answer_tag")] * 2, row=[4, 5])
    assert got == [1.0, 0.0] and booked == [([1.0, 0.0], {"row": [4, 5]})]


def test_trainer_config_lines():
    config = trainer_config(["/c/stage_1.parquet", "/c/stage_2.parquet"], 8, 32, 57)
    assert config["verl"] == [
        "'data.train_files=[/c/stage_1.parquet,/c/stage_2.parquet]'", "data.shuffle=False",
        "reward.custom_reward_function.path=pkg://pipeline.rewards.trainers",
        "reward.custom_reward_function.name=compute_score", "actor_rollout_ref.rollout.n=8",
        "data.train_batch_size=32", "algorithm.filter_groups.enable=True", "data.gen_batch_size=57"]
    assert "--data.label_key extra_info" in config["openrlhf"] and "--rollout.n_samples_per_prompt 8" in config["openrlhf"]
    assert config["trl"][0] == "from pipeline.rewards.trainers import trl_reward"
    assert trainer_config(["/c/stage_1.parquet"])["verl"][-1] == "reward.custom_reward_function.name=compute_score"


def test_openrlhf_loads_the_module_file_as_its_own_module():
    # OpenRLHF 0.11's loader (openrlhf/utils/agent.py): a module named reward_func, not in sys.modules.
    import importlib.util

    spec = importlib.util.spec_from_file_location("reward_func", trainers.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.reward_func(["Q: 6*2? A: 12"], ["Q: 6*2? A:"], [math_row("last_number")])
    assert out["rewards"].tolist() == [1.0]
