"""Concurrent applies from real OS processes must not corrupt the registry or lose a change.

Workers run in processes started with the "spawn" context (a fresh interpreter each), and the
CLI test runs several ``quiver apply`` commands at once. Every scenario runs on SQLite and on a
real PostgreSQL server.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from quiver.config import build_config
from quiver.definitions import Entity, FeatureView, Field, FileSource
from quiver.errors import ConcurrentChangeError
from quiver.store import FeatureStore

WORKERS = 3
STEPS = 2
JOIN_TIMEOUT = 120.0


def _open(url: str, repo: Path) -> FeatureStore:
    return FeatureStore(
        config=build_config({"project": "shop", "registry": url, "repo_path": repo})
    )


CUSTOMER = Entity(name="customer", join_keys=["customer_id"])
SOURCE = FileSource(name="orders_source", path="data/orders.parquet")


def _view(name: str = "orders", **overrides: Any) -> FeatureView:
    args: dict[str, Any] = {
        "name": name,
        "entities": ["customer"],
        "schema": [Field(name="total", dtype="int64")],
        "source": "orders_source",
    }
    args.update(overrides)
    return FeatureView(**args)


# --- workers (module level, so that spawned interpreters can import them) ------------------------


def _disjoint_worker(url: str, repo: str, index: int, barrier: Any, results: Any) -> None:
    """Open the (maybe brand-new) registry at the same moment as the others; add own objects."""
    try:
        barrier.wait(timeout=JOIN_TIMEOUT)
        with _open(url, Path(repo)) as store:
            objects = [CUSTOMER, SOURCE, _view(f"view_{index}")]
            for attempt in range(50):
                try:
                    store.apply(objects, author=f"worker{index}")
                    results.put(("ok", index, attempt))
                    return
                except ConcurrentChangeError:
                    continue  # someone created the shared entity first: plan again
            results.put(("gave up", index, 50))
    except BaseException as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


def _racing_worker(url: str, repo: str, index: int, barrier: Any, results: Any) -> None:
    """Plan an update from the same base version as every other worker, then apply it."""
    try:
        with _open(url, Path(repo)) as store:
            plan = store.plan([_view(description=f"worker {index}")])
            barrier.wait(timeout=JOIN_TIMEOUT)
            try:
                store.apply(plan, author=f"worker{index}")
                results.put(("ok", index, ""))
            except ConcurrentChangeError as exc:
                results.put(("conflict", index, exc.message))
    except BaseException as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


def _tagging_worker(url: str, repo: str, index: int, barrier: Any, results: Any) -> None:
    """Read-modify-write: add tags one at a time, retrying on conflicts, until all landed."""
    try:
        with _open(url, Path(repo)) as store:
            barrier.wait(timeout=JOIN_TIMEOUT)
            conflicts = 0
            for step in range(STEPS):
                while True:
                    record = store.registry.get_record("feature_view", "orders")
                    spec = dict(record.spec)
                    spec["tags"] = {**spec["tags"], f"w{index}_{step}": "x"}
                    plan = store.plan([FeatureView.from_spec(spec)])
                    (change,) = plan.pending
                    if change.base_version != record.version:
                        conflicts += 1  # changed between our read and the plan
                        continue
                    try:
                        store.apply(plan, author=f"worker{index}")
                        break
                    except ConcurrentChangeError:
                        conflicts += 1
            results.put(("ok", index, conflicts))
    except BaseException as exc:
        results.put(("error", index, f"{type(exc).__name__}: {exc}"))


def _run_workers(target: Any, url: str, repo: Path, count: int = WORKERS) -> list[tuple[Any, ...]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(url, str(repo), i, barrier, results), daemon=True)
        for i in range(count)
    ]
    for p in processes:
        p.start()
    out = []
    try:
        for _ in processes:
            out.append(results.get(timeout=JOIN_TIMEOUT))
    finally:
        for p in processes:
            p.join(timeout=JOIN_TIMEOUT)
            if p.is_alive():  # pragma: no cover - only when a worker hangs
                p.kill()
                p.join()
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return sorted(out, key=lambda r: r[1])


def _assert_consistent(url: str) -> None:
    """Each current object points at its latest version; versions are contiguous from 1."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            current = {
                (r.kind, r.name): (r.version, r.spec_hash, r.spec)
                for r in conn.execute(sa.text("SELECT * FROM objects"))
            }
            history: dict[tuple[str, str], list[Any]] = {}
            for r in conn.execute(
                sa.text("SELECT * FROM object_versions ORDER BY kind, name, version")
            ):
                history.setdefault((r.kind, r.name), []).append(r)
    finally:
        engine.dispose()
    for key, versions in history.items():
        assert [v.version for v in versions] == list(range(1, len(versions) + 1)), key
        last = versions[-1]
        if last.operation == "delete":
            assert key not in current
        else:
            assert current[key] == (last.version, last.spec_hash, last.spec), key
    assert set(current) <= set(history)


# --- scenarios -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_processes_opening_a_new_registry_and_applying_at_once(
    registry_url: str, tmp_path: Path
) -> None:
    results = _run_workers(_disjoint_worker, registry_url, tmp_path)
    assert [r[0] for r in results] == ["ok"] * WORKERS, results
    with _open(registry_url, tmp_path) as store:
        assert sorted(v.name for v in store.list_feature_views()) == [
            f"view_{i}" for i in range(WORKERS)
        ]
        assert len(store.history("customer")) == 1  # created once, then unchanged
        for i in range(WORKERS):
            (version,) = store.history(f"view_{i}")
            assert version.author == f"worker{i}"
    _assert_consistent(registry_url)


@pytest.mark.slow
def test_racing_plans_for_one_object_let_exactly_one_win(registry_url: str, tmp_path: Path) -> None:
    with _open(registry_url, tmp_path) as store:
        store.apply([CUSTOMER, SOURCE, _view()])
    results = _run_workers(_racing_worker, registry_url, tmp_path)
    outcomes = [r[0] for r in results]
    assert outcomes.count("ok") == 1, results
    assert outcomes.count("conflict") == WORKERS - 1, results
    assert all("run plan again" in r[2] for r in results if r[0] == "conflict")
    winner = next(r[1] for r in results if r[0] == "ok")
    with _open(registry_url, tmp_path) as store:
        history = store.history("orders")
        assert [v.version for v in history] == [1, 2]
        assert history[1].author == f"worker{winner}"
        assert store.get_feature_view("orders").description == f"worker {winner}"
    _assert_consistent(registry_url)


@pytest.mark.slow
def test_retrying_writers_lose_no_change(registry_url: str, tmp_path: Path) -> None:
    with _open(registry_url, tmp_path) as store:
        store.apply([CUSTOMER, SOURCE, _view()])
    results = _run_workers(_tagging_worker, registry_url, tmp_path)
    assert [r[0] for r in results] == ["ok"] * WORKERS, results
    with _open(registry_url, tmp_path) as store:
        tags = store.get_feature_view("orders").tags
        assert set(tags) == {f"w{i}_{s}" for i in range(WORKERS) for s in range(STEPS)}
        history = store.history("orders")
        assert len(history) == 1 + WORKERS * STEPS
        sizes = [len(v.spec["tags"]) for v in history]
        assert sizes == list(range(len(history)))  # each version added exactly one tag
    _assert_consistent(registry_url)


def _quiver_command() -> list[str]:
    found = shutil.which("quiver")
    return [found] if found else [sys.executable, "-m", "quiver"]


@pytest.mark.slow
def test_concurrent_quiver_apply_commands(registry_url: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "quiver.yaml").write_text(f"project: shop\nregistry: {registry_url}\n")
    files = []
    for i in range(WORKERS):
        path = repo / f"team_{i}.yaml"
        path.write_text(
            f"entities: [{{name: entity_{i}}}]\n"
            f"data_sources: [{{name: source_{i}, path: data/s{i}.parquet}}]\n"
            f"feature_views:\n"
            f"  - {{name: view_{i}, entities: [entity_{i}], source: source_{i},"
            f" features: [{{name: f, dtype: int64}}]}}\n"
        )
        files.append(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER_")}
    env["QUIVER_USER"] = "ci"
    procs = [
        subprocess.Popen(
            [*_quiver_command(), "apply", "-f", str(path), "--repo", str(repo), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for path in files
    ]
    outputs = [p.communicate(timeout=JOIN_TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, outputs
    with _open(registry_url, repo) as store:
        assert sorted(e.name for e in store.list_entities()) == [
            f"entity_{i}" for i in range(WORKERS)
        ]
        assert len(store.list_feature_views()) == WORKERS
    _assert_consistent(registry_url)


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    yield
    for child in multiprocessing.active_children():  # pragma: no cover - defensive
        child.kill()
        child.join()
