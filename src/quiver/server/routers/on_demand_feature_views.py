"""`/api/v1/on-demand-feature-views`: CRUD, history and restore of on-demand feature views."""

from quiver.server.routers._registry import make_registry_router
from quiver.server.schemas import OnDemandFeatureViewSpec

router = make_registry_router(
    kind="on_demand_feature_view",
    path="on-demand-feature-views",
    singular="on_demand_feature_view",
    plural="on_demand_feature_views",
    spec_model=OnDemandFeatureViewSpec,
    tag="on-demand-feature-views",
)
