"""A throwaway multi-node Ray cluster on this machine (127.0.0.1), for tests and benches: real
`ray start` nodes, each with its own temp dir and ports, stopped (and every process they started
killed) on exit, also when the body fails.

Never `ray stop`: it kills every Ray process of the user on the machine, including other people's.
Each node runs `ray start --block` in its own session, so its whole process group is ours to end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalNode:
    """One `ray start --block` process and the folder its logs go to."""

    process: subprocess.Popen
    temp_dir: Path
    log: Path

    def raylet_pids(self) -> list[int]:
        """The raylet of this node (a node's workers die with it)."""
        return _pids_matching("raylet", str(self.temp_dir))

    def processes(self, title: str) -> list[int]:
        """Live processes started under this node (its temp dir in their environment) whose command
        line or process title holds `title`: e.g. engine processes left behind by a killed actor."""
        found = []
        for pid in _pids_matching("", str(self.temp_dir)):
            try:
                if title in (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Kill the node outright: nothing in a throwaway cluster needs a graceful end."""
        # Workers the raylet spawned may have left its group; they all carry the node's temp dir.
        for pid in [self.process.pid] + _pids_matching("", str(self.temp_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)


@dataclass
class LocalCluster:
    """A running cluster: pass `address` to `ray.init` or as `RAY_ADDRESS`."""

    address: str
    nodes: list[LocalNode] = field(default_factory=list)


def _pids_matching(name: str, marker: str) -> list[int]:
    """Processes whose command line names `name` and mentions `marker` (a node's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace") if not name else ""
        except OSError:
            continue
        if name in cmdline and (marker in cmdline or marker in environ):
            pids.append(int(entry.name))
    return pids


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _start_node(args: list[str], temp_dir: Path, env: dict[str, str]) -> LocalNode:
    temp_dir.mkdir(parents=True)
    log = temp_dir / "ray-start.log"
    ports = [free_port() for _ in range(5)]
    command = [
        _ray(), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
        "--disable-usage-stats", f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
        f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
        f"--metrics-export-port={ports[4]}", *args,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return LocalNode(process, temp_dir, log)


def _wait_until_started(node: LocalNode, deadline: float) -> None:
    """Until the node's `ray start` reports its runtime up (registered with the head), or raise
    with its log if it died or took too long."""
    while True:
        text = node.log.read_text(errors="replace") if node.log.exists() else ""
        if "Ray runtime started" in text:
            return
        if node.process.poll() is not None:
            raise RuntimeError(f"`ray start` exited with code {node.process.returncode}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"`ray start` did not finish in time; its log:\n{text[-3000:]}")
        time.sleep(0.5)


@contextmanager
def local_cluster(
    workers: int = 1,
    head_cpus: int = 1,
    worker_cpus: int = 1,
    object_store_mb: int = 300,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
) -> Iterator[LocalCluster]:
    """A head node plus `workers` worker nodes on 127.0.0.1; everything is stopped on exit."""
    if not shutil.which(_ray()):
        raise FileNotFoundError(f"{_ray()} not found: install the `ray` extra (pip install 'gradus[ray]')")
    # Short: Ray puts unix sockets under it, and their paths must stay under 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="gr-", dir="/tmp"))
    # A throwaway cluster on the loopback: no token (Ray 2.60's `ray start` turns token auth on,
    # drivers default to off).
    environ = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(env or {})}
    environ.pop("RAY_ADDRESS", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    store = str(object_store_mb * 2**20)
    nodes: list[LocalNode] = []
    try:
        nodes.append(_start_node(
            ["--head", f"--port={port}", f"--num-cpus={head_cpus}", f"--object-store-memory={store}",
             "--include-dashboard=false", f"--ray-client-server-port={free_port()}"],
            base / "head", environ))
        _wait_until_started(nodes[0], time.monotonic() + timeout_s)
        for i in range(workers):
            nodes.append(_start_node(
                [f"--address={address}", f"--num-cpus={worker_cpus}", f"--object-store-memory={store}"],
                base / f"w{i}", environ))
        for node in nodes[1:]:
            _wait_until_started(node, time.monotonic() + timeout_s)
        yield LocalCluster(address, nodes)
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(base, ignore_errors=True)
