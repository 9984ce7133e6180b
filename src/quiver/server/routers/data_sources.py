"""`/api/v1/data-sources`: CRUD, history and restore of data sources."""

from quiver.server.routers._registry import make_registry_router
from quiver.server.schemas import DataSourceSpec

router = make_registry_router(
    kind="data_source",
    path="data-sources",
    singular="data_source",
    plural="data_sources",
    spec_model=DataSourceSpec,
    tag="data-sources",
)
