"""The Ray backend: generation in a pool of engine actors kept for a whole run, verification as
Ray tasks, both against the same content-addressed rollout store as the local backend.

The calling process (a Dagster step) only joins the cluster as a driver and submits work, so it
never holds a GPU. Each engine actor writes every batch it finishes into the rollout store itself
and returns counts only, so the store must be a folder every node sees at the same path. A killed
actor is restarted by Ray and its span retried; a batch written twice (killed after the write) is
deduplicated by the store (the first part wins, and a retry reproduces the same text anyway).
Verification tasks read the rows they score from the store too (the driver names them from the
key columns alone) and return counts or write reward parts: no rollout text reaches the driver.

Ray is imported here only inside functions, and this module only when the backend is `ray`: the
default install and the default run never touch it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import pipeline
from pipeline.core.model import ModelSpec
from pipeline.core.progress import Progress as ProgressBar
from pipeline.core.records import Reward
from pipeline.core.storage import replacing, write_parquet_checksummed
from pipeline.engines.base import Completion, Engine, GenerationRequest, GenerationTally, Progress, SamplingConfig
from pipeline.engines.factory import EngineOptions, start_engine
from pipeline.rollouts.handles import DatasetHandle
from pipeline.rollouts.store import RolloutStore, StoredRollouts, read_rows
from pipeline.verify.scoring import GOLD_COLUMNS, RewardSummary, pool_rows, score_rollouts
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


_WATCHER = """
import os, sys, time
parent, pids = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
while os.getppid() == parent and any(os.path.exists(f"/proc/{p}") for p in pids):
    time.sleep(0.5)
for pid in pids:
    try:
        os.kill(pid, 9)
    except OSError:
        pass
"""


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def die_with_this_process() -> subprocess.Popen | None:
    """Kill this process's descendants when it dies, however it dies: a SIGKILLed Ray actor runs no
    cleanup, and vLLM's engine core process, left behind, would hold its memory for good. A small
    watcher process polls for its parent's death (and ends by itself once they are all gone)."""
    pids = _descendants(os.getpid())
    if not pids:
        return None
    # The parent's pid on the command line: it may be dead before the watcher's first look.
    return subprocess.Popen([sys.executable, "-c", _WATCHER, str(os.getpid()), *map(str, pids)], stdin=subprocess.DEVNULL,
                            start_new_session=True)


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
        self.store = RolloutStore(Path(home), model, sampling, engine=options.kind)
        self.engine = start_engine(options, model)
        # vLLM's engine core runs in a process of its own, as locally: in-process it cannot overlap
        # scheduling and output processing with the forward pass (paired on 2 cores: see
        # docs/scaling.md). That process must not outlive a killed actor.
        self.watcher = die_with_this_process()
        self.sampling = sampling
        import ray

        context = ray.get_runtime_context()
        self.actor = f"{context.get_node_id()[:8]}/{os.getpid()}"
        self.ready_at = time.time()
        self.start_s = self.ready_at - started

    def generate(self, requests: list[GenerationRequest]) -> dict[str, Any]:
        """A span that starts on a multiple of the engine's batch size, so the engine cuts it into
        the batches the local backend makes (the transformers engine seeds a batch from its requests)."""
        began = time.perf_counter()
        storing = 0.0

        def store(done: Sequence[GenerationRequest], completions: list[Completion]) -> None:
            nonlocal storing
            at = time.perf_counter()
            self.store.append(done, completions)
            storing += time.perf_counter() - at

        made = self.engine.generate_stored(requests, self.sampling, store)
        return {"tally": made, "actor": self.actor, "ready_at": self.ready_at, "start_s": self.start_s,
                "call_s": time.perf_counter() - began, "store_s": storing}

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
    engine_s: float = 0.0
    """Summed over spans: time in the actors' engines (generating, the store's writes excluded)."""
    store_s: float = 0.0
    """Summed over spans: time the actors spent writing parts into the store."""
    handoff_s: float = 0.0
    """Summed over spans: each span's round trip less its time in the actor (submission, Ray's
    scheduling, (de)serialising the requests and the counts, waiting in the actor's queue)."""

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
            "ray_engine_s": round(self.engine_s, 1),
            "ray_store_s": round(self.store_s, 1),
            "ray_handoff_s": round(self.handoff_s, 1),
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
        pending: dict[Any, tuple[Any, int, float]] = {}

        def submit(actor: Any) -> None:
            start = next(spans, None)
            if start is not None:
                pending[actor.generate.remote(list(requests[start : start + span]))] = (actor, start, time.time())

        for actor in self._actors() * 2:
            submit(actor)
        actors: set[str] = set()
        last_back: dict[Any, float] = {}
        first_ready = None
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, start, sent = pending.pop(ref)
            done = ray.get(ref)
            # A span cannot start before its actor's engine is ready nor, two being queued per actor,
            # before the previous span came back: the waits for those are start-up and queueing.
            back = time.time()
            stats.handoff_s += max(back - max(sent, done["ready_at"], last_back.get(actor, sent)) - done["call_s"], 0.0)
            last_back[actor] = back
            stats.engine_s += done["call_s"] - done["store_s"]
            stats.store_s += done["store_s"]
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


Spans = list[tuple[str, np.ndarray]]
"""Rows of store parts: (part, row numbers in it), as `StoredRollouts.locate` names them."""


def _score_rows(spans: Spans, golds: pd.DataFrame, verifier: VerifierSpec, policy: str) -> pd.DataFrame:
    """`Reward` rows of these stored rows, read here (on the worker), not on the driver."""
    rollouts = pd.concat([read_rows(Path(part), rows, ["problem_id", "sample_index", "text"]).to_pandas()
                          for part, rows in spans], ignore_index=True)
    with verifier.pool() as pool:
        return score_rollouts(golds, rollouts, pool, policy)


def _count_passes(spans: Spans, positions: np.ndarray, golds: pd.DataFrame, verifier: VerifierSpec,
                  policy: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions, passes of each) of these rows: the driver learns counts, not texts or verdicts."""
    passed = _score_rows(spans, golds, verifier, policy)["passed"].to_numpy()
    where, inverse = np.unique(positions, return_inverse=True)
    return where, np.bincount(inverse, weights=passed, minlength=len(where)).astype(np.int64)


def _score_into(spans: Spans, golds: pd.DataFrame, verifier: VerifierSpec, policy: str, path: str,
                show_failures: int) -> RewardSummary:
    """Score these rows into one checksummed `Reward` part at `path`; hand back its summary only."""
    frame = _score_rows(spans, golds, verifier, policy)
    write_parquet_checksummed(pa.Table.from_pandas(frame, schema=Reward.SCHEMA, preserve_index=False, nthreads=1),
                              Path(path))
    return RewardSummary.of(frame, show_failures)


def _chunks(store: StoredRollouts, problem_ids: Sequence[str], upto: np.ndarray | int, start: np.ndarray | int,
            size: int) -> Iterator[tuple[Spans, np.ndarray]]:
    """The stored rows of these problems (`start <= sample_index < upto`) in chunks of `size` rows
    across parts, each as its spans and its rows' positions; found from the key columns alone."""
    spans: Spans = []
    positions: list[np.ndarray] = []
    held = 0
    for part, rows, where in store.locate(problem_ids, upto, start, size):
        if held + len(rows) > size:
            yield spans, np.concatenate(positions)
            spans, positions, held = [], [], 0
        spans.append((str(part), rows))
        positions.append(where)
        held += len(rows)
    if spans:
        yield spans, np.concatenate(positions)


def _on_ray(spec: BackendSpec, store: StoredRollouts, problem_ids: Sequence[str], upto: np.ndarray | int,
            start: np.ndarray | int, submit: Callable[[Spans, np.ndarray, int], Any],
            collect: Callable[[Any], None]) -> None:
    """`submit(spans, positions, number)` one Ray task per `verify_chunk` stored rows of these
    problems, a bounded number in flight (the driver holds a few results at a time), and `collect`
    each result as it comes back. The store's parts stay put (no compaction) until the last is read."""
    import ray

    connect(spec)
    in_flight = max(2 * int(ray.cluster_resources().get("CPU", 1)), 2)
    pending: list[Any] = []
    with store.reading():
        for number, (spans, positions) in enumerate(_chunks(store, problem_ids, upto, start, spec.verify_chunk)):
            pending.append(submit(spans, positions, number))
            while len(pending) >= in_flight:
                (ref,), pending = ray.wait(pending, num_returns=1)
                collect(ray.get(ref))
        while pending:
            (ref,), pending = ray.wait(pending, num_returns=1)
            collect(ray.get(ref))


def count_passes_on_ray(spec: BackendSpec, store: StoredRollouts, golds: pd.DataFrame, upto: np.ndarray,
                        start: np.ndarray, verifier: VerifierSpec, policy: str = "auto") -> np.ndarray:
    """Passes per problem (rows of `golds`: `GOLD_COLUMNS`) among its stored rollouts with
    `start <= sample_index < upto`, verified by Ray tasks that read the store themselves: what the
    adaptive policy needs between rounds (`sample_rollouts`' `count_passes`)."""
    import ray

    ids = golds["problem_id"].tolist()
    successes = np.zeros(len(ids), dtype=np.int64)
    task = ray.remote(_count_passes).options(num_cpus=verifier.workers, max_retries=3)
    info = golds[GOLD_COLUMNS].reset_index(drop=True)

    def submit(spans: Spans, positions: np.ndarray, number: int) -> Any:
        return task.remote(spans, positions, info.iloc[np.unique(positions)], verifier, policy)

    def collect(result: tuple[np.ndarray, np.ndarray]) -> None:
        successes[result[0]] += result[1]

    _on_ray(spec, store, ids, upto, start, submit, collect)
    return successes


def score_dataset_on_ray(
    spec: BackendSpec,
    problems: pa.Table,
    rollouts: DatasetHandle,
    verifier: VerifierSpec,
    folder: Path,
    policy: str = "auto",
    log: Callable[[str], None] = lambda line: None,
    show_failures: int = 8,
    label_key: str | None = None,
) -> tuple[DatasetHandle, RewardSummary]:
    """`score_dataset` on the cluster: Ray tasks read `verify_chunk` rollouts each from the store,
    score them with a verifier pool of their own and write one `Reward` part each into the staging
    folder (a shared filesystem, like the store), handing the driver a summary: the rollouts' text
    never passes through it. The rows and values are `score_dataset`'s; parts follow the store's order."""
    import ray

    if rollouts.kind != "rollouts":
        raise ValueError(f"scoring on Ray reads rollouts from the store; got a {rollouts.kind!r} dataset")
    selection = rollouts.read_selection()
    ids = selection.column("problem_id").to_pylist()
    golds = problems.select(GOLD_COLUMNS).take(pa.array(pool_rows(selection.column("problem_id"), problems)))
    task = ray.remote(_score_into).options(num_cpus=verifier.workers, max_retries=3)
    summary = RewardSummary()
    started = time.perf_counter()
    bar = ProgressBar("verifying", rollouts.rows, log, unit="answers")
    with replacing(folder) as staging:

        def submit(spans: Spans, positions: np.ndarray, number: int) -> Any:
            own = golds.take(pa.array(np.unique(positions))).to_pandas()
            return task.remote(spans, own, verifier, policy, str(staging / f"part-{number:06d}.parquet"),
                               show_failures)

        def collect(part: RewardSummary) -> None:
            summary.merge(part, show_failures)
            bar.update(summary.rows)

        _on_ray(spec, StoredRollouts(Path(rollouts.path)), ids, selection.column("trials").to_numpy(), 0,
                submit, collect)
    summary.seconds = time.perf_counter() - started
    return DatasetHandle("parts", str(folder), summary.rows, label_key or rollouts.label_key), summary
