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
in a new shuffled order each round (seeded). A rotation would keep the cyclic order, so that a
target would always run right after the same other one; with ``--monitoring`` the ``plain``
baseline then always followed the other route's ``cache_hit`` target and measured faster there,
which put monitoring at 0.85-0.94x of it, against 0.97-1.04x with the servers listed in another
order. The totals of every target cover the same spells; besides them,
each round's figures are divided by the reference's of the same round, and the median of those
paired ratios is printed with their range.

With ``--monitoring``, the same run compares three ``quiver serve`` of the same repo instead:
``plain`` (metrics and usage counts off), ``monitoring`` (both on, the defaults) and
``cache_hit`` (both on and the serving cache on: after the warm-up every key is cached), on both
online routes (targets: monitoring at least 0.95x the throughput of plain; a cache hit at least
1.5x the throughput of an uncached read, i.e. of ``monitoring``).

With ``--auth``, the same run compares authentication instead: two ``quiver serve`` of the same
repo, one with ``auth: none`` and one with ``auth: api_key`` (a ``reader`` key sent as
``Authorization: Bearer``), on both online routes; each api_key target's ratios are to the
``auth: none`` target of the same route (targets: server CPU per request at most 1.1x,
throughput at least 0.9x).

Run: ``python bench/bench_server.py [--duration 10] [--rounds 10] [--connections 2]
[--client wrk|asyncio] [--auth | --monitoring]``.
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


def _request(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
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
    port: int,
    path: str,
    bodies: list[bytes],
    stop_at: float,
    latencies: list[float],
    headers: dict[str, str] | None,
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    errors = 0
    i = 0
    try:
        while time.perf_counter() < stop_at:
            request = _request(path, bodies[i % len(bodies)], headers)
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


def load(
    port: int,
    path: str,
    bodies: list[bytes],
    duration: float,
    connections: int,
    headers: dict[str, str] | None = None,
) -> dict:
    """Closed-loop load for ``duration`` seconds; latencies (sorted), percentiles, throughput."""

    async def run() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        start = time.perf_counter()
        stop_at = start + duration
        errors = await asyncio.gather(
            *(
                _connection(port, path, bodies, stop_at, latencies, headers)
                for _ in range(connections)
            )
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
%(headers)slocal bodies = {%(bodies)s}
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


def wrk_script(
    directory: Path, path: str, bodies: list[bytes], headers: dict[str, str] | None = None
) -> Path:
    """A wrk Lua script posting ``bodies`` in turn to ``path``, printing its figures."""
    script = directory / f"wrk{len(list(directory.glob('wrk*.lua')))}.lua"
    lines = "".join(
        f"wrk.headers[{_lua_string(k.encode())}] = {_lua_string(v.encode())}\n"
        for k, v in (headers or {}).items()
    )
    text = _WRK_SCRIPT % {
        "bodies": ", ".join(map(_lua_string, bodies)),
        "path": path,
        "headers": lines,
    }
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
    parser.add_argument(
        "--auth",
        action="store_true",
        help="compare quiver with auth: api_key to quiver with auth: none (instead of the "
        "reference)",
    )
    parser.add_argument(
        "--monitoring",
        action="store_true",
        help="compare monitoring (metrics and usage counts) on with off, and a serving cache "
        "hit with an uncached read (instead of the reference)",
    )
    parser.add_argument(
        "--online-store",
        choices=["sqlite", "redis"],
        default="sqlite",
        help="the served repo's online store (redis: a redis-server started for the run)",
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

    redis_server = None
    if args.online_store == "redis":  # every quiver process of the run inherits the setting
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from _servers import start_redis

        redis_server = start_redis()
        os.environ["QUIVER_ONLINE_STORE__TYPE"] = "redis"
        os.environ["QUIVER_ONLINE_STORE__URL"] = redis_server.url
    try:
        _run(args)
    finally:
        if redis_server is not None:
            redis_server.stop()


def _run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_repo(Path(tmp) / "repo", args.customers)
        env = {**os.environ, "QUIVER_REPO": str(repo)}
        servers: tuple[str, ...] = ("none", "api_key") if args.auth else ("reference", "quiver")
        if args.monitoring:
            servers = tuple(MONITORING_ENV)
        ports = {name: _free_port() for name in servers}
        headers: dict[str, str] | None = None
        if args.monitoring:
            procs = {
                name: _serve_quiver(repo, ports[name], {**env, **MONITORING_ENV[name]})
                for name in servers
            }
        elif args.auth:
            headers = {"Authorization": f"Bearer {_reader_key(repo)}"}
            procs = {
                mode: _serve_quiver(repo, ports[mode], {**env, "QUIVER_AUTH__MODE": mode})
                for mode in servers
            }
        else:
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
                "quiver": _serve_quiver(repo, ports["quiver"], env),
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
            routes = ("/get-online-features", "/api/v1/serving/online")
            baselines: dict[str, str] = {}
            if args.monitoring:
                targets = [
                    (f"{name} {path}", ports[name], path, feast_bodies)
                    for path in routes
                    for name in servers
                ]
                baselines = {
                    f"{name} {path}": f"{base} {path}"
                    for path in routes
                    for name, base in (("monitoring", "plain"), ("cache_hit", "monitoring"))
                }
            elif args.auth:
                targets = [
                    (f"{mode} {path}", ports[mode], path, feast_bodies)
                    for path in routes
                    for mode in servers
                ]
                baselines = {f"api_key {path}": f"none {path}" for path in routes}
            else:
                targets = [("reference", ports["reference"], "/get-online-features", feast_bodies)]
                targets += [
                    (f"quiver {path}", ports["quiver"], path, feast_bodies) for path in routes
                ]
                baselines = {f"quiver {path}": "reference" for path in routes}
            sent = {name: headers if name.startswith("api_key") else None for name, *_ in targets}
            scripts = {
                name: wrk_script(Path(tmp), path, bodies, sent[name])
                for name, _, path, bodies in targets
            }

            def measure(
                name: str, port: int, path: str, bodies: list[bytes], seconds: float
            ) -> dict:
                if args.client == "wrk":
                    return load_wrk(port, scripts[name], int(seconds), args.connections)
                return load(port, path, bodies, seconds, args.connections, sent[name])

            for target in targets:  # warm-up: caches, lazy imports
                measure(*target, 1.0)
            results: dict[str, list[dict]] = {t[0]: [] for t in targets}
            pids = {ports[name]: proc.pid for name, proc in procs.items()}
            shuffle = random.Random(2).shuffle
            for _ in range(args.rounds):
                # Each round runs every target once, in a new order, so that a slow spell of the
                # machine, or the target run just before, favours no target.
                order = list(targets)
                shuffle(order)
                for name, port, path, bodies in order:
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
    report(results, args, baselines)


MONITORING_ENV = {
    "plain": {
        "QUIVER_MONITORING__METRICS_ENABLED": "false",
        "QUIVER_MONITORING__USAGE_ENABLED": "false",
    },
    "monitoring": {},
    "cache_hit": {"QUIVER_SERVING_CACHE__ENABLED": "true"},
}
"""``--monitoring``: ``plain`` (metrics and usage off), ``monitoring`` (both on, the default),
``cache_hit`` (both on and the serving cache: after the warm-up every key is cached)."""


def _serve_quiver(repo: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``quiver serve`` of ``repo`` on ``port``, as the benchmark runs it."""
    return subprocess.Popen(
        [
            *_quiver(),
            "serve",
            "--repo",
            str(repo),
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _reader_key(repo: Path) -> str:
    """A new ``reader`` key of ``repo`` (``quiver keys create``)."""
    out = subprocess.run(
        [*_quiver(), "keys", "create", "bench", "--role", "reader", "--json", "--repo", str(repo)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return str(json.loads(out)["key"])


def report(
    results: dict[str, list[dict]], args: argparse.Namespace, baselines: dict[str, str]
) -> None:
    """Print every target's figures over all its rounds, and its ratios to its baseline (the
    reference, or with ``--auth`` the same route with ``auth: none``)."""

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
    client = (
        "wrk, 1 thread" if args.client == "wrk" else "asyncio client (raw sockets) in this process"
    )
    print(
        f"load: {args.connections} keep-alive connections, closed loop, {args.duration:g}s per "
        f"target in {args.rounds} rounds of {args.duration / args.rounds:g}s (targets alternate, "
        f"order shuffled); {client}; {os.cpu_count()} CPUs shared by client and server; "
        "uvicorn, 1 worker, no access log, no proxy headers; 1 entity x 10 features"
    )
    print(
        f"{'target':40} {'requests':>9} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'p99/base':>8} {'rps/base':>8} {'server CPU/req':>15}"
    )
    for name, r in summary.items():
        cpu = f"{r['cpu_us']:12.0f} us" if r["cpu_us"] is not None else f"{'n/a':>15}"
        base = summary.get(baselines.get(name, ""))
        ratios = (
            f"{r['p99_ms'] / base['p99_ms']:8.2f} {r['rps'] / base['rps']:8.2f}"
            if base
            else f"{'-':>8} {'-':>8}"
        )
        print(
            f"{name:40} {r['requests']:9d} {r['rps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
            f"{ratios} {cpu}" + (f"  ({r['errors']} errors)" if r["errors"] else "")
        )
    print(
        "paired by round (each round's figure over its baseline's in the same round: median "
        "[min-max]; steadier than the totals when the machine's speed drifts):"
    )
    for name, runs in results.items():
        if name not in baselines:
            continue
        pairs = list(zip(runs, results[baselines[name]], strict=True))
        rps = sorted(r["rps"] / q["rps"] for r, q in pairs)
        p99 = sorted(r["p99_ms"] / q["p99_ms"] for r, q in pairs)
        cpu = sorted(
            (r["cpu_s"] / r["requests"]) / (q["cpu_s"] / q["requests"])
            for r, q in pairs
            if r.get("cpu_s") and q.get("cpu_s")
        )
        line = (
            f"  {name:38} rps/base {statistics.median(rps):.2f} [{rps[0]:.2f}-{rps[-1]:.2f}]  "
            f"p99/base {statistics.median(p99):.2f} [{p99[0]:.2f}-{p99[-1]:.2f}]"
        )
        if cpu:
            line += f"  CPU/req vs base {statistics.median(cpu):.2f} [{cpu[0]:.2f}-{cpu[-1]:.2f}]"
        print(line)
    if args.monitoring:
        print(
            "targets: monitoring (metrics + usage) vs plain on the same route: rps >= 0.95x; "
            "cache_hit vs monitoring (an uncached read, same settings otherwise): rps >= 1.5x"
        )
    elif args.auth:
        print(
            "targets: api_key vs none on the same route: server CPU/req <= 1.1x, rps >= 0.9x "
            "(server CPU/req: CPU time of the server process, user + system, per request)"
        )
    else:
        print(
            "targets: p99 <= 1.5x reference, rps >= 0.7x reference (server CPU/req: CPU time of "
            "the server process, user + system, per request; uvicorn and the kernel included)"
        )


if __name__ == "__main__":
    main()
