"""A CRUD router for one kind of registry object, with history and restore.

Writes go through the facade's plan/apply, so the REST API follows the same rules as
``quiver plan`` / ``quiver apply``: a breaking update needs ``?allow_breaking=true`` and
deleting an object that another one references answers 409 naming the referrer.
"""

# No ``from __future__ import annotations`` here: the endpoints are built in a factory and
# FastAPI must see their real annotation objects, not names it cannot resolve.

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from quiver.definitions import KIND_LABELS, object_from_spec
from quiver.errors import ConflictError, InvalidError, NotFoundError
from quiver.server.access import visible
from quiver.server.deps import StoreDep
from quiver.server.schemas import (
    ERROR_RESPONSES,
    ChangeOut,
    FieldChangeOut,
    HistoryOut,
    ObjectListOut,
    ObjectRecordOut,
    QueryBool,
    RestoreRequest,
    StrictJSONRoute,
    VersionOut,
    VersionPath,
    WriteResult,
)

__all__ = ["make_registry_router", "record_out", "write_result"]

AllowBreaking = Annotated[
    QueryBool,
    Query(
        description="accept breaking changes (dtype, join keys, removed features in use): "
        "true or false"
    ),
]


def record_out(record: Any) -> ObjectRecordOut:
    """The API model of a registry :class:`~quiver.registry.ObjectRecord`."""
    return ObjectRecordOut(
        kind=record.kind,
        name=record.name,
        version=record.version,
        spec_hash=record.spec_hash,
        created_at=record.created_at,
        updated_at=record.updated_at,
        updated_by=record.updated_by,
        spec=record.spec,
    )


def write_result(plan: Any, obj: ObjectRecordOut, kind: str, name: str) -> WriteResult:
    """The API model of an applied plan, for the object ``kind``/``name``."""
    action = "unchanged"
    changes = []
    for change in plan.changes:
        if change.kind == kind and change.name == name:
            action = change.action
        if change.action == "unchanged":
            continue
        changes.append(
            ChangeOut(
                kind=change.kind,
                name=change.name,
                action=change.action,
                breaking=change.breaking,
                changes=[FieldChangeOut(**f.to_dict()) for f in change.fields],
            )
        )
    return WriteResult(action=action, object=obj, changes=changes)


class _Route(NamedTuple):
    """One route of a registry router, as :meth:`APIRouter.add_api_route` takes it."""

    method: str
    path: str
    endpoint: Callable[..., Any]
    response_model: type[BaseModel]
    operation_id: str
    summary: str
    status_code: int | None = None


def _build(store: Any, kind: str, spec: dict[str, Any]) -> Any:
    obj = object_from_spec(kind, spec)
    # A file source's path is read later, by every query: it must be one the caller may read
    # (under the server's read roots, after links; see quiver.security.paths), checked now.
    source = obj if kind == "data_source" else getattr(obj, "source", None)
    path = getattr(source, "path", None)
    if isinstance(path, str):
        from quiver.security.paths import FileBoundary

        FileBoundary.of(store).check_source(source, f"{KIND_LABELS[kind]} '{obj.name}': path")
    return obj


def make_registry_router(
    kind: str, path: str, singular: str, plural: str, spec_model: Any, tag: str
) -> APIRouter:
    """A router with list, get, create, update, delete, history and restore for ``kind``.

    Args:
        kind: The registry kind (``entity``, ``data_source``, ...).
        path: The URL segment (``entities``); the router's prefix is ``/api/v1/<path>``.
        singular: Used in operation ids (``get_<singular>``).
        plural: Used in operation ids (``list_<plural>``).
        spec_model: The pydantic request model of the object's spec.
        tag: The OpenAPI tag.
    """
    label = KIND_LABELS[kind]
    router = APIRouter(
        prefix=f"/api/v1/{path}",
        tags=[tag],
        responses=ERROR_RESPONSES,
        route_class=StrictJSONRoute,
    )

    def spec_of(body: Any, name: str | None) -> dict[str, Any]:
        spec = body.model_dump(by_alias=True)
        if name is not None:
            if spec.get("name") not in (None, name):
                raise InvalidError(
                    f"the body names {label} '{spec['name']}' but the path names '{name}'; "
                    "rename with a delete and a create"
                )
            spec["name"] = name
        elif not spec.get("name"):
            raise InvalidError(f"a {label} needs a 'name'")
        if kind == "data_source" and spec.get("format") is None:
            spec.pop("format", None)
        return spec

    def list_objects(store: StoreDep) -> ObjectListOut:
        records = visible(store, kind, store.registry.records(kind), lambda r: r.name)
        return ObjectListOut(items=[record_out(r) for r in records], count=len(records))

    def get_object(name: str, store: StoreDep) -> ObjectRecordOut:
        return record_out(store.registry.get_record(kind, name))

    def create_object(
        body: Any, store: StoreDep, allow_breaking: AllowBreaking = False
    ) -> WriteResult:
        spec = spec_of(body, None)
        obj = _build(store, kind, spec)
        if store.registry.find_record(kind, obj.name) is not None:
            raise ConflictError(
                f"{label} '{obj.name}' already exists; update it with PUT "
                f"/api/v1/{path}/{obj.name}",
                details={"kind": kind, "name": obj.name},
            )
        plan = store.apply(store.plan([obj]), allow_breaking=allow_breaking)
        return write_result(
            plan, record_out(store.registry.get_record(kind, obj.name)), kind, obj.name
        )

    def update_object(
        name: str, body: Any, store: StoreDep, allow_breaking: AllowBreaking = False
    ) -> WriteResult:
        store.registry.get_record(kind, name)
        obj = _build(store, kind, spec_of(body, name))
        plan = store.apply(store.plan([obj]), allow_breaking=allow_breaking)
        return write_result(plan, record_out(store.registry.get_record(kind, name)), kind, name)

    def delete_object(name: str, store: StoreDep) -> WriteResult:
        before = record_out(store.registry.get_record(kind, name))
        plan = store.delete(kind, name)
        return write_result(plan, before, kind, name)

    def object_history(name: str, store: StoreDep) -> HistoryOut:
        versions = store.history(name, kind)
        return HistoryOut(items=[VersionOut(**v.to_dict()) for v in versions], count=len(versions))

    def object_version(name: str, version: VersionPath, store: StoreDep) -> VersionOut:
        for v in store.history(name, kind):
            if v.version == version:
                return VersionOut(**v.to_dict())
        raise NotFoundError(f"{label} '{name}' has no version {version}")

    def restore_object(
        name: str, body: RestoreRequest, store: StoreDep, allow_breaking: AllowBreaking = False
    ) -> WriteResult:
        plan = store.restore(name, body.version, kind, allow_breaking=allow_breaking)
        return write_result(plan, record_out(store.registry.get_record(kind, name)), kind, name)

    body_type = Annotated[spec_model, Body()]
    create_object.__annotations__["body"] = body_type
    update_object.__annotations__["body"] = body_type

    a_label = f"an {label}" if label[0] in "aeiou" else f"a {label}"
    routes = (  # method, path, endpoint, response model, operation id, summary
        _Route(
            "GET",
            "",
            list_objects,
            ObjectListOut,
            f"list_{plural}",
            f"List {path.replace('-', ' ')}",
        ),
        _Route(
            "POST",
            "",
            create_object,
            WriteResult,
            f"create_{singular}",
            f"Create {a_label}",
            status_code=201,
        ),
        _Route("GET", "/{name}", get_object, ObjectRecordOut, f"get_{singular}", f"Get {a_label}"),
        _Route(
            "PUT", "/{name}", update_object, WriteResult, f"update_{singular}", f"Update {a_label}"
        ),
        _Route(
            "DELETE",
            "/{name}",
            delete_object,
            WriteResult,
            f"delete_{singular}",
            f"Delete {a_label}",
        ),
        _Route(
            "GET",
            "/{name}/history",
            object_history,
            HistoryOut,
            f"{singular}_history",
            f"Every version of {a_label}",
        ),
        _Route(
            "GET",
            "/{name}/history/{version}",
            object_version,
            VersionOut,
            f"get_{singular}_version",
            f"One version of {a_label}",
        ),
        _Route(
            "POST",
            "/{name}/restore",
            restore_object,
            WriteResult,
            f"restore_{singular}",
            f"Make an earlier version of {a_label} current again",
        ),
    )
    for route in routes:
        router.add_api_route(
            route.path,
            route.endpoint,
            methods=[route.method],
            response_model=route.response_model,
            status_code=route.status_code,
            operation_id=route.operation_id,
            summary=route.summary,
        )
    return router
