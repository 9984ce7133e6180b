"""``/api/v1/push``: write fresh rows of a feature view to the online and/or offline store."""

from __future__ import annotations

from fastapi import APIRouter

from quiver.server._convert import push_table, rows_to_columns
from quiver.server.deps import SettingsDep, StoreDep
from quiver.server.schemas import ERROR_RESPONSES, PushRequest, PushResponse, StrictJSONRoute

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/push", tags=["push"], responses=ERROR_RESPONSES, route_class=StrictJSONRoute
)


@router.post("", response_model=PushResponse, operation_id="push", summary="Push rows of a view")
def push(body: PushRequest, store: StoreDep, settings: SettingsDep) -> PushResponse:
    """Validate rows (join keys, the source's timestamp, features) and write them.

    Timestamps are ISO 8601 strings; ``to`` is ``online``, ``offline`` or ``both``. Rows
    failing the view's validation rules are refused (422, nothing written), left out or
    written, per the view's policy; ``validation`` gives the counts.
    """
    from quiver.errors import PayloadTooLargeError

    if len(body.rows) > settings.max_inline_rows:
        raise PayloadTooLargeError(
            f"{len(body.rows)} rows is more than the limit of {settings.max_inline_rows} "
            "(server.max_inline_rows); push in smaller batches",
            details={"rows": len(body.rows), "limit": settings.max_inline_rows},
        )
    table = push_table(store, body.view, rows_to_columns(body.rows))
    written = store.push(body.view, table, to=body.to)
    counts = getattr(written, "validation", None)
    return PushResponse(
        view=body.view,
        rows=int(written),
        to=body.to,
        validation=counts.to_dict() if counts is not None else None,
    )
