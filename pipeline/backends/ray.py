"""The Ray backend: generation in a pool of engine actors kept for a whole run, verification as
Ray tasks, both against the same content-addressed rollout store as the local backend.

The calling process (a Dagster step) only joins the cluster as a driver and submits work, so it
never holds a GPU. Each engine actor writes every batch it finishes into the rollout store itself
and returns counts only, so the store must be a folder every node sees at the same path. A killed
actor is restarted by Ray and its span retried; a batch written twice (killed after the write) is
deduplicated by the store (the first part wins, and a retry reproduces the same text anyway).

Ray is imported here only inside functions, and this module only when the backend is `ray`: the
default install and the default run never touch it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import pipeline
from pipeline.core.model import ModelSpec
from pipeline.core.records import Reward
from pipeline.engines.base import Completion, Engine, GenerationRequest, GenerationTally, Progress, SamplingConfig
from pipeline.engines.factory import EngineOptions, start_engine
from pipeline.rollouts.store import RolloutStore
from pipeline.verify.scoring import score_rollouts
from pipeline.verify.verification import VerifierSpec

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class BackendSpec:
    """Where generation and verification run: in the step's own process (local) or on a Ray cluster."""

    kind: str = field(default="local", metadata={
        "help": "local: generate and verify in the step's own process; ray: on the Ray cluster at "
                "`ray_address` ($GRADUS_BACKEND)"})
    ray_address: str = field(default="", metadata={
        "help": "the cluster to join ($RAY_ADDRESS): `host:6379` of a head node, `ray://host:10001` for "
                "Ray Client, `auto` for the cluster this machine belongs to; empty starts Ray on this machine"})
    actors: int = field(default=0, metadata={
        "help": "engine actors, one engine each (data parallel): 0 = one per `gpus_per_actor` GPUs of "
                "the cluster, or one per node on a cluster without GPUs"})
    gpus_per_actor: float = field(default=0.0, metadata={
        "help": "GPUs each engine actor reserves (0: vLLM's tensor_parallel_size when the cluster has "
                "GPUs, none otherwise)"})
    cpus_per_actor: float = field(default=1.0, metadata={
        "help": "CPUs each engine actor reserves (Ray sets the actor's thread count from it)"})
    verify_chunk: int = field(default=4096, metadata={
        "help": "rollouts per verification task; each task runs its own verifier pool"})

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise ValueError(f"backend {self.kind!r}: use one of {', '.join(BACKENDS)} (GRADUS_BACKEND)")
        if self.actors < 0 or self.gpus_per_actor < 0 or self.cpus_per_actor <= 0:
            raise ValueError("actors and gpus_per_actor must be >= 0 and cpus_per_actor > 0")
        if self.verify_chunk < 1:
            raise ValueError(f"verify_chunk must be >= 1, got {self.verify_chunk}")


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a driver joined, for logs and Dagster metadata."""

    address: str
    nodes: int
    cpus: float
    gpus: float


def connect(spec: BackendSpec) -> ClusterInfo:
    """Join the cluster (once per process) and describe it. The `pipeline` package travels with the
    job (`py_modules`), so workers run the driver's code; its dependencies must be installed there."""
    import ray

    if not ray.is_initialized():
        try:
            ray.init(
                address=spec.ray_address or None,
                runtime_env={"py_modules": [os.path.dirname(pipeline.__file__)],
                             "env_vars": {"PYTHONWARNINGS": "ignore::DeprecationWarning"}},
                logging_level="WARNING",
                log_to_driver=False,
            )
        except ConnectionError as exc:
            raise ConnectionError(
                f"cannot join the Ray cluster at {spec.ray_address or '$RAY_ADDRESS'!r}: {exc}. Start one "
                "(`ray start --head`) or fix RAY_ADDRESS / the backend resource's ray_address"
            ) from exc
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # Ray Client (ray://) drivers have no GCS address of their own
        address = spec.ray_address
    return ClusterInfo(address, len(nodes),
                       float(total.get("CPU", 0)), float(total.get("GPU", 0)))


def shared_store_root(store: RolloutStore) -> str:
    """The store's folder, refusing what engine actors could not write into. The rollout store
    is a local-filesystem folder today: on a multi-node cluster that folder must be one shared
    filesystem (NFS, a cloud file share, a ReadWriteMany volume) mounted at the same path everywhere."""
    home = str(store.home)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", home):
        raise ValueError(
            f"GRADUS_HOME={home!r} is a URL: the rollout store writes to a filesystem path only. Mount the "
            "bucket or share at the same path on the driver and every Ray node, and point GRADUS_HOME there"
        )
    return str(store.root)


SPAN_BATCHES = 4
"""Engine batches per actor call. The vLLM engine keeps a window of requests running across its
batches within a call but drains it at a call's end, and each call is one hand-off: spans of a few
batches pay both rarely, yet a retried span (its actor killed) redoes little."""


class _EngineActor:
    """One engine per actor, started once and kept for every round of a run: generates spans of
    requests, stores each finished batch, and returns only counts (the text stays in the store)."""

    def __init__(self, options: EngineOptions, model: ModelSpec, home: str, root: str,
                 sampling: SamplingConfig) -> None:
        started = time.time()
        for path, what in ((Path(root) / "sampling.json", "rollout store"), (Path(model.path), "model folder")):
            if not path.exists():
                raise FileNotFoundError(
                    f"the {what} {path} is not visible on this Ray node: GRADUS_HOME and the model "
                    "must be on a filesystem every node mounts at the same path")
        if options.kind == "vllm":
            # In-process engine core: an engine child process would outlive a killed actor.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        self.store = RolloutStore(Path(home), model, sampling, engine=options.kind)
        self.engine = start_engine(options, model)
        self.sampling = sampling
        import ray

        context = ray.get_runtime_context()
        self.actor = f"{context.get_node_id()[:8]}/{os.getpid()}"
        self.ready_at = time.time()
        self.start_s = self.ready_at - started

    def generate(self, requests: list[GenerationRequest]) -> dict[str, Any]:
        """A span that starts on a multiple of the engine's batch size, so the engine cuts it into
        the batches the local backend makes (the transformers engine seeds a batch from its requests)."""
        made = self.engine.generate_stored(requests, self.sampling, self.store.append)
        return {"tally": made, "actor": self.actor, "ready_at": self.ready_at, "start_s": self.start_s}

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


@dataclass
class GenerationStats:
    """What the last Ray generation did: for logs and Dagster metadata."""

    cluster: ClusterInfo
    actors: int = 0
    """Actor pool size asked for."""
    actors_used: int = 0
    """Distinct actor processes that returned spans (more than `actors` after a restart)."""
    rows: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    engine_start_s: float = 0.0
    generate_s: float = 0.0
    """From the first engine ready (or this call's start, for engines started in an earlier
    round) to the last span back: throughput without start-up."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.generate_s if self.generate_s > 0 else 0.0

    def metadata(self) -> dict[str, Any]:
        return {
            "ray_address": self.cluster.address,
            "ray_nodes": self.cluster.nodes,
            "ray_actors": self.actors,
            "ray_actor_processes": self.actors_used,
            "ray_generated": self.rows,
            "ray_tokens_per_second": round(self.tokens_per_second, 1),
            "ray_engine_start_s": round(self.engine_start_s, 1),
            "ray_wall_s": round(self.wall_s, 1),
        }


class RayEngine(Engine):
    """An `Engine` whose generation runs on a Ray cluster, in a pool of engine actors started on
    first use and kept until `close` (every adaptive round of a run shares it). The actors write
    each batch into the store and hand the driver counts only, so the driver's memory does not
    grow with the rollouts; a killed actor is restarted and its span retried (the store keeps the
    first copy of a batch written twice)."""

    name = "ray"

    def __init__(self, spec: BackendSpec, options: EngineOptions, store: RolloutStore) -> None:
        super().__init__(store.model)
        self.spec = spec
        self.options = options
        self.store = store
        self.root = shared_store_root(store)
        import ray

        self._joined = not ray.is_initialized()
        self.cluster = connect(spec)
        self.gpus_per_actor = spec.gpus_per_actor or (
            float(getattr(options, "tensor_parallel_size", 1)) if self.cluster.gpus else 0.0)
        if spec.actors:
            self.actors = spec.actors
        elif self.gpus_per_actor:
            self.actors = max(int(self.cluster.gpus // self.gpus_per_actor), 1)
        else:
            self.actors = max(self.cluster.nodes, 1)
        self.last: GenerationStats | None = None
        self._pool: list[Any] = []
        self.engines_started: set[str] = set()
        """Every actor process whose engine served this RayEngine (node/pid): one per actor of the
        pool for a whole run, plus one per restart."""

    def batch_size(self) -> int:
        """The local engine's batch size, so batches (and transformers' per-batch seeds) match it."""
        from pipeline.engines.vllm_engine import VLLMEngine

        if self.options.kind == "vllm":
            gpu = VLLMEngine.GPU_BATCH_SIZE if self.gpus_per_actor else VLLMEngine.CPU_BATCH_SIZE
            return self.options.batch_size or gpu
        return self.options.batch_size

    def _actors(self) -> list[Any]:
        if not self._pool:
            import ray

            actor = ray.remote(_EngineActor).options(
                num_cpus=self.spec.cpus_per_actor, num_gpus=self.gpus_per_actor, scheduling_strategy="SPREAD",
                max_restarts=3, max_task_retries=3)
            self._pool = [actor.remote(self.options, self.model, str(self.store.home), self.root, self.store.sampling)
                          for _ in range(self.actors)]
        return self._pool

    def generate(self, *args: object, **kwargs: object) -> list[Completion]:
        raise NotImplementedError("RayEngine leaves the completions in the rollout store: call generate_stored "
                                  "and read them from the store")

    def generate_stored(
        self,
        requests: Sequence[GenerationRequest],
        sampling: SamplingConfig,
        store: Callable[[Sequence[GenerationRequest], list[Completion]], None],
        progress: Progress | None = None,
    ) -> GenerationTally:
        """Spans of up to `SPAN_BATCHES` batches, two queued per actor so none waits for its next one;
        `store` is not called (the actors write the store); `last` follows the call."""
        import ray

        if sampling != self.store.sampling:
            raise ValueError("RayEngine writes into its store: generate with the store's sampling config")
        started, began = time.perf_counter(), time.time()
        batches = -(-len(requests) // self.batch_size())
        # Fewer batches per span when there are few batches, so that every actor gets some.
        span = self.batch_size() * max(min(SPAN_BATCHES, batches // self.actors), 1)
        spans = iter(range(0, len(requests), span))
        stats = GenerationStats(self.cluster, actors=self.actors)
        self.last = stats
        tally = GenerationTally()
        if not requests:
            return tally
        pending: dict[Any, tuple[Any, int]] = {}

        def submit(actor: Any) -> None:
            start = next(spans, None)
            if start is not None:
                pending[actor.generate.remote(list(requests[start : start + span]))] = (actor, start)

        for actor in self._actors() * 2:
            submit(actor)
        actors: set[str] = set()
        first_ready = None
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, start = pending.pop(ref)
            done = ray.get(ref)
            made = done["tally"]
            if made.rollouts != len(requests[start : start + span]):
                raise RuntimeError(f"engine actor {done['actor']} returned {made.rollouts} of "
                                   f"{len(requests[start : start + span])} rollouts")
            tally.merge(made)
            actors.add(done["actor"])
            ready = max(done["ready_at"], began)
            first_ready = ready if first_ready is None else min(first_ready, ready)
            stats.engine_start_s = max(stats.engine_start_s, done["start_s"])
            stats.rows, stats.tokens, stats.actors_used = tally.rollouts, tally.tokens, len(actors)
            stats.wall_s = time.perf_counter() - started
            stats.generate_s = max(time.time() - first_ready, 1e-9)
            submit(actor)
            if progress is not None:
                progress(tally.rollouts, len(requests), stats.tokens_per_second)
        self.engines_started |= actors
        return tally

    def close(self) -> None:
        """Stop the engine actors, and leave the cluster if this engine joined it (a driver already
        connected stays connected)."""
        import ray

        if ray.is_initialized():
            for actor in self._pool:
                ray.kill(actor)
        self._pool = []
        if self._joined and ray.is_initialized():
            ray.shutdown()
        self._joined = False


def _score_chunk(problems: pd.DataFrame, rollouts: pd.DataFrame, verifier: VerifierSpec, policy: str) -> pd.DataFrame:
    with verifier.pool() as pool:
        return score_rollouts(problems, rollouts, pool, policy)


def score_on_ray(
    spec: BackendSpec,
    problems: pd.DataFrame,
    rollouts: pd.DataFrame,
    verifier: VerifierSpec,
    policy: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """`score_rollouts` on the cluster: chunks of `spec.verify_chunk` rollouts, each scored by a Ray
    task with its own verifier pool (retried on another worker if its node dies). Same rows, same
    order, same values as scoring locally."""
    import ray

    if rollouts.empty:
        return Reward.empty_frame()
    connect(spec)
    score = ray.remote(_score_chunk).options(num_cpus=verifier.workers, max_retries=3)
    columns = ["problem_id", "verifier", "answer", "metadata"]
    pending = {}
    for start in range(0, len(rollouts), spec.verify_chunk):
        chunk = rollouts.iloc[start : start + spec.verify_chunk][["problem_id", "sample_index", "text"]]
        own = problems[problems["problem_id"].isin(set(chunk["problem_id"]))][columns]
        pending[score.remote(own, chunk.reset_index(drop=True), verifier, policy)] = start
    results: dict[int, pd.DataFrame] = {}
    done = 0
    if progress is not None:
        progress(0, len(rollouts))
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            frame = ray.get(ref)
            results[pending.pop(ref)] = frame
            done += len(frame)
        if progress is not None:
            progress(done, len(rollouts))
    return pd.concat([results[k] for k in sorted(results)], ignore_index=True)
