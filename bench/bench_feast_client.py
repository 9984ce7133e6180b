"""The same Feast client (``feast`` 0.67, ``online_store: {type: remote}``) against ``feast serve``
and against ``quiver serve``, on the same data: 1 entity x 10 features per request.

One Feast repo (``feature_store.yaml`` + a definitions file importing ``feast``) over one Parquet
file: Feast applies and materializes it into its SQLite online store and serves it with
``feast serve``; Quiver applies the same directory unchanged (``quiver apply``), materializes it
and serves it with ``quiver serve``. A client process in the Feast environment
(``tests/feast_env``) then calls ``store.get_online_features`` in a loop against each server, in
rounds alternating between the two. Prints the median requests/s of each, the ratio (target:
Quiver >= 5x Feast) and each server's peak memory (VmHWM).

    .venv/bin/python bench/bench_feast_client.py [--requests 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import fmt_bytes, median, print_table
from _feast import feast_cli, feast_python

N_DRIVERS = 1000
N_FEATURES = 10
DEFS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
driver = Entity(name="driver", join_keys=["driver_id"])
source = FileSource(name="stats_source", path="data/stats.parquet",
                    timestamp_field="event_timestamp")
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=3650), source=source,
                    schema=[Field(name=f"f{i}", dtype=Float64) for i in range(@N@)])
""".replace("@N@", str(N_FEATURES))
CLIENT = """
import json, sys, time
from feast import FeatureStore
store = FeatureStore(repo_path=".")
features = [f"stats:f{i}" for i in range(@N@)]
n = int(sys.argv[1])
for i in range(20):
    store.get_online_features(features=features, entity_rows=[{"driver_id": 1 + i}])
began = time.perf_counter()
for i in range(n):
    out = store.get_online_features(features=features, entity_rows=[{"driver_id": 1 + i % 997}])
elapsed = time.perf_counter() - began
assert out.to_dict()["f0"][0] is not None
print(json.dumps(n / elapsed))
""".replace("@N@", str(N_FEATURES))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")


def _hwm(pid: int) -> int:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        out = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in out]


def _repo(base: Path, name: str, online: str) -> Path:
    repo = base / name
    (repo / "data").mkdir(parents=True)
    (repo / "definitions.py").write_text(DEFS)
    (repo / "feature_store.yaml").write_text(
        f"project: bench\nregistry: data/registry.db\nprovider: local\n"
        f"online_store:\n{textwrap.indent(online, '  ')}\nentity_key_serialization_version: 3\n"
    )
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    python = feast_python()
    quiver = Path(sys.executable).with_name("quiver")
    base = Path(tempfile.mkdtemp(prefix="bench_feast_client_"))
    servers: list[subprocess.Popen[bytes]] = []
    try:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(
            {
                "driver_id": np.arange(1, N_DRIVERS + 1, dtype="int64"),
                "event_timestamp": pd.Timestamp("2025-01-01", tz="UTC"),
                **{f"f{i}": rng.random(N_DRIVERS) for i in range(N_FEATURES)},
            }
        )
        feast_repo = _repo(base, "feast_side", "type: sqlite\npath: data/online_store.db")
        quiver_repo = _repo(base, "quiver_side", "type: sqlite\npath: data/online_store.db")
        for repo in (feast_repo, quiver_repo):
            frame.to_parquet(repo / "data" / "stats.parquet")
        feast_cli(python, "apply", cwd=feast_repo)
        feast_cli(
            python, "materialize", "2000-01-01T00:00:00", "2026-01-01T00:00:00", cwd=feast_repo
        )
        subprocess.run(
            [str(quiver), "apply", "--repo", str(quiver_repo)], check=True, capture_output=True
        )
        subprocess.run(
            [
                str(quiver),
                "materialize",
                "2000-01-01T00:00:00",
                "2026-01-01T00:00:00",
                "--repo",
                str(quiver_repo),
            ],
            check=True,
            capture_output=True,
        )
        urls = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        env["FEAST_USAGE"] = "False"
        for name, cmd, cwd in (
            (
                "feast",
                [
                    str(python),
                    "-c",
                    "from feast.cli.cli import cli; cli()",
                    "serve",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "{port}",
                    "--no-access-log",
                ],
                feast_repo,
            ),
            (
                "quiver",
                [
                    str(quiver),
                    "serve",
                    "--repo",
                    str(quiver_repo),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "{port}",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                quiver_repo,
            ),
        ):
            port = _free_port()
            log = base / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [c.replace("{port}", str(port)) for c in cmd],
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            servers.append(proc)
            urls[name] = f"http://127.0.0.1:{port}"
            _wait(urls[name], proc, log)
        clients = {}
        for name, url in urls.items():
            client = base / f"client_{name}"
            shutil.copytree(feast_repo, client, ignore=shutil.ignore_patterns("online_store.db"))
            (client / "feature_store.yaml").write_text(
                "project: bench\nregistry: data/registry.db\nprovider: local\n"
                f"online_store:\n  type: remote\n  path: {url}\n"
                "entity_key_serialization_version: 3\n"
            )
            clients[name] = client
        rates: dict[str, list[float]] = {"feast": [], "quiver": []}
        for _ in range(args.rounds):
            for name, client in clients.items():
                out = subprocess.run(
                    [str(python), "-c", CLIENT, str(args.requests)],
                    cwd=client,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{name} client failed:\n{out.stderr[-3000:]}")
                rates[name].append(float(json.loads(out.stdout.strip().splitlines()[-1])))
        feast_rate, quiver_rate = median(rates["feast"]), median(rates["quiver"])
        print(
            f"Feast client, 1 entity x {N_FEATURES} features, {args.requests} requests x "
            f"{args.rounds} rounds (median), one client process, {N_DRIVERS} drivers"
        )
        print_table(
            ["server", "requests/s", "ms/request", "server peak memory"],
            [
                [name, f"{r:.0f}", f"{1000 / r:.2f}", fmt_bytes(_hwm(proc.pid))]
                for (name, r), proc in zip(
                    (("feast serve", feast_rate), ("quiver serve", quiver_rate)),
                    servers,
                    strict=True,
                )
            ],
        )
        ratio = quiver_rate / feast_rate
        print(
            f"quiver / feast throughput: {ratio:.2f}x (target >= 5x: "
            f"{'met' if ratio >= 5 else 'NOT met'})"
        )
    finally:
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
