"""The FastAPI application: ``create_app(store)`` and the uvicorn factory ``app_from_env``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI

from quiver.config import ServerConfig
from quiver.monitoring.usage import ATTR as USAGE_ATTR
from quiver.server._docs import install_offline_docs
from quiver.server._jobs import install_stop_on_signals, start_background
from quiver.server._openapi import declare_error_responses
from quiver.server.access import AuditMiddleware, Gate, authorize, declare_security
from quiver.server.errors import GuardMiddleware, install_error_handlers
from quiver.server.fastpath import QuiverAPI
from quiver.server.schemas import single_query_values

if TYPE_CHECKING:
    from quiver.monitoring.usage import UsageRecorder
    from quiver.store import FeatureStore

__all__ = ["app_from_env", "create_app", "freeze_start_up"]

logger = logging.getLogger("quiver.server")

_DESCRIPTION = """\
Quiver's REST API: the registry (entities, data sources, feature views, feature services),
feature discovery, online and historical serving, materialization and push under `/api/v1`;
Feast's feature server routes (`/get-online-features`, `/push`, ...) and the `/feast` platform
routes for teams moving from Feast.

Every error is `{"error": {"type", "message", "details"}}` with the right status code.

Requests are taken as declared, strictly: a boolean query parameter is `true` or `false`; a
query parameter that is not a list is given once; times are ISO 8601 strings (without an
offset, UTC), never numbers; JSON bodies carry the declared JSON types (no `0`/`1` or `"true"`
for a boolean, no `"5"` for a number). Anything else is a 422.
"""

_TAGS = [
    {"name": "health", "description": "Probes."},
    {"name": "status", "description": "What the server serves."},
    {"name": "entities", "description": "Business objects and their join keys."},
    {"name": "data-sources", "description": "Where raw feature rows live."},
    {"name": "feature-views", "description": "Features of one source for some entities."},
    {"name": "feature-services", "description": "Feature selections used by models."},
    {"name": "feature-sets", "description": "The specification's feature sets (feature views)."},
    {"name": "features", "description": "Feature discovery; features of feature sets."},
    {"name": "serving", "description": "Online values and point-in-time training data."},
    {"name": "materializations", "description": "Offline to online copies."},
    {"name": "schedules", "description": "Materialization schedules of views."},
    {"name": "jobs", "description": "Background jobs: materializations, training, predictions."},
    {"name": "push", "description": "Fresh rows straight into the stores."},
    {"name": "models", "description": "The model registry."},
    {"name": "predictions", "description": "Batch and online predictions."},
    {"name": "feast", "description": "Feast feature server compatible routes."},
    {"name": "feast-platform", "description": "The `/feast` platform API."},
    {"name": "security", "description": "Permission policies and the audit log (admins)."},
    {
        "name": "monitoring",
        "description": "Prometheus metrics, usage counts, feature statistics and freshness.",
    },
]


def _routers() -> list[APIRouter]:
    from quiver.server.compat import feast, platform, platform_ml
    from quiver.server.routers import (
        data_sources,
        entities,
        feature_services,
        feature_sets,
        feature_views,
        features,
        health,
        jobs,
        materializations,
        models,
        on_demand_feature_views,
        predictions,
        push,
        schedules,
        security,
        serving,
        statistics,
        status,
        validate,
    )

    # Routes are matched in order: the online serving routes (the hot path) come first.
    modules = (
        serving,
        feast,
        health,
        status,
        entities,
        data_sources,
        feature_views,
        on_demand_feature_views,
        feature_services,
        feature_sets,
        features,
        materializations,
        schedules,
        jobs,
        push,
        models,
        predictions,
        platform,
        platform_ml,
        security,
        statistics,
        validate,
    )
    return [m.router for m in modules]


def create_app(
    store: FeatureStore,
    *,
    settings: ServerConfig | None = None,
    close_store: bool = False,
    scheduler: bool = False,
) -> FastAPI:
    """The REST API over ``store``.

    Args:
        store: The feature store every route works on.
        settings: Limits of the server (``max_inline_rows``, ``max_body_bytes``); default:
            ``store.config.server``.
        close_store: Close ``store`` when the app shuts down (for apps that own their store).
        scheduler: Run the views' materialization schedules in this process
            (``quiver serve --scheduler``).

    Returns:
        A FastAPI app; serve it with uvicorn (``quiver serve`` does).
    """
    from quiver import __version__

    settings = settings or store.config.server
    gate = Gate(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        _warm_up(store)
        restore_signals = install_stop_on_signals(_app)  # SIGTERM cancels running jobs
        watcher = asyncio.create_task(_watch_registry(store, gate))
        stop_background = await start_background(_app, scheduler)  # jobs, schedules
        recorder = _start_usage(store)
        flusher = None if recorder is None else asyncio.create_task(_flush_usage(store, recorder))
        try:
            yield
        finally:
            await stop_background()
            for task in (watcher, flusher):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if recorder is not None:
                store.__dict__.pop(USAGE_ATTR, None)
                await asyncio.to_thread(recorder.close)  # the last counts flushed
            gate.close()
            restore_signals()
            runner = getattr(_app.state, "jobs", None)
            if runner is not None:
                await asyncio.to_thread(runner.close)
            if close_store:
                store.close()

    app = QuiverAPI(  # FastAPI with a fast path for the online routes (quiver.server.fastpath)
        title="Quiver",
        version=__version__,
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        dependencies=[Depends(authorize), Depends(single_query_values)],
        lifespan=lifespan,
        docs_url=None,  # served from the installed package below, not from a CDN
        redoc_url=None,
    )
    install_offline_docs(app)
    app.state.store = store
    app.state.settings = settings
    app.state.gate = gate
    install_error_handlers(app)
    app.add_middleware(GuardMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(AuditMiddleware, gate=gate)  # outside the guard: sees its answers
    monitoring = store.config.monitoring
    routers = _routers()
    if monitoring.metrics_enabled:
        _install_metrics(app, store)
        from quiver.server.routers import metrics

        routers.append(metrics.router)
    from quiver.server.routers import usage

    routers.append(usage.router)
    for router in routers:
        app.include_router(router)
    declare_security(app, gate)
    declare_error_responses(app)
    return app


def _install_metrics(app: QuiverAPI, store: FeatureStore) -> None:
    """Observe requests (the middleware; the fast path itself) and serving cache lookups."""
    from quiver.errors import MissingExtraError

    try:
        from quiver.monitoring.metrics import server_metrics

        metrics = server_metrics()
    except MissingExtraError as exc:  # prometheus-client is missing: serve without metrics
        logger.warning("metrics are off: %s", exc)
        return
    from quiver.monitoring.cache import serving_cache
    from quiver.server._metrics import MetricsMiddleware

    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: times every answer
    app._metrics = metrics
    try:
        cache = serving_cache(store)
    except Exception as exc:
        logger.warning("cannot open the serving cache yet: %s", exc)
        cache = None
    if cache is not None:
        cache.observe = metrics.observe_cache


def _start_usage(store: FeatureStore) -> UsageRecorder | None:
    """The store's usage recorder, while the app runs (``monitoring.usage_enabled``)."""
    if not store.config.monitoring.usage_enabled:
        return None
    from quiver.monitoring.usage import UsageRecorder

    recorder = UsageRecorder(store.config.registry_url, store.project)
    store.__dict__[USAGE_ATTR] = recorder
    return recorder


async def _flush_usage(store: FeatureStore, recorder: UsageRecorder) -> None:
    """Add the usage counts to the registry every ``monitoring.usage_flush_seconds``."""
    from starlette.concurrency import run_in_threadpool

    every = store.config.monitoring.usage_flush_seconds
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(recorder.flush)
        except Exception as exc:  # the registry is down: the counts wait for the next flush
            logger.warning("usage counts not flushed yet: %s", exc)


def _warm_up(store: FeatureStore) -> None:
    """Open the registry and the online store before the first request (failures: /ready)."""
    for name in ("registry", "online_store"):
        try:
            getattr(store, name)
        except Exception as exc:  # reported by /ready; the server still starts
            logger.warning("cannot open the %s yet: %s", name.replace("_", " "), exc)


async def _watch_registry(store: FeatureStore, gate: Gate) -> None:
    """Check the registry for other processes' changes twice as often as serving would on its
    own (in the threadpool), so that the online routes never wait for that query; the same
    check drops cached API keys and permission decisions when keys or permissions change."""
    from starlette.concurrency import run_in_threadpool

    from quiver.online.serving import REVISION_CHECK_SECONDS, check_registry

    def check() -> None:
        check_registry(store)
        gate.refresh()

    while True:
        await asyncio.sleep(REVISION_CHECK_SECONDS / 2)
        try:
            await run_in_threadpool(check)
        except Exception as exc:  # the registry cannot be opened: /ready reports it
            logger.debug("registry check failed: %s", exc)


def app_from_env() -> FastAPI:
    """The app of the repo named by ``QUIVER_REPO`` (default: the current directory).

    This is the import-string factory used by ``quiver serve --workers N``:
    ``uvicorn --factory quiver.server.app:app_from_env``.
    """
    from quiver.store import FeatureStore

    store = FeatureStore(repo_path=os.environ.get("QUIVER_REPO", "."))
    scheduler = os.environ.get("QUIVER_SERVE_SCHEDULER") == "1"
    app = create_app(store, close_store=True, scheduler=scheduler)
    freeze_start_up()
    return app


def freeze_start_up() -> None:
    """Keep the objects of start-up (modules, the app, the store) out of garbage collection.

    A serving process holds about 120,000 of them, and each full collection of the cyclic
    garbage collector walked them all: a pause of about 50 ms in the middle of a request.
    Frozen (``gc.freeze()``), the collector no longer looks at them; they live as long as the
    process anyway. For a server's entry point (``quiver serve``, :func:`app_from_env`), not
    for library code: it is process-wide.
    """
    gc.collect()
    gc.freeze()
