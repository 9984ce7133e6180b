"""`/api/v1/entities`: CRUD, history and restore of entities."""

from quiver.server.routers._registry import make_registry_router
from quiver.server.schemas import EntitySpec

router = make_registry_router(
    kind="entity",
    path="entities",
    singular="entity",
    plural="entities",
    spec_model=EntitySpec,
    tag="entities",
)
