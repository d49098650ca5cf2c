"""Run by tests/pipeline/rewards/test_verl.py with the verl venv's python (verl 0.9.1), this checkout
on PYTHONPATH: verl's own loader loads gradus's reward, verl's `RLHFDataset` and sampler read the
curriculum's stage files in order, and every row scores its gold 1 and a wrong answer 0.

    python verl_side.py MANIFEST TOKENIZER_DIR WRONG_JSON REWARD_FILE   # WRONG_JSON: {problem_id: wrong answer}

Prints one JSON object on its last line."""

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.trainer.ppo.utils import create_rl_sampler
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.reward_score import default_compute_score


def main() -> None:
    manifest_path, tokenizer_dir, wrong_path, reward_file = sys.argv[1:5]
    manifest = json.loads(Path(manifest_path).read_text())
    wrong = json.loads(Path(wrong_path).read_text())
    overrides = dict(line.strip("'").split("=", 1) for line in manifest["trainers"]["verl"])
    files = overrides["data.train_files"].strip("[]").split(",")

    loaded = {}
    for path in (overrides["reward.custom_reward_function.path"], reward_file):
        config = OmegaConf.create({"reward": {"custom_reward_function": {
            "path": path, "name": overrides["reward.custom_reward_function.name"]}}})
        loaded[path] = get_custom_reward_fn(config)

    data_config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1024, "filter_overlong_prompts": True,
                                    "filter_overlong_prompts_workers": 1, "shuffle": overrides["data.shuffle"] == "True",
                                    "cache_dir": str(Path(manifest_path).parent / "verl-cache")})
    dataset = RLHFDataset(files, AutoTokenizer.from_pretrained(tokenizer_dir), data_config)
    order, gold_scores, wrong_scores, routed = [], {}, {}, set()
    for index in create_rl_sampler(data_config, dataset):
        row = dataset[index]
        info, truth = row["extra_info"], row["reward_model"]["ground_truth"]
        order.append(info["problem_id"])
        for path, fn in loaded.items():
            gold_scores.setdefault(path, []).append(fn(data_source=row["data_source"], solution_str=f"<answer>{truth}</answer>",
                                                       ground_truth=truth, extra_info=info))
            wrong_scores.setdefault(path, []).append(fn(data_source=row["data_source"],
                                                        solution_str=f"<answer>{wrong[info['problem_id']]}</answer>",
                                                        ground_truth=truth, extra_info=info))
        try:
            default_compute_score(row["data_source"], truth, truth, info)
        except NotImplementedError:
            routed.add(row["data_source"])
    print(json.dumps({
        "order": order, "gold": gold_scores, "wrong": wrong_scores, "default_router_refuses": sorted(routed),
        "raw_prompt": dataset[0]["raw_prompt"], "dagster_imported": "dagster" in sys.modules,
        "reward_module": sys.modules["pipeline.rewards.trainers"].__file__,
    }))


# Verifier workers start from a fork server that re-imports this script: only run it as a script.
if __name__ == "__main__":
    main()
