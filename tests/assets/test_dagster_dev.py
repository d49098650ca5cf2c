"""Smoke test: the real `dagster dev` webserver loads the code location and serves the asset graph."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"problems", "quarantined_problems", "rollouts", "rollout_allocation", "rewards", "pass_rates",
            "curriculum"}

# `dagster dev` started from a non-interactive shell ignores SIGINT and routes SIGTERM to the same
# handler; resetting both to the default before exec makes SIGTERM stop it and its children.
LAUNCHER = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None, timeout: float = 5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.mark.timeout(240)
def test_dagster_dev_serves_the_asset_graph(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "GRADUS_HOME": str(tmp_path / "gradus")}
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
            try:
                get(f"{base}/server_info")
                break
            except OSError:
                assert time.monotonic() < deadline, "dagster dev did not come up"
                time.sleep(1)
        query = {"query": "{ assetNodes { assetKey { path } description } }"}
        deadline = time.monotonic() + 60
        while True:
            nodes = get(f"{base}/graphql", query, timeout=30).get("data", {}).get("assetNodes") or []
            names = {"/".join(n["assetKey"]["path"]) for n in nodes}
            if EXPECTED <= names or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert EXPECTED <= names
        assert all(n["description"] for n in nodes)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode is not None
