"""Score extracted answers against gold answers, in worker processes that can be killed.

Verification must never hang a pipeline run. math-verify bounds its own work with SIGALRM, which
works only on a process's main thread (in threads it raises or hangs), and some inputs
("10**10**10**10", deep LaTeX) can spend minutes inside C code that no signal interrupts. So checks
run in persistent worker processes, math-verify's own timeouts are a first line of defence inside
them, and the parent enforces a hard wall-clock limit per task by killing the worker.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from pipeline.verify.extraction import answer_tag_content, as_math, ascii_digits

VERIFIER_VERSION = (
    f"gradus-verify/2 math-verify={version('math-verify')} reasoning-gym={version('reasoning-gym')}"
)
VERIFIERS = ("math", "reasoning_gym")

# A test-only verifier that sleeps for metadata["seconds"], then passes: the one input that is
# guaranteed to outlast any timeout. Off unless a test flips this before creating a pool.
_DEBUG_ENABLED = False
_DEBUG_SLEEP = "debug_sleep"

_PASS_EPS = 1e-9
# Chunks amortise pipe round trips; small enough that a restart re-queues little work.
_MAX_CHUNK = 64
# A fresh worker imports sympy and reasoning-gym unless the fork server preloaded them.
_START_TIMEOUT_S = 120.0
# A worker can die before it is ready because someone killed it; dying every time means the
# environment is broken, and restarting forever would hang the caller.
_MAX_START_FAILURES = 3
_GOLD_CACHE_SIZE = 4096
_DETAIL_CHARS = 300
MEMO_SIZE = 32_768
"""Verdicts remembered per pool, keyed by (verifier, normalised answer, gold, metadata): a
problem's rollouts repeat answers (a small model's wrong answers cluster on a few values)."""

# (op, verifier, gold, answer, metadata); op is "verify" or "gold".
_Job = tuple[str, str, str, str | None, str]
# What a worker sends back per job: (score, status, detail).
_Result = tuple[float, str, str]


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Plain integers ("42", "-0", "1,234") and integral decimals ("12.", "5.00"): the forms whose value
# math-verify reads exactly as written, bare or as the only thing in a `\\boxed{}` or `$…$`.
# Anything else ("1/2", "1e3", "+5", "0.5", "-007") goes to a worker: math-verify's reading of it
# ("1e3" is 1, "-007" nothing) is not this module's to guess. ASCII only: other scripts' digits are
# made ASCII first, on this path and in the workers alike.
_INTEGER = re.compile(r"-?(?:[1-9]\d{0,2}(?:,\d{3})+|[1-9]\d*|0)", re.ASCII)
_INTEGRAL_DECIMAL = re.compile(r"(-?(?:[1-9]\d*|0))\.0*", re.ASCII)
_WRAPPED = re.compile(r"\\boxed\{\s*([^{}$]*?)\s*\}|\$\s*([^{}$]*?)\s*\$")
# Beyond this, math-verify compares a decimal at float precision, so equal-looking values may differ.
_FAST_DECIMAL_LIMIT = 10**12
_RG_EXACT = frozenset({
    "basic_arithmetic", "chain_sum", "count_bits", "decimal_arithmetic", "gcd", "lcm", "leg_counting",
    "prime_factorization", "products", "simple_equations",
})
"""reasoning-gym datasets whose scorer gives full marks to the gold answer verbatim (checked by
tests over generated entries); elsewhere even the gold can score less (arc_agi's scores 0.05)."""


def _plain_number(text: str) -> tuple[int, bool] | None:
    """(value, written as an integer) for a plain integer or integral decimal, else None."""
    text = ascii_digits(text.strip())
    if text[:1] in "\\$" and (wrapped := _WRAPPED.fullmatch(text)):
        text = wrapped.group(1) if wrapped.group(1) is not None else wrapped.group(2)
    if _INTEGER.fullmatch(text):
        return int(text.replace(",", "")), True
    match = _INTEGRAL_DECIMAL.fullmatch(text)
    return (int(match.group(1)), False) if match else None


def fast_result(verifier: str, gold: str, answer: str, metadata: str = "{}") -> tuple[float, str, str] | None:
    """The verdict where it is certain without sympy or a worker, else None.

    math: both sides plain integers (or integral decimals below 10^12) compare by value, which is
    what math-verify concludes for them. reasoning_gym: the gold answer verbatim passes, for the
    datasets known to score it 1. Never a verdict math-verify or the generator would not give.
    """
    if not gold.strip():
        return None
    if verifier == "math":
        g, a = _plain_number(gold), _plain_number(answer)
        if g is None or a is None:
            return None
        if not (g[1] and a[1]) and max(abs(g[0]), abs(a[0])) >= _FAST_DECIMAL_LIMIT:
            return None
        return (1.0, "ok", "") if g[0] == a[0] else (0.0, "ok", "")
    if verifier == "reasoning_gym" and answer == gold:
        try:
            name = json.loads(metadata).get("source_dataset")
        except (ValueError, AttributeError):
            return None
        return (1.0, "ok", "") if name in _RG_EXACT else None
    return None


def _memo_answer(verifier: str, answer: str) -> str:
    """The answer as the memo keys it: math-verify ignores surrounding space; a generator's
    scorer may not."""
    return answer.strip() if verifier == "math" else answer


def _verdict(result: tuple[float, str, str], note: str) -> Verdict:
    score, status, detail = result
    passed = status == "ok" and score >= 1.0 - _PASS_EPS
    return Verdict(score, passed, status, "; ".join(d for d in (detail, note) if d))


@dataclass(frozen=True)
class VerificationTask:
    """One answer to check. `metadata` is canonical JSON of the problem's source metadata; for
    reasoning-gym it is the generator entry's `metadata` dict (which names `source_dataset`)."""

    verifier: str
    gold: str
    answer: str | None
    metadata: str = "{}"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. `score` keeps reasoning-gym's partial credit, while `passed`
    demands full marks, so pass rates are not inflated by near misses.

    `status` is "ok" (scored), "no_answer" (nothing extracted), "timeout", "error" (the check
    raised or its worker died) or "bad_gold" (the gold answer is unusable: never a pass).
    """

    score: float
    passed: bool
    status: str
    detail: str = ""


@dataclass(frozen=True)
class VerifierSpec:
    """How answers are verified: isolated worker processes with a hard per-answer timeout."""

    workers: int = field(default=0, metadata={
        "help": "verifier worker processes (each imports sympy and reasoning-gym: ~0.3 GB); 0: one per "
        "CPU core this process may use"})
    timeout_s: float = field(default=5.0, metadata={
        "help": "wall-clock limit per answer; an answer that takes longer scores 0 (status timeout)"})

    def pool(self) -> VerifierPool:
        return VerifierPool(self.workers, self.timeout_s)


class VerifierPool:
    """Persistent verification workers with a hard per-task timeout. Use as a context manager.

    Workers come from the "forkserver" context: forking the caller directly is unsafe when it
    hosts threads (Dagster, vLLM), and a fork server that preloads math-verify and reasoning-gym
    makes replacing a killed worker take milliseconds instead of seconds of imports. The preload
    applies only if this process has not started its fork server yet; workers import anyway.
    """

    def __init__(self, workers: int = VerifierSpec.workers, timeout_s: float = VerifierSpec.timeout_s,
                 max_answer_chars: int = 10_000, memo_size: int = MEMO_SIZE) -> None:
        if workers < 0:
            raise ValueError("workers must be at least 1, or 0 for one per available core")
        workers = workers or available_cores()
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.max_answer_chars = max_answer_chars
        # Three math-verify calls (parse gold, parse answer, compare) should fit in one parent
        # timeout; math-verify takes whole seconds because it uses signal.alarm.
        self._inner_timeout = max(1, int(timeout_s / 3))
        self._allow_debug = _DEBUG_ENABLED
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["math_verify", "reasoning_gym"])
        self._lock = threading.Lock()
        self._closed = False
        self._memo: OrderedDict[tuple[str, str, str, str], Verdict] = OrderedDict()
        self._memo_size = memo_size
        self.stats: Counter[str] = Counter()
        """Answers settled per route: `fast_path` (in this process, no worker), `memo` (a repeat of
        an earlier key), `worker` (sent to a worker), `no_answer`."""
        self._workers = [self._start_worker() for _ in range(workers)]

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers, for monitoring (they change after a restart)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def verify_many(
        self,
        tasks: list[VerificationTask],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Verdict]:
        """Verdicts for `tasks`, in input order; `progress(done, total)` is called as they arrive.

        An unknown verifier name raises ValueError: names come from code, not data, so it is a bug.
        """
        allowed = self._verifiers()
        for task in tasks:
            if task.verifier not in allowed:
                raise ValueError(f"unknown verifier {task.verifier!r}; expected one of {', '.join(VERIFIERS)}")
        verdicts: list[Verdict | None] = [None] * len(tasks)
        jobs: list[_Job] = []
        job_keys: list[tuple[str, str, str, str]] = []
        waiting: dict[tuple[str, str, str, str], list[tuple[int, str]]] = {}
        settled = 0
        for i, task in enumerate(tasks):
            if task.answer is None:
                verdicts[i] = Verdict(0.0, False, "no_answer")
                self.stats["no_answer"] += 1
                settled += 1
                continue
            answer, note = self._truncate(task.answer)
            # A math verdict never depends on the metadata, so equal answers to equal golds share it.
            key = (task.verifier, _memo_answer(task.verifier, answer), task.gold,
                   "" if task.verifier == "math" else task.metadata)
            known = self._memo.get(key)
            if known is None and not note:
                fast = fast_result(task.verifier, task.gold, answer, task.metadata)
                if fast is not None:
                    self.stats["fast_path"] += 1
                    known = self._remember(key, fast)
            elif known is not None:
                self.stats["memo"] += 1
                self._memo.move_to_end(key)
            if known is not None:
                verdicts[i] = known if not note else replace(known, detail="; ".join(d for d in (known.detail, note) if d))
                settled += 1
                continue
            if key in waiting:  # a repeat within this call: checked once
                waiting[key].append((i, note))
                self.stats["memo"] += 1
                continue
            waiting[key] = [(i, note)]
            jobs.append(("verify", task.verifier, task.gold, answer, task.metadata))
            job_keys.append(key)
        self.stats["worker"] += len(jobs)
        repeats = len(tasks) - settled - len(jobs)

        def report(done: int) -> None:
            if progress is not None:
                progress(settled + repeats * done // max(len(jobs), 1) + done, len(tasks))

        report(0)
        for key, result in zip(job_keys, self._run(jobs, report)):
            if result[1] == "ok":  # a timeout or a dead worker may not repeat: never remembered
                self._remember(key, result)
            for i, note in waiting[key]:
                verdicts[i] = _verdict(result, note)
        return [v for v in verdicts if v is not None]

    def _remember(self, key: tuple[str, str, str, str], result: _Result) -> Verdict:
        """Keep the verdict for `key` (frozen: one object serves every repeat)."""
        verdict = self._memo[key] = _verdict(result, "")
        if len(self._memo) > self._memo_size:
            self._memo.popitem(last=False)
        return verdict

    def gold_problems(self, tasks: list[VerificationTask]) -> list[str | None]:
        """For each task, why its gold answer cannot be used, or None if it can (answers ignored).

        Ingest quarantines rows with a reason, so an unknown verifier is a reason here, not an error.
        """
        allowed = self._verifiers()
        problems: list[str | None] = [
            None if t.verifier in allowed else f"unknown verifier {t.verifier!r}" for t in tasks
        ]
        checked = [i for i, t in enumerate(tasks) if t.verifier in allowed]
        jobs: list[_Job] = [("gold", tasks[i].verifier, tasks[i].gold, None, tasks[i].metadata) for i in checked]
        for i, (_, status, detail) in zip(checked, self._run(jobs, lambda done: None)):
            if status == "timeout":
                problems[i] = f"checking the gold answer timed out ({detail})"
            elif status != "ok":
                problems[i] = detail or status
        return problems

    def close(self) -> None:
        """Stop the workers: politely, then by force (a worker may be stuck in C code)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for worker in self._workers:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            deadline = time.monotonic() + 2.0
            for worker in self._workers:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                worker.stop()
            self._workers = []

    def _verifiers(self) -> tuple[str, ...]:
        return VERIFIERS + ((_DEBUG_SLEEP,) if self._allow_debug else ())

    def _truncate(self, answer: str) -> tuple[str, str]:
        """Cap the answer's size; the tail is kept because a final answer comes last."""
        if len(answer) <= self.max_answer_chars:
            return answer, ""
        kept = answer[len(answer) - self.max_answer_chars :]
        return kept, f"answer truncated from {len(answer)} to {self.max_answer_chars} chars"

    def _start_worker(self, start_failures: int = 0) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        finished = self._context.Value("q", 0, lock=False)
        process = self._context.Process(
            target=_worker_main,
            args=(child_conn, finished, self._inner_timeout, self._allow_debug),
            name="gradus-verifier",
            daemon=True,
        )
        process.start()
        # Without the parent's copy closed, a dead worker's pipe would never report EOF.
        child_conn.close()
        return _Worker(process, parent_conn, finished, time.monotonic() + _START_TIMEOUT_S, start_failures)

    def _replace(self, worker: _Worker) -> None:
        worker.stop()
        failures = 0 if worker.ready else worker.start_failures + 1
        self._workers[self._workers.index(worker)] = self._start_worker(failures)

    def _run(self, jobs: list[_Job], report: Callable[[int], None]) -> list[_Result]:
        """Run `jobs` on the workers: results in job order, every job answered, none hanging."""
        with self._lock:
            if self._closed:
                raise RuntimeError("VerifierPool is closed")
            if not jobs:
                return []
            try:
                return self._schedule(jobs, report)
            except BaseException:
                # Workers still busy with this call's chunks would answer the next call with
                # stale results; replacing them is cheap and keeps the pool usable.
                for worker in list(self._workers):
                    if worker.batch:
                        self._replace(worker)
                raise

    def _schedule(self, jobs: list[_Job], report: Callable[[int], None]) -> list[_Result]:
        results: list[_Result | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        chunk = max(1, min(_MAX_CHUNK, math.ceil(len(jobs) / (4 * len(self._workers)))))
        done = 0
        while done < len(jobs):
            for worker in self._workers:
                if worker.ready and not worker.batch and pending:
                    batch = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                    if not worker.assign(batch, [jobs[i] for i in batch], self.timeout_s):
                        pending.extendleft(reversed(batch))

            timeout = min(w.deadline for w in self._workers) - time.monotonic()
            objects = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
            wait(objects, None if timeout == math.inf else max(0.0, timeout))

            before = done
            for worker in list(self._workers):
                for index, result in worker.drain(self.timeout_s):
                    results[index] = result
                    done += 1
                if not worker.alive():
                    done += self._on_death(worker, results, pending)
                elif time.monotonic() >= worker.deadline and not worker.progressed(self.timeout_s):
                    done += self._on_timeout(worker, results, pending)
            if done != before:
                report(done)
        return [r for r in results if r is not None]

    def _on_death(self, worker: _Worker, results: list[_Result | None], pending: deque[int]) -> int:
        """Blame the job in flight on a dead worker, re-queue the rest; returns jobs settled."""
        code = worker.process.exitcode
        if not worker.ready and worker.start_failures + 1 >= _MAX_START_FAILURES:
            self._replace(worker)  # so a later call can try again
            raise RuntimeError(f"verifier worker keeps dying while starting (exit code {code})")
        settled = 0
        if worker.batch:
            culprit, rest = worker.in_flight()
            results[culprit] = (0.0, "error", f"worker process died (exit code {code})")
            pending.extendleft(reversed(rest))
            settled = 1
        self._replace(worker)
        return settled

    def _on_timeout(self, worker: _Worker, results: list[_Result | None], pending: deque[int]) -> int:
        """Kill a worker past its deadline: only the job in flight is lost; returns jobs settled."""
        if not worker.ready:
            self._replace(worker)
            raise RuntimeError(f"verifier worker did not start within {_START_TIMEOUT_S:.0f}s")
        culprit, rest = worker.in_flight()
        results[culprit] = (0.0, "timeout", f"killed after {self.timeout_s:g}s")
        pending.extendleft(reversed(rest))
        self._replace(worker)
        return 1


class _Worker:
    """The parent's handle on one worker process and the chunk it is working through.

    A worker answers a whole chunk in one message (one pipe round trip per chunk, not per job)
    and counts the jobs it has finished in shared memory, so the parent still knows which job is
    in flight when it has to kill, and restarts the per-job clock whenever the count moves.
    """

    def __init__(self, process: BaseProcess, conn: Connection, finished: Any, start_deadline: float,
                 start_failures: int) -> None:
        self.process = process
        self.conn = conn
        self.finished = finished  # jobs of the chunk in flight the worker has finished (shared)
        self.ready = False
        self.start_failures = start_failures  # consecutive deaths before ready, in this slot
        self.batch: list[int] = []  # job indices of the chunk in flight
        self.seen = 0  # `finished` when the clock last restarted
        self.deadline = start_deadline

    def assign(self, batch: list[int], jobs: list[_Job], timeout_s: float) -> bool:
        """Send a chunk; False if the worker was already dead (so no job in it is to blame)."""
        self.finished.value = 0  # the worker is idle: nothing races this reset
        try:
            self.conn.send(jobs)
        except OSError:
            return False
        self.batch, self.seen = batch, 0
        self.deadline = time.monotonic() + timeout_s
        return True

    def progressed(self, timeout_s: float) -> bool:
        """Whether a job finished since the clock last restarted (then it restarts)."""
        finished = self.finished.value
        if not self.batch or finished == self.seen:
            return False
        self.seen = finished
        self.deadline = time.monotonic() + timeout_s
        return True

    def in_flight(self) -> tuple[int, list[int]]:
        """The job being worked on, and the rest of the chunk to re-queue (those finished but not
        yet sent die with the worker, so they run again)."""
        finished = min(self.finished.value, len(self.batch) - 1)
        return self.batch[finished], self.batch[:finished] + self.batch[finished + 1 :]

    def drain(self, timeout_s: float) -> list[tuple[int, _Result]]:
        """Results that have arrived, as (job index, result)."""
        received: list[tuple[int, _Result]] = []
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message == "ready":
                    self.ready = True
                    self.deadline = math.inf
                    continue
                received.extend(zip(self.batch, message))
                self.batch, self.seen, self.deadline = [], 0, math.inf
        except (EOFError, OSError):
            pass  # the worker died; alive() reports it
        return received

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


def _worker_main(conn: Connection, finished: Any, inner_timeout: int, allow_debug: bool) -> None:
    """A worker's loop: announce readiness, then answer each chunk in one message, counting
    finished jobs in `finished` so the parent knows which job is in flight when it has to kill."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    checker = _Checker(inner_timeout, allow_debug)
    conn.send("ready")
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        results = []
        for job in chunk:
            results.append(checker.run(job))
            finished.value += 1
        conn.send(results)


class _Checker:
    """The checks themselves; lives in a worker, importing the heavy libraries once."""

    def __init__(self, inner_timeout: int, allow_debug: bool) -> None:
        import math_verify
        import reasoning_gym
        from math_verify.errors import TimeoutException

        self._mv = math_verify
        self._rg = reasoning_gym
        self._timeout_exc = TimeoutException
        self._timeout = inner_timeout
        self._allow_debug = allow_debug
        self._gold_cache: dict[str, list[Any]] = {}
        self._score_fns: dict[str, Callable[..., float]] = {}

    def run(self, job: _Job) -> _Result:
        op, verifier, gold, answer, metadata = job
        try:
            if op == "gold":
                problem = self._gold_problem(verifier, gold, metadata)
                return (0.0, "ok", "") if problem is None else (0.0, "bad_gold", problem)
            if not gold.strip():
                return (0.0, "bad_gold", "empty gold answer")
            assert answer is not None  # the parent settles missing answers itself
            if verifier == "math":
                return self._math(gold, answer)
            if verifier == "reasoning_gym":
                return self._reasoning_gym(gold, answer, metadata)
            if verifier == _DEBUG_SLEEP and self._allow_debug:
                time.sleep(float(json.loads(metadata)["seconds"]))
                return (1.0, "ok", "")
            return (0.0, "error", f"unknown verifier {verifier!r}")
        except self._timeout_exc:
            return (0.0, "timeout", f"math-verify gave up after {self._timeout}s")
        except Exception as exc:  # one bad input must not take the batch down
            return (0.0, "error", f"{type(exc).__name__}: {exc}"[:_DETAIL_CHARS])

    def _gold_problem(self, verifier: str, gold: str, metadata: str) -> str | None:
        if not gold.strip():
            return "empty gold answer"
        if verifier == "math" and not self._parse_gold(gold):
            return "math-verify cannot parse the gold answer"
        if verifier == "reasoning_gym":
            name = json.loads(metadata).get("source_dataset")
            if not isinstance(name, str) or name not in self._rg.factory.DATASETS:
                return f"unknown reasoning-gym dataset {name!r}"
        return None

    def _math(self, gold: str, answer: str) -> _Result:
        gold_parsed = self._parse_gold(gold)
        if not gold_parsed:
            return (0.0, "bad_gold", "math-verify cannot parse the gold answer")
        # math-verify finds nothing inside <answer> tags (a `full` completion), so their content is read.
        tagged = answer_tag_content(answer)
        answer_parsed = self._parse(ascii_digits(as_math(tagged) if tagged is not None else answer))
        if not answer_parsed:
            return (0.0, "ok", "math-verify cannot parse the answer")
        return (1.0, "ok", "") if self._matches(gold_parsed, answer_parsed) else (0.0, "ok", "")

    def _parse(self, text: str) -> list[Any]:
        """math-verify's parse; malformed input parses to nothing, but a timeout propagates."""
        try:
            return self._mv.parse(text, parsing_timeout=self._timeout, raise_on_error=True)
        except Exception:
            return []

    def _parse_gold(self, gold: str) -> list[Any]:
        """The gold read whole (`as_math`); a gold math-verify keeps only as a string (`\\frac{`) is
        unusable, since any answer with the same text would match it."""
        # Many samples share a gold answer; parsing it once per worker roughly halves the work.
        if gold not in self._gold_cache:
            if len(self._gold_cache) >= _GOLD_CACHE_SIZE:
                self._gold_cache.clear()
            parsed = self._parse(ascii_digits(as_math(gold)))
            self._gold_cache[gold] = parsed if any(not isinstance(p, str) for p in parsed) else []
        return self._gold_cache[gold]

    def _matches(self, gold: list[Any], answer: list[Any]) -> bool:
        """math-verify's any-pair comparison, done pair by pair: its lenient mode would report a
        timeout as a plain mismatch, its strict mode would let one failing pair hide a match."""
        timed_out = False
        for g, a in itertools.product(gold, answer):
            try:
                if self._mv.verify(g, a, timeout_seconds=self._timeout, raise_on_error=True):
                    return True
            except self._timeout_exc:
                timed_out = True
            except Exception:
                continue
        if timed_out:
            raise self._timeout_exc("comparison timed out")
        return False

    def _reasoning_gym(self, gold: str, answer: str, metadata: str) -> _Result:
        meta = json.loads(metadata)
        name = meta.get("source_dataset")
        if not isinstance(name, str):
            return (0.0, "error", "reasoning-gym metadata has no source_dataset")
        if name not in self._score_fns:
            # Builds a default-config dataset; done once per name since some are slow to build.
            self._score_fns[name] = self._rg.get_score_answer_fn(name)
        score = float(self._score_fns[name](answer, {"question": "", "answer": gold, "metadata": meta}))
        return (score, "ok", "")
