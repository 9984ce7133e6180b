"""`/api/v1/feature-views`: CRUD, history and restore of feature views."""

from quiver.server.routers._registry import make_registry_router
from quiver.server.schemas import FeatureViewSpec

router = make_registry_router(
    kind="feature_view",
    path="feature-views",
    singular="feature_view",
    plural="feature_views",
    spec_model=FeatureViewSpec,
    tag="feature-views",
)
