"""Benchmark: online serving over HTTP against a minimal ASGI + raw SQLite reference.

Bounded load on loopback only: for each target, a fixed duration with a few keep-alive
connections, each sending one request after the other (closed loop). Targets:

- ``reference``: a bare ASGI app (no framework) doing the same SQLite lookup as Quiver's online
  store (same tables, same key encoding) and answering JSON;
- ``quiver /get-online-features`` (Feast-compatible route) and ``quiver /api/v1/serving/online``.

All three run under uvicorn with the same settings as ``quiver serve`` (one worker, no access
log, no proxy headers, uvicorn's default loop and HTTP parser). Each request asks for 1 entity
and 10 features (7 of ``customer_behavior``, 3 of ``customer_demographics``), the key drawn from
1,000 bodies in turn. The load generator is ``wrk`` (Debian's package: C, one thread, a Lua
script that rotates the bodies and prints its whole latency histogram) where it is installed,
else an asyncio client on raw keep-alive sockets in this process (``--client asyncio``); it
shares the machine's cores with the server, so its settings are printed with the figures.
Besides latency and throughput, the CPU time each
server process spent per request (user + system, from ``/proc``; uvicorn and the kernel's
network work included) is printed.

The machine's speed drifts (a shared VM: the same server's throughput moves by 20% from one
second to the next), so each target's time is cut into short rounds and the targets take turns,
the order rotating each round. The totals of every target cover the same spells; besides them,
each round's figures are divided by the reference's of the same round, and the median of those
paired ratios is printed with their range.

Run: ``python bench/bench_server.py [--duration 10] [--rounds 10] [--connections 2]
[--client wrk|asyncio]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FEATURES = [
    "customer_behavior:tenure_months",
    "customer_behavior:monthly_charges",
    "customer_behavior:total_charges",
    "customer_behavior:support_tickets",
    "customer_behavior:orders",
    "customer_behavior:avg_order_value",
    "customer_behavior:days_since_last_order",
    "customer_demographics:age",
    "customer_demographics:gender",
    "customer_demographics:region",
]


# --- the reference server ----------------------------------------------------------------------


def reference_app(repo: Path) -> Any:
    """A bare ASGI app: parse the body, one SELECT per view, answer JSON. No framework."""
    import sqlite3

    from quiver.config import load_config
    from quiver.online.encoding import KeyEncoder

    config = load_config(repo)
    db = config.resolve(config.online_store.path)  # type: ignore[union-attr]
    conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    views: dict[str, list[str]] = {}
    for ref in FEATURES:
        view, feature = ref.split(":")
        views.setdefault(view, []).append(feature)
    statements = []
    for view, features in views.items():
        table = next(t for t in tables if t.startswith(f"{config.project}__{view}__"))
        cols = ", ".join(f'"f_{f}"' for f in features)
        statements.append((features, f'SELECT ts, {cols} FROM "{table}" WHERE k = ?'))
    encoder = KeyEncoder(["int64"])
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        key = request["entities"]["customer_id"][0]
        k = encoder.encode([key])
        values: dict[str, Any] = {}
        for features, sql in statements:
            row = conn.execute(sql, (k,)).fetchone()
            for i, f in enumerate(features):
                values[f] = row[i + 1] if row else None
        payload = json.dumps({"customer_id": key, "values": values}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def serve_reference(repo: Path, port: int) -> None:
    """Run the reference app under uvicorn with the same settings as ``quiver serve``."""
    import uvicorn

    uvicorn.run(
        reference_app(repo),
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # as `quiver serve` runs
    )


# --- load generator ----------------------------------------------------------------------------


def _request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length < 0:
        raise RuntimeError("the load generator needs responses with a Content-Length")
    await reader.readexactly(length)
    return status


async def _connection(
    port: int, path: str, bodies: list[bytes], stop_at: float, latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors = 0
    i = 0
    try:
        while time.perf_counter() < stop_at:
            request = _request(path, bodies[i % len(bodies)])
            i += 1
            t0 = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
    finally:
        writer.close()
    return errors


def load(port: int, path: str, bodies: list[bytes], duration: float, connections: int) -> dict:
    """Closed-loop load for ``duration`` seconds; latencies (sorted), percentiles, throughput."""

    async def run() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        start = time.perf_counter()
        stop_at = start + duration
        errors = await asyncio.gather(
            *(_connection(port, path, bodies, stop_at, latencies) for _ in range(connections))
        )
        return latencies, sum(errors), time.perf_counter() - start

    latencies, errors, elapsed = asyncio.run(run())
    latencies.sort()
    return {
        "latencies": latencies,
        "elapsed": elapsed,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%(bodies)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "%(path)s", nil, bodies[i %% #bodies + 1])
end
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "QUIVER-BENCH %%d %%d %%d\\n", summary.requests, summary.duration,
    errors.status + errors.connect + errors.read + errors.write + errors.timeout))
  -- the latency distribution as 1,000 quantiles (microseconds), merged across rounds
  for k = 0, 999 do
    io.write(string.format("%%d ", latency:percentile((k + 0.5) / 10)))
  end
  io.write("\\n")
end
"""


def _lua_string(body: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in body) + '"'


def wrk_script(directory: Path, path: str, bodies: list[bytes]) -> Path:
    """A wrk Lua script posting ``bodies`` in turn to ``path``, printing its figures."""
    script = directory / f"wrk{len(list(directory.glob('wrk*.lua')))}.lua"
    text = _WRK_SCRIPT % {"bodies": ", ".join(map(_lua_string, bodies)), "path": path}
    script.write_text(text)
    return script


def load_wrk(port: int, script: Path, duration: int, connections: int) -> dict:
    """Closed-loop load by ``wrk`` (one thread) for ``duration`` whole seconds."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("QUIVER-BENCH "))
    requests, elapsed_us, errors = map(int, lines[at].split()[1:])
    # 1,000 quantiles, each standing for a thousandth of the requests (see weighted_percentile).
    quantiles = [int(us) / 1e6 for us in lines[at + 1].split()]
    elapsed = elapsed_us / 1e6
    return {
        "latencies": quantiles,
        "weight": requests / len(quantiles),
        "elapsed": elapsed,
        "requests": requests,
        "errors": errors,
        "rps": requests / elapsed,
        "p50_ms": 1000 * percentile(quantiles, 0.50),
        "p99_ms": 1000 * percentile(quantiles, 0.99),
    }


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def weighted_percentile(samples: list[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile of ``(value, weight)`` samples (nearest rank by weight)."""
    ordered = sorted(samples)
    target = q * sum(w for _, w in ordered)
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen > target:
            return value
    return ordered[-1][0]


# --- orchestration -----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its threads so far (Linux ``/proc``; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _quiver() -> list[str]:
    exe = Path(sys.executable).with_name("quiver")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "quiver"]


def build_repo(directory: Path, customers: int) -> Path:
    """A demo repo, applied and materialized, with fresh behaviour rows for every customer."""
    subprocess.run(
        [*_quiver(), "init", str(directory), "--demo", "--customers", str(customers)],
        check=True,
        capture_output=True,
    )
    subprocess.run([*_quiver(), "apply", "--repo", str(directory)], check=True, capture_output=True)
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=directory) as store:
        store.materialize(datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC))
        # fresh rows so the 30-day TTL of customer_behavior leaves the values present
        now = datetime.now(UTC)
        rng = random.Random(7)
        store.push(
            "customer_behavior",
            [
                {
                    "customer_id": i,
                    "event_timestamp": now,
                    "tenure_months": rng.randint(1, 72),
                    "monthly_charges": rng.uniform(10, 120),
                    "total_charges": rng.uniform(10, 8000),
                    "support_tickets": rng.randint(0, 5),
                    "orders": rng.randint(0, 20),
                    "avg_order_value": rng.uniform(5, 200),
                    "days_since_last_order": rng.randint(0, 60),
                }
                for i in range(1, customers + 1)
            ],
        )
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target")
    parser.add_argument("--connections", type=int, default=2, help="keep-alive connections")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument(
        "--rounds", type=int, help="rounds, each running every target (default: 10 with wrk, 40)"
    )
    parser.add_argument(
        "--client",
        choices=["wrk", "asyncio"],
        help="load generator: wrk (C, Debian's 'wrk'; the default where installed) or an "
        "asyncio client in this process",
    )
    parser.add_argument("--reference-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_server:
        serve_reference(args.reference_server, args.port)
        return
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "asyncio"
    if args.rounds is None:
        args.rounds = 10 if args.client == "wrk" else 40
    if args.client == "wrk" and args.duration / args.rounds != int(args.duration / args.rounds):
        parser.error("with wrk, --duration / --rounds must be whole seconds")

    with tempfile.TemporaryDirectory() as tmp:
        repo = build_repo(Path(tmp) / "repo", args.customers)
        env = {**os.environ, "QUIVER_REPO": str(repo)}
        ports = {"reference": _free_port(), "quiver": _free_port()}
        procs = {
            "reference": subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--reference-server",
                    str(repo),
                    "--port",
                    str(ports["reference"]),
                ],
                env=env,
            ),
            "quiver": subprocess.Popen(
                [
                    *_quiver(),
                    "serve",
                    "--repo",
                    str(repo),
                    "--port",
                    str(ports["quiver"]),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
            ),
        }
        try:
            for name, proc in procs.items():
                _wait(ports[name], proc)
            rng = random.Random(1)
            keys = [rng.randint(1, args.customers) for _ in range(1000)]
            feast_bodies = [
                json.dumps({"features": FEATURES, "entities": {"customer_id": [k]}}).encode()
                for k in keys
            ]
            targets = [
                ("reference", ports["reference"], "/get-online-features", feast_bodies),
                (
                    "quiver /get-online-features",
                    ports["quiver"],
                    "/get-online-features",
                    feast_bodies,
                ),
                (
                    "quiver /api/v1/serving/online",
                    ports["quiver"],
                    "/api/v1/serving/online",
                    feast_bodies,
                ),
            ]
            scripts = {
                name: wrk_script(Path(tmp), path, bodies) for name, _, path, bodies in targets
            }

            def measure(
                name: str, port: int, path: str, bodies: list[bytes], seconds: float
            ) -> dict:
                if args.client == "wrk":
                    return load_wrk(port, scripts[name], int(seconds), args.connections)
                return load(port, path, bodies, seconds, args.connections)

            for target in targets:  # warm-up: caches, lazy imports
                measure(*target, 1.0)
            results: dict[str, list[dict]] = {t[0]: [] for t in targets}
            pids = {
                ports["reference"]: procs["reference"].pid,
                ports["quiver"]: procs["quiver"].pid,
            }
            for i in range(args.rounds):
                # Each round runs every target once, the order rotating from round to round, so
                # that a slow spell of the machine hits every target alike.
                shift = i % len(targets)
                for name, port, path, bodies in targets[shift:] + targets[:shift]:
                    before = cpu_seconds(pids[port])
                    run = measure(name, port, path, bodies, args.duration / args.rounds)
                    after = cpu_seconds(pids[port])
                    if before is not None and after is not None:
                        run["cpu_s"] = after - before
                    results[name].append(run)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=15)
    report(results, args)


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Print every target's figures over all its rounds, and its ratios to the reference."""

    def merged(runs: list[dict]) -> dict:
        samples = [(t, r.get("weight", 1.0)) for r in runs for t in r["latencies"]]
        requests = sum(r["requests"] for r in runs)
        cpu = [r["cpu_s"] for r in runs if "cpu_s" in r]
        return {
            "requests": requests,
            "errors": sum(r["errors"] for r in runs),
            "rps": requests / sum(r["elapsed"] for r in runs),
            "p50_ms": 1000 * weighted_percentile(samples, 0.50),
            "p99_ms": 1000 * weighted_percentile(samples, 0.99),
            "cpu_us": 1e6 * sum(cpu) / requests if len(cpu) == len(runs) and requests else None,
        }

    summary = {name: merged(runs) for name, runs in results.items()}
    ref = summary["reference"]
    client = (
        "wrk, 1 thread" if args.client == "wrk" else "asyncio client (raw sockets) in this process"
    )
    print(
        f"load: {args.connections} keep-alive connections, closed loop, {args.duration:g}s per "
        f"target in {args.rounds} rounds of {args.duration / args.rounds:g}s (targets alternate, "
        f"order rotating); {client}; {os.cpu_count()} CPUs shared by client and server; "
        "uvicorn, 1 worker, no access log, no proxy headers; 1 entity x 10 features"
    )
    print(
        f"{'target':32} {'requests':>9} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/ref':>8} {'rps/ref':>8} {'server CPU/req':>15}"
    )
    for name, r in summary.items():
        cpu = f"{r['cpu_us']:12.0f} us" if r["cpu_us"] is not None else f"{'n/a':>15}"
        print(
            f"{name:32} {r['requests']:9d} {r['rps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
            f"{r['p99_ms'] / ref['p99_ms']:8.2f} {r['rps'] / ref['rps']:8.2f} {cpu}"
            + (f"  ({r['errors']} errors)" if r["errors"] else "")
        )
    print(
        "paired by round (each round's figure over the reference's in the same round: median "
        "[min-max]; steadier than the totals when the machine's speed drifts):"
    )
    for name, runs in results.items():
        if name == "reference":
            continue
        pairs = list(zip(runs, results["reference"], strict=True))
        rps = sorted(r["rps"] / q["rps"] for r, q in pairs)
        p99 = sorted(r["p99_ms"] / q["p99_ms"] for r, q in pairs)
        cpu = sorted(
            (r["cpu_s"] / r["requests"]) / (q["cpu_s"] / q["requests"])
            for r, q in pairs
            if r.get("cpu_s") and q.get("cpu_s")
        )
        line = (
            f"  {name:30} rps/ref {statistics.median(rps):.2f} [{rps[0]:.2f}-{rps[-1]:.2f}]  "
            f"p99/ref {statistics.median(p99):.2f} [{p99[0]:.2f}-{p99[-1]:.2f}]"
        )
        if cpu:
            line += f"  CPU/req vs ref {statistics.median(cpu):.2f} [{cpu[0]:.2f}-{cpu[-1]:.2f}]"
        print(line)
    print(
        "targets: p99 <= 1.5x reference, rps >= 0.7x reference (server CPU/req: CPU time of the "
        "server process, user + system, per request; uvicorn and the kernel included)"
    )


if __name__ == "__main__":
    main()
