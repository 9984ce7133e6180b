"""Feature definitions for the Quiver churn demo.

`quiver apply` loads this module and registers every module-level entity, data source, feature
view and feature service it defines. Relative paths are relative to the repository root.
The label table for training is the `churn_labels` source (targets `churned` and
`lifetime_value`).

Computed features: `customer_behavior:order_spend_30d` is a SQL transformation of the source
row, `customer_order_activity` aggregates the order events over 7- and 30-day windows (hourly
tiles), and `customer_derived_features` is an on-demand view computed when read, from the other
two.
They are computed the same way in training sets, batch predictions and online serving.

Data quality: `customer_behavior`'s counts and charges declare `min_value: 0` with the `reject`
policy, so a push or a materialization holding a negative one is refused and writes nothing.
"""

from datetime import timedelta

from quiver import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    ValidationRules,
    ViewValidation,
)

# --- entity ---------------------------------------------------------------------------------

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type="int64",
    description="A subscriber of the service.",
    owner="growth@example.com",
    tags={"domain": "customer"},
)

# --- data sources ---------------------------------------------------------------------------

customer_behavior_source = FileSource(
    name="customer_behavior_source",
    path="data/customer_behavior.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created_timestamp",
    description="Weekly snapshots of each customer's usage, billing and support activity.",
)

customer_demographics_source = FileSource(
    name="customer_demographics_source",
    path="data/customer_demographics.parquet",
    timestamp_field="event_timestamp",
    description="Customer profile; a new row when a customer moves region.",
)

customer_contract_source = FileSource(
    name="customer_contract_source",
    path="data/customer_contract.parquet",
    timestamp_field="event_timestamp",
    description="Contract and billing settings; a new row whenever they change.",
)

order_events_source = FileSource(
    name="order_events_source",
    path="data/order_events.parquet",
    timestamp_field="event_timestamp",
    description="One row per order: order_id and amount.",
)

churn_labels = FileSource(
    name="churn_labels",
    path="data/churn_labels.parquet",
    timestamp_field="event_timestamp",
    description="Labels: whether the customer churned, and their lifetime value.",
)

# --- feature views --------------------------------------------------------------------------

# Counts and charges are never negative (checked at materialization and at push).
NON_NEGATIVE = ValidationRules(min_value=0)

customer_behavior = FeatureView(
    name="customer_behavior",
    entities=[customer],
    schema=[
        Field(
            name="tenure_months",
            dtype="int64",
            description="Months since sign-up.",
            validation_rules=NON_NEGATIVE,
        ),
        Field(
            name="monthly_charges",
            dtype="float64",
            description="Current monthly bill.",
            validation_rules=NON_NEGATIVE,
        ),
        Field(
            name="total_charges",
            dtype="float64",
            description="Total billed since sign-up.",
            validation_rules=NON_NEGATIVE,
        ),
        Field(
            name="support_tickets",
            dtype="int64",
            description="Support tickets opened in the last 30 days.",
            validation_rules=NON_NEGATIVE,
        ),
        Field(
            name="orders",
            dtype="int64",
            description="Orders placed in the last 30 days.",
            validation_rules=NON_NEGATIVE,
        ),
        Field(
            name="avg_order_value",
            dtype="float64",
            description="Average order value.",
            validation_rules=NON_NEGATIVE,
        ),
        Field(
            name="days_since_last_order",
            dtype="int64",
            description="Days since the last order (or since sign-up).",
            validation_rules=NON_NEGATIVE,
        ),
        # A SQL transformation: computed from the source row, offline and at materialization.
        Field(
            name="order_spend_30d",
            dtype="float64",
            description="Orders in the last 30 days times their average value.",
            transformation="orders * avg_order_value",
        ),
    ],
    source=customer_behavior_source,
    ttl=timedelta(days=30),
    online=True,
    # Rows breaking a rule are refused, at materialization and at push; nothing is written.
    validation=ViewValidation(policy="reject"),
    description="Usage, billing and support activity, snapshotted weekly.",
    tags={"team": "growth", "pii": "false"},
    owner="growth@example.com",
    # `quiver scheduler` (or `quiver serve --scheduler`) materializes it every 6 hours.
    materialization_schedule="0 */6 * * *",
)

customer_demographics = FeatureView(
    name="customer_demographics",
    entities=[customer],
    schema=[
        Field(name="age", dtype="int64", description="Age in years."),
        Field(name="gender", dtype="string", description="female, male or other."),
        Field(name="region", dtype="string", description="north, south, east, west or central."),
    ],
    source=customer_demographics_source,
    ttl=None,
    online=True,
    description="Slowly changing customer profile (no TTL: values never expire).",
    tags={"team": "growth", "pii": "true"},
    owner="growth@example.com",
)

customer_contract = FeatureView(
    name="customer_contract",
    entities=[customer],
    schema=[
        Field(
            name="contract_type",
            dtype="string",
            description="month-to-month, one_year or two_year.",
        ),
        Field(
            name="payment_method",
            dtype="string",
            description="credit_card, bank_transfer, electronic_check or mailed_check.",
        ),
        Field(name="paperless_billing", dtype="bool", description="Paperless billing enabled."),
    ],
    source=customer_contract_source,
    ttl=timedelta(days=365),
    online=True,
    description="The customer's current contract and billing settings.",
    tags={"team": "billing", "pii": "false"},
    owner="billing@example.com",
)

# Windowed aggregations over the order events: count_7d, count_30d, amount_sum_7d,
# amount_sum_30d, amount_mean_7d and amount_mean_30d. Tiles of one hour: at time t a window
# covers the orders after floor(t, 1h) - window, up to t.
customer_order_activity = FeatureView(
    name="customer_order_activity",
    entities=[customer],
    schema=[Field(name="amount", dtype="float64", description="Order amount.")],
    source=order_events_source,
    aggregations=[
        Aggregation(function="count", time_window=timedelta(days=7)),
        Aggregation(function="count", time_window=timedelta(days=30)),
        Aggregation(column="amount", function="sum", time_window=timedelta(days=7)),
        Aggregation(column="amount", function="sum", time_window=timedelta(days=30)),
        Aggregation(column="amount", function="mean", time_window=timedelta(days=7)),
        Aggregation(column="amount", function="mean", time_window=timedelta(days=30)),
    ],
    aggregation_interval=timedelta(hours=1),
    online=True,
    description="Orders and their amounts over the last 7 and 30 days.",
    tags={"team": "growth", "pii": "false"},
    owner="growth@example.com",
)

# --- on-demand features ---------------------------------------------------------------------

# Computed when read, from the point-in-time (offline) or online values of its sources.
customer_derived_features = OnDemandFeatureView(
    name="customer_derived_features",
    sources=[customer_behavior, customer_order_activity],
    schema=[
        Field(
            name="charges_per_month_of_tenure",
            dtype="float64",
            description="Total charges per month of tenure (null in the first month).",
            transformation="total_charges / NULLIF(tenure_months, 0)",
        ),
        Field(
            name="order_amount_7d_share",
            dtype="float64",
            description="The last 7 days' share of the last 30 days' order amount.",
            transformation="amount_sum_7d / NULLIF(amount_sum_30d, 0)",
        ),
    ],
    description="Ratios of billing and order features, computed on demand.",
    tags={"team": "growth"},
    owner="growth@example.com",
)

# --- feature service ------------------------------------------------------------------------

churn_prediction_v1 = FeatureService(
    name="churn_prediction_v1",
    features=[
        customer_behavior,
        customer_demographics,
        customer_contract,
        customer_order_activity,
        "customer_derived_features:*",  # an on-demand view, referenced by name
    ],
    description="All demo features, for the churn and lifetime-value models.",
    tags={"model": "churn"},
)
