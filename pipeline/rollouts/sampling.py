"""Drawing rollouts: uniform n per problem, or adaptive rounds that stop once a stratum is settled.

Every round is one large generate call (the engine stays saturated), every finished batch is
persisted before the next starts, and every request already in the store is served from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core.progress import Progress
from pipeline.difficulty.strata import Strata
from pipeline.engines.base import Engine
from pipeline.rollouts.allocation import (
    AllocationConfig,
    PriorsFromFirstRound,
    ProblemPriors,
    check_independent_trials,
    first_round_priors,
    plan_round,
    stop_reason,
)
from pipeline.rollouts.store import COMPACT_PARTS, PromptReader, RolloutStore, missing_requests

Scorer = Callable[[pd.DataFrame], pd.DataFrame]
"""Rewards for a frame of rollouts (needs `problem_id` and `passed` in its output)."""
CountPasses = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Passes per problem (in the pool's row order) among its stored rollouts with
`start <= sample_index < upto`, given (start, upto): the adaptive rounds' outcomes counted where
the store is read (Ray tasks), so the caller never holds a rollout's text."""


@dataclass
class SamplingReport:
    """What a sampling run produced and what it cost."""

    rows: int
    """Rollouts the allocation asked for, all in the store now."""
    allocation: pd.DataFrame
    """Per problem: trials spent, successes seen while allocating, and why sampling stopped."""
    generated: int
    """Rollouts generated in this run (the rest came from the store)."""
    tokens: int
    """Tokens generated in this run."""
    generate_seconds: float
    rounds: int
    priors: ProblemPriors | None = None
    """The per-problem priors allocated under (None: the pool prior for all)."""
    truncated: int = 0
    """Rollouts generated in this run that hit `max_tokens`."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.generate_seconds if self.generate_seconds > 0 else 0.0


def sample_rollouts(
    problems: pd.DataFrame,
    store: RolloutStore,
    engine: Callable[[], Engine],
    allocation: AllocationConfig,
    strata: Strata,
    scorer: Scorer | None = None,
    log: Callable[[str], None] = lambda message: None,
    priors: PriorsFromFirstRound | None = None,
    count_passes: CountPasses | None = None,
    prompts: PromptReader | None = None,
) -> SamplingReport:
    """Make sure each problem has the rollouts its allocation policy asks for; generate only gaps.

    `engine` is called only if something must be generated, so a fully cached run never starts
    one. The adaptive policy needs `scorer` (applied here to the store's batches) or `count_passes`
    to see outcomes between rounds; `priors`, called after its first round, gives per-problem priors
    (`pipeline.rollouts.allocation.ProblemPriors`). `prompts` reads prompts for the requests to
    generate (default: `problems["prompt"]`), so a pool's prompts may stay on disk.
    """
    ids = problems["problem_id"].tolist()
    n = len(ids)
    trials = np.zeros(n, dtype=np.int64)
    successes = np.zeros(n, dtype=np.int64)
    generated = tokens = truncated = rounds = 0
    seconds = 0.0
    checked: ProblemPriors | None = None
    if allocation.policy == "adaptive" and scorer is None and count_passes is None:
        raise ValueError("the adaptive policy needs a scorer to see outcomes between rounds")
    check_independent_trials(allocation, store.sampling)

    # Held for the whole allocation: a second process on the same problems waits, then finds every
    # rollout stored and generates nothing.
    with store.generation_lock(ids):
        while True:
            extra = plan_round(successes, trials, strata, allocation, rng=np.random.default_rng(rounds),
                               priors=checked)
            if extra.sum() == 0:
                break
            rounds += 1
            wanted = trials + extra
            requests = missing_requests(problems, wanted, store.coverage(ids, wanted), prompts)
            log(f"round {rounds}: {int(extra.sum())} rollouts wanted, {len(requests)} to generate")
            if requests:
                started_engine = engine()  # before the clock: a start-up is not generation time
                started = time.perf_counter()
                bar = Progress(f"round {rounds}: generating", len(requests), log, unit="rollouts")

                def progress(done: int, total: int, tok_s: float) -> None:
                    bar.update(done, f"{tok_s:.0f} tok/s")

                made = started_engine.generate_stored(requests, store.sampling, store.append, progress)
                seconds += time.perf_counter() - started
                generated += made.rollouts
                tokens += made.tokens
                truncated += made.truncated
            if count_passes is not None and allocation.policy == "adaptive":
                successes += count_passes(trials, wanted)
            elif scorer is not None and allocation.policy == "adaptive":
                for batch in store.scan(ids, wanted, start=trials, columns=["problem_id", "sample_index", "text"]):
                    scored = scorer(batch.drop_columns(["position"]).to_pandas())
                    positions = batch.column("position").to_numpy()
                    successes += np.bincount(positions, weights=scored["passed"].to_numpy(), minlength=n).astype(np.int64)
            trials = wanted
            if priors is not None and checked is None and allocation.policy == "adaptive":
                checked = first_round_priors(priors, successes, trials, allocation)
                log(f"per-problem priors for {int(checked.informed.sum())} of {n} problems "
                    f"({int(checked.rejected.sum())} contradicted by their first round)")
        if len(store.parts()) > COMPACT_PARTS:
            # Under the generation lock, so this run's own batches are all in; many small parts cost
            # every later reader more than their rows.
            log(f"compacting {len(store.parts())} rollout parts")
            store.compact()

    reasons = stop_reason(successes, trials, strata, allocation, checked) if n else np.array([], dtype=str)
    alloc = pd.DataFrame(
        {
            "problem_id": ids,
            "trials": trials,
            "successes": successes if allocation.policy == "adaptive" else np.full(n, -1),
            "stop_reason": reasons,
        }
    )
    if checked is not None:
        alloc = alloc.assign(prior_source=checked.source if checked.source is not None else "",
                             prior_mean=checked.means(), prior_strength=checked.trials,
                             prior_rejected=checked.rejected)
    return SamplingReport(int(trials.sum()), alloc, generated, tokens, seconds, rounds, checked, truncated)
