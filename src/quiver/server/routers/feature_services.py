"""`/api/v1/feature-services`: CRUD, history and restore of feature services."""

from quiver.server.routers._registry import make_registry_router
from quiver.server.schemas import FeatureServiceSpec

router = make_registry_router(
    kind="feature_service",
    path="feature-services",
    singular="feature_service",
    plural="feature_services",
    spec_model=FeatureServiceSpec,
    tag="feature-services",
)
