"""The same Feast client (``feast`` 0.67, ``online_store: {type: remote}``) against ``feast serve``
and against ``quiver serve``, on the same data: 1 entity x 10 features per request.

One Feast repo (``feature_store.yaml`` + a definitions file importing ``feast``) over one Parquet
file: Feast applies and materializes it into its SQLite online store and serves it with
``feast serve``; Quiver applies the same directory unchanged (``quiver apply``), materializes it
and serves it with ``quiver serve``. Client processes in the Feast environment
(``tests/feast_env``) call ``store.get_online_features`` in a loop against each server; the
targets alternate in rounds, the order rotating.

Two figures per target, both over the same requests:

- **throughput seen by the clients** (all requests / wall time, ``--clients`` processes at once,
  each starting at the same instant after its warm-up);
- **server CPU per request** (user + system time of the server process and its children, from
  ``/proc``, over the same interval): its inverse is the throughput one server core sustains,
  what a serving deployment provisions for. A Feast client costs about a millisecond of its own
  CPU per call (it builds protobuf values for every answer): with one sequential client that
  cost is in every figure, on both sides, and caps the client-seen ratio (see the third target).

A third target, ``canned``, answers every request with Quiver's own answer, recorded, from a
bare asyncio loop: the most any server can give this client (its own per-call cost).

``feast serve`` runs with its defaults except ``--max-requests``, raised so that its worker is
not recycled during the run (its default, 1000, restarts the worker and reloads Feast mid-run:
recycling is left out in Feast's favour).

    .venv/bin/python bench/bench_feast_client.py [--requests 400] [--rounds 5] [--clients 1,3]
"""

from __future__ import annotations

import argparse
import contextlib
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
import json, os, sys, time
from feast import FeatureStore
store = FeatureStore(repo_path=".")
features = [f"stats:f{i}" for i in range(@N@)]
n, go, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(20):
    store.get_online_features(features=features, entity_rows=[{"driver_id": 1 + i}])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
began = time.time()
for i in range(n):
    key = 1 + (seed * 7919 + i) % 997
    out = store.get_online_features(features=features, entity_rows=[{"driver_id": key}])
ended = time.time()
assert out.to_dict()["f0"][0] is not None
print(json.dumps([began, ended]))
""".replace("@N@", str(N_FEATURES))
CANNED = """
import asyncio, sys
body = open(sys.argv[2], "rb").read()
head = b"HTTP/1.1 200 OK\\r\\ncontent-type: application/json\\r\\n"
answer = head + b"content-length: %d\\r\\n\\r\\n%b" % (len(body), body)
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\\r\\n\\r\\n")
            size = 0
            for line in head.split(b"\\r\\n"):
                if line.lower().startswith(b"content-length:"):
                    size = int(line.split(b":")[1])
            if size:
                await reader.readexactly(size)
            writer.write(answer if head.startswith(b"POST") else
                         b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""
"""A server answering Quiver's recorded answer to every request (the client's own ceiling)."""


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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its reaped children (a recycled gunicorn worker) and its
    live children, so far (Linux ``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    for child in _children(pid):
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += _cpu_seconds(child)
    return total


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
    parser.add_argument(
        "--clients",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[1, 3],
        help="client processes at once, one or more runs (e.g. 1,3)",
    )
    args = parser.parse_args()
    python = feast_python()
    quiver = Path(sys.executable).with_name("quiver")
    base = Path(tempfile.mkdtemp(prefix="bench_feast_client_"))
    servers: dict[str, subprocess.Popen[bytes]] = {}
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
        feast_cmd = [str(python), "-c", "from feast.cli.cli import cli; cli()", "serve"]
        feast_cmd += ["-h", "127.0.0.1", "-p", "{port}", "--no-access-log"]
        feast_cmd += ["--max-requests", "100000000"]
        quiver_cmd = [str(quiver), "serve", "--repo", str(quiver_repo), "--host", "127.0.0.1"]
        quiver_cmd += ["--port", "{port}", "--no-access-log", "--log-level", "warning"]
        canned_body = base / "canned.json"
        canned_cmd = [sys.executable, "-c", CANNED, "{port}", str(canned_body)]
        for name, cmd, cwd in (
            ("feast", feast_cmd, feast_repo),
            ("quiver", quiver_cmd, quiver_repo),
            ("canned", canned_cmd, base),
        ):
            if name == "canned":  # Quiver's own answer, recorded
                features = [f"stats:f{i}" for i in range(N_FEATURES)]
                recorded = httpx.post(
                    f"{urls['quiver']}/get-online-features",
                    json={"features": features, "entities": {"driver_id": [1]}},
                )
                canned_body.write_bytes(recorded.content)
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
            servers[name] = proc
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
        names = list(urls)
        for n_clients in args.clients:
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    runs[name].append(
                        _run(python, clients[name], servers[name].pid, env, n_clients, args)
                    )
            _report(runs, n_clients, args, servers)
    finally:
        for proc in servers.values():
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(base, ignore_errors=True)


def _run(
    python: Path,
    client: Path,
    pid: int,
    env: dict[str, str],
    n_clients: int,
    args: argparse.Namespace,
) -> tuple[float, float]:
    """One round against one server: (requests/s seen by the clients, server CPU seconds per
    request) over the interval from the common start to the last client's end."""
    go = client / "go"
    go.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [str(python), "-c", CLIENT, str(args.requests), str(go), str(i)],
            cwd=client,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n_clients)
    ]
    for proc in procs:  # every client warmed up before the common start
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client failed:\n{proc.communicate()[1][-3000:]}")
    cpu_before = _cpu_seconds(pid)
    go.touch()
    spans = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"client failed:\n{err[-3000:]}")
        spans.append(json.loads(out.strip().splitlines()[-1]))
    cpu = _cpu_seconds(pid) - cpu_before
    total = args.requests * n_clients
    wall = max(e for _, e in spans) - min(b for b, _ in spans)
    return total / wall, cpu / total


def _report(
    runs: dict[str, list[tuple[float, float]]],
    n_clients: int,
    args: argparse.Namespace,
    servers: dict[str, subprocess.Popen[bytes]],
) -> None:
    rate = {name: median([r for r, _ in rs]) for name, rs in runs.items()}
    # CPU is counted in clock ticks (10 ms): the mean over all rounds is the finer figure
    cpu = {name: sum(c for _, c in rs) / len(rs) for name, rs in runs.items()}
    print(
        f"\nFeast client, 1 entity x {N_FEATURES} features, {n_clients} client process(es) x "
        f"{args.requests} requests, {args.rounds} rounds (median rate, mean CPU), "
        f"{N_DRIVERS} drivers, "
        f"{os.cpu_count()} CPUs shared by clients and servers"
    )
    print_table(
        [
            "server",
            "requests/s (clients)",
            "server CPU/request",
            "requests/s per server core",
            "server peak memory",
        ],
        [
            [
                name,
                f"{rate[name]:.0f}",
                f"{cpu[name] * 1e6:.0f} us",
                f"{1 / cpu[name]:.0f}" if cpu[name] > 0 else "n/a",
                fmt_bytes(_hwm(servers[name].pid)),
            ]
            for name in runs
        ],
    )
    seen = rate["quiver"] / rate["feast"]
    paired = sorted(q[0] / f[0] for q, f in zip(runs["quiver"], runs["feast"], strict=True))
    capacity = cpu["feast"] / cpu["quiver"]
    print(
        f"quiver / feast, throughput seen by the clients: {seen:.2f}x "
        f"(paired rounds {paired[0]:.2f}-{paired[-1]:.2f}x; the clients' own ceiling, canned: "
        f"{rate['canned'] / rate['feast']:.2f}x)"
    )
    print(
        f"quiver / feast, requests per server core (server CPU per request): {capacity:.2f}x "
        f"(target >= 5x: {'met' if capacity >= 5 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
