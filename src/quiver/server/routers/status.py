"""``/api/v1/status``: the project, its backends, counts and the last materializations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from quiver.server._runs import as_datetime, last_runs, pick
from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES, LastMaterialization, StatusResponse

__all__ = ["router", "status_info"]

router = APIRouter(prefix="/api/v1/status", tags=["status"], responses=ERROR_RESPONSES)


def model_count(store: Any) -> int | None:
    """How many models are registered, or ``None`` where the ML module is not available."""
    from quiver.errors import MissingExtraError

    try:
        return len(store.list_models())
    except (ImportError, MissingExtraError, NotImplementedError):
        return None


def status_info(store: Any) -> StatusResponse:
    """The status of ``store`` (shared with the ``/feast/status`` route)."""
    from quiver import __version__

    registry = store.registry
    counts: dict[str, int | None] = {
        "entities": registry.count("entity"),
        "data_sources": registry.count("data_source"),
        "feature_views": registry.count("feature_view"),
        "feature_services": registry.count("feature_service"),
        "models": model_count(store),
    }
    last = []
    for view, run in sorted(last_runs(registry).items()):
        rows = pick(run, "rows", "row_count", "rows_written")
        last.append(
            LastMaterialization(
                view=view,
                status=pick(run, "status"),
                start=as_datetime(pick(run, "start")),
                end=as_datetime(pick(run, "end")),
                finished_at=as_datetime(pick(run, "finished_at", "ended_at", "completed_at")),
                rows=int(rows) if rows is not None else None,
            )
        )
    return StatusResponse(
        project=store.project,
        version=__version__,
        registry_type=registry.dialect,
        online_store_type=store.config.online_store.type,
        offline_engine_type=store.config.offline_engine.type,
        counts=counts,
        last_materialization=last,
    )


@router.get("", response_model=StatusResponse, operation_id="get_status", summary="Status")
def get_status(store: StoreDep) -> StatusResponse:
    """Project, registry and store types, object counts, last materialization per view."""
    return status_info(store)
