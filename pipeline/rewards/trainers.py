"""The reward a curriculum's labels were measured with, in each trainer's calling convention.

A problem's difficulty is only meaningful under the reward the trainer uses, so every entry point
here reads what labelled the row from its `extra_info` (verifier, extraction policy, the
generator's metadata) and asks gradus's verifier for the verdict: 1.0 when it passes, else 0.0.
`data_source` is never used for routing (verl's default router knows only its own datasets).

- verl: `compute_score`, loaded with `reward.custom_reward_function.path=pkg://pipeline.rewards.trainers`
  and `reward.custom_reward_function.name=compute_score` (the file path of this module works too);
- TRL: `trl_reward` for `GRPOTrainer(reward_funcs=[trl_reward])` on a stage's rows, or
  `trl_reward_function(pool)` for one on a pool of your own;
- OpenRLHF: `reward_func` for `--remote_rm_url <this file> --label_key extra_info`.

This module imports only the verifier (no dagster, no pandas), so a trainer's process needs gradus
importable (`pip install --no-deps -e <gradus>`, or `PYTHONPATH=<gradus>`) plus math-verify and
reasoning-gym at the versions gradus pins.

Verdicts come from one verifier worker per process, started on first use (math-verify's timeouts
work only on a main thread; verl and OpenRLHF call rewards from executor threads). Calls are
serialised: a `VerifierPool` serves one caller at a time. Its workers come from a fork server,
which re-imports a script's main module: call these from code under `if __name__ == "__main__":`
(trainers' own entry points are).
"""

# No `from __future__ import annotations`: OpenRLHF and verl may exec this file as a module of
# their own that is not in sys.modules, where dataclasses cannot resolve string annotations.
import atexit
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.verify.extraction import extract_answer
from pipeline.verify.verification import VERIFIER_VERSION, VerificationTask, VerifierPool, VerifierSpec

ROW_KEYS = ("verifier", "metadata", "extraction_policy")
"""What a row's `extra_info` must say for its reward to be the labels' one."""

_lock = threading.Lock()
_shared: tuple[int, VerifierPool] | None = None
_warned_versions: set[str] = set()


@dataclass(frozen=True)
class RewardRow:
    """What the reward of one curriculum row needs: its gold answer and how it was labelled."""

    ground_truth: str
    verifier: str
    metadata: str
    """The problem's source metadata as canonical JSON (a reasoning-gym entry names its generator)."""
    extraction_policy: str

    @classmethod
    def of(cls, ground_truth: str, extra_info: Mapping[str, Any] | None, policy: str | None = None) -> "RewardRow":
        """The row's reward settings from its `extra_info` (`policy` overrides its extraction
        policy), refused when they are not there: a guessed verifier or policy would be another
        reward than the labels'."""
        info = {**(extra_info or {}), **({"extraction_policy": policy} if policy else {})}
        missing = [k for k in ROW_KEYS if info.get(k) is None]
        if missing:
            raise ValueError(
                f"extra_info lacks {', '.join(missing)}: not a row of a gradus curriculum built with its "
                "provenance. Rebuild the curriculum with the `curriculum` asset, whose rows record how they were "
                "labelled"
            )
        version = info.get("verifier_version")
        if version and version != VERIFIER_VERSION and version not in _warned_versions:
            _warned_versions.add(version)
            warnings.warn(
                f"this row was labelled with {version}, this process verifies with {VERIFIER_VERSION}: rewards "
                "may differ from the labelled pass rates. Install the labels' math-verify and reasoning-gym "
                "versions, or relabel with these", RuntimeWarning, stacklevel=3)
        return cls(str(ground_truth), str(info["verifier"]), str(info["metadata"]), str(info["extraction_policy"]))


def shared_pool() -> VerifierPool:
    """This process's verifier pool, started on first use with one worker (and again in a forked
    child, whose parent's workers are not its own); closed when the process exits."""
    global _shared
    with _lock:
        if _shared is None or _shared[0] != os.getpid():
            pool = VerifierPool(workers=1, timeout_s=VerifierSpec.timeout_s)
            atexit.register(pool.close)
            _shared = (os.getpid(), pool)
        return _shared[1]


def row_rewards(completions: Sequence[str], rows: Sequence[RewardRow], pool: VerifierPool | None = None) -> list[float]:
    """1.0 for each completion whose answer, read with its row's extraction policy, the row's
    verifier passes; else 0.0 (`pool`: default this process's shared one)."""
    tasks = [VerificationTask(row.verifier, row.ground_truth,
                              extract_answer(text, row.extraction_policy, verifier=row.verifier), row.metadata)
             for text, row in zip(completions, rows, strict=True)]
    pool = pool or shared_pool()
    with _lock:
        verdicts = pool.verify_many(tasks)
    return [1.0 if v.passed else 0.0 for v in verdicts]


def compute_score(data_source: str, solution_str: str, ground_truth: str,
                  extra_info: Mapping[str, Any] | None = None, **_: Any) -> float:
    """verl's custom reward (`reward.custom_reward_function`): the labels' verdict on one response.
    `data_source` only says where the row came from."""
    return row_rewards([solution_str], [RewardRow.of(ground_truth, extra_info)])[0]


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Mapping[str, Any]],
                **_: Any) -> dict[str, Any]:
    """OpenRLHF's remote reward file (`--remote_rm_url`, OpenRLHF 0.11: a dict of `rewards` and
    `scores` tensors and `extra_logs`). Run with `--label_key extra_info`: each label is a row's
    `extra_info`, which carries its `ground_truth`. A query is its prompt followed by the response."""
    import torch

    responses = []
    for query, prompt in zip(queries, prompts, strict=True):
        if not query.startswith(prompt):
            # Reading the answer out of the whole query could find the prompt's own numbers.
            raise ValueError("an OpenRLHF query does not start with its prompt: cannot tell the response apart")
        responses.append(query[len(prompt):])
    rows = [RewardRow.of(label["ground_truth"], label) for label in labels]
    rewards = torch.tensor(row_rewards(responses, rows), dtype=torch.float)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """A completion as text: TRL passes chat completions as a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role") == "assistant")


def trl_reward_function(pool: VerifierPool | None = None, policy: str | None = None,
                        on_batch: Callable[[list[float], dict[str, Any]], None] | None = None
                        ) -> Callable[..., list[float]]:
    """A TRL reward function (`GRPOTrainer(reward_funcs=[...])`) over a stage's rows: TRL hands it
    the rows' `reward_model` and `extra_info` columns. `pool`: verify there (default: this
    process's shared pool); `policy` overrides the rows' extraction policy; `on_batch(rewards,
    columns)` sees each batch with the rows' other columns."""

    def gradus_reward(prompts: list[Any], completions: list[Any], reward_model: list[Mapping[str, Any]],
                      extra_info: list[Mapping[str, Any]], **columns: Any) -> list[float]:
        rows = [RewardRow.of(r["ground_truth"], e, policy) for r, e in zip(reward_model, extra_info, strict=True)]
        rewards = row_rewards([completion_text(c) for c in completions], rows, pool)
        if on_batch is not None:
            on_batch(rewards, columns)
        return rewards

    return gradus_reward


trl_reward = trl_reward_function()
"""The TRL reward on the shared pool, with each row's own extraction policy."""


def trainer_config(train_files: Sequence[str], group_size: int | None = None, train_batch_size: int | None = None,
                   generation_batch_size: int | None = None) -> dict[str, list[str]]:
    """Each trainer's settings for training on `train_files` (the stage files, easiest first) with
    these rewards; with the group sizes, the settings of its group filter too."""
    verl = [
        f"'data.train_files=[{','.join(train_files)}]'",
        "data.shuffle=False",  # verl then reads the files in order: a fixed curriculum
        f"reward.custom_reward_function.path=pkg://{__name__}",
        "reward.custom_reward_function.name=compute_score",
    ]
    openrlhf = [
        "--data.input_key prompt", "--data.apply_chat_template", "--data.label_key extra_info",
        f"--reward.remote_url $(python -c 'import {__name__} as m; print(m.__file__)')",
    ]
    if group_size and train_batch_size:
        verl += [f"actor_rollout_ref.rollout.n={group_size}", f"data.train_batch_size={train_batch_size}",
                 "algorithm.filter_groups.enable=True"]
        verl += [f"data.gen_batch_size={generation_batch_size}"] if generation_batch_size else []
        openrlhf += [f"--rollout.n_samples_per_prompt {group_size}", "--algo.dynamic_filtering_enable",
                     "--algo.dynamic_filtering_range 0 1"]
    # OpenRLHF samples its prompt data shuffled: one run per stage, each from the last one's checkpoint.
    openrlhf += [f"--data.prompt_dataset {file}" for file in train_files[:1]]
    trl = [
        f"from {__name__} import trl_reward",
        "GRPOTrainer(model, reward_funcs=[trl_reward], train_dataset=stage, ...)  # one stage's rows, in order",
    ]
    return {"verl": verl, "trl": trl, "openrlhf": openrlhf}
