"""The README's main command (`make dev`) run for real, in its own process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSET_QUERY = "query { assetNodes { assetKey { path } groupName } }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@contextlib.contextmanager
def dagster_dev(base: Path, timeout: float = 240) -> Iterator[dict]:
    """`make dev` against a fresh embedded default under `base`, until its assets load.

    Yields {"port", "env", "base"}. `dagster dev` ignores SIGTERM on some paths, so the
    whole process group is ended, then killed if it lingers.
    """
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(base / "home"),
        "EXPORT_DATA_DIR": str(base / "data"),
        "EXPORT_STORE_URL": str(base / "exports"),
        "DAGSTER_PORT": str(port),
    }
    log_path = base / "dev.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "dev"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                with contextlib.suppress(OSError):
                    if graphql(port, ASSET_QUERY)["assetNodes"]:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"dagster dev did not come up:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(2)
            yield {"port": port, "env": env, "base": base}
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
