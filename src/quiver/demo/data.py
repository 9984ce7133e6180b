"""Deterministic synthetic customer-churn data for ``quiver init --demo``, quickstarts and tests.

The generator writes four Parquet tables that together look like a small subscription business:

- ``customer_behavior``: weekly behaviour snapshots per customer (the features drift over time,
  so a point-in-time join matters);
- ``customer_demographics``: one row per customer, plus a second row for a few who moved region;
- ``customer_contract``: the contract state, with a new row whenever a contract changes;
- ``churn_labels``: the label (entity) table; ``churned`` and ``lifetime_value`` are drawn from the
  feature values *as of each label's timestamp*, plus noise;
- ``order_events``: one row per order (``order_id``, ``amount``), the events behind the weekly
  ``orders``, ``avg_order_value`` and ``days_since_last_order`` snapshots: each week's orders fall
  in the week before its snapshot, the latest at exactly ``days_since_last_order`` days before it,
  and amounts are drawn around that week's ``avg_order_value``. Drawn after every other table,
  so adding it changed none of them.

Everything comes from one ``numpy.random.default_rng(seed)`` and no wall clock is read, so the same
arguments give byte-for-byte identical files (for a given pyarrow version).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "BEHAVIOR_SCHEMA",
    "CONTRACT_SCHEMA",
    "CONTRACT_TYPES",
    "DEMOGRAPHICS_SCHEMA",
    "GENDERS",
    "LABELS_SCHEMA",
    "ORDER_EVENTS_SCHEMA",
    "PAYMENT_METHODS",
    "REGIONS",
    "TABLE_NAMES",
    "build_demo_tables",
    "generate_demo_data",
]

GENDERS: tuple[str, ...] = ("female", "male", "other")
REGIONS: tuple[str, ...] = ("north", "south", "east", "west", "central")
CONTRACT_TYPES: tuple[str, ...] = ("month-to-month", "one_year", "two_year")
PAYMENT_METHODS: tuple[str, ...] = (
    "credit_card",
    "bank_transfer",
    "electronic_check",
    "mailed_check",
)

TIMESTAMP = pa.timestamp("us", tz="UTC")

BEHAVIOR_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_timestamp", TIMESTAMP),
        ("created_timestamp", TIMESTAMP),
        ("tenure_months", pa.int64()),
        ("monthly_charges", pa.float64()),
        ("total_charges", pa.float64()),
        ("support_tickets", pa.int64()),
        ("orders", pa.int64()),
        ("avg_order_value", pa.float64()),
        ("days_since_last_order", pa.int64()),
    ]
)
DEMOGRAPHICS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_timestamp", TIMESTAMP),
        ("age", pa.int64()),
        ("gender", pa.string()),
        ("region", pa.string()),
    ]
)
CONTRACT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_timestamp", TIMESTAMP),
        ("contract_type", pa.string()),
        ("payment_method", pa.string()),
        ("paperless_billing", pa.bool_()),
    ]
)
LABELS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_timestamp", TIMESTAMP),
        ("churned", pa.int64()),
        ("lifetime_value", pa.float64()),
    ]
)
ORDER_EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("event_timestamp", TIMESTAMP),
        ("order_id", pa.int64()),
        ("amount", pa.float64()),
    ]
)

TABLE_NAMES: tuple[str, ...] = (
    "customer_behavior",
    "customer_demographics",
    "customer_contract",
    "churn_labels",
    "order_events",
)
"""The tables written, in order; each is stored as ``<name>.parquet``."""

_SCHEMAS = {
    "customer_behavior": BEHAVIOR_SCHEMA,
    "customer_demographics": DEMOGRAPHICS_SCHEMA,
    "customer_contract": CONTRACT_SCHEMA,
    "churn_labels": LABELS_SCHEMA,
    "order_events": ORDER_EVENTS_SCHEMA,
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3_600 * _US_PER_SECOND
_US_PER_DAY = 86_400 * _US_PER_SECOND
_US_PER_WEEK = 7 * _US_PER_DAY
_DAYS_PER_MONTH = 30.4375
_BURN_IN_WEEKS = 4  # weeks simulated before the window so 30-day counts are full from week 0
_WINDOW_WEEKS = 4  # "last 30 days" ~ the last four weekly buckets
_TARGET_CHURN_RATE = 0.25
_DEFAULT_END = datetime(2026, 1, 1, tzinfo=UTC)


def generate_demo_data(
    data_dir: str | Path,
    customers: int = 10_000,
    seed: int = 42,
    weeks: int = 52,
    end: datetime = _DEFAULT_END,
) -> dict[str, Path]:
    """Write the demo churn dataset as zstd-compressed Parquet files.

    Args:
        data_dir: The directory to write into (created if missing).
        customers: How many customers to simulate (ids ``1..customers``).
        seed: Seed for ``numpy.random.default_rng``; the output depends on nothing else.
        weeks: How many weekly behaviour snapshots the window holds.
        end: The time of the last snapshot (a naive datetime is taken as UTC).

    Returns:
        ``{table name: path}`` for ``customer_behavior``, ``customer_demographics``,
        ``customer_contract``, ``churn_labels`` and ``order_events``.

    Raises:
        ValueError: if ``customers`` or ``weeks`` is less than 1.
    """
    tables = build_demo_tables(customers=customers, seed=seed, weeks=weeks, end=end)
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, table in tables.items():
        path = out / f"{name}.parquet"
        pq.write_table(table, path, compression="zstd")
        paths[name] = path
    return paths


def build_demo_tables(
    customers: int = 10_000,
    seed: int = 42,
    weeks: int = 52,
    end: datetime = _DEFAULT_END,
) -> dict[str, pa.Table]:
    """Build the demo churn tables in memory (see :func:`generate_demo_data`).

    Args:
        customers: How many customers to simulate (ids ``1..customers``).
        seed: Seed for ``numpy.random.default_rng``.
        weeks: How many weekly behaviour snapshots the window holds.
        end: The time of the last snapshot (a naive datetime is taken as UTC).

    Returns:
        ``{table name: pyarrow.Table}``, each table sorted by ``customer_id, event_timestamp``.

    Raises:
        ValueError: if ``customers`` or ``weeks`` is less than 1.
    """
    if int(customers) < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if int(weeks) < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    customers, weeks = int(customers), int(weeks)
    rng = np.random.default_rng(seed)
    end_us = _to_us(end)
    snapshots_us = end_us - (weeks - 1 - np.arange(weeks, dtype=np.int64)) * _US_PER_WEEK

    people = _customers(rng, customers, weeks, snapshots_us)
    behavior, order_grid = _behavior(rng, people, weeks, snapshots_us)
    demographics = _demographics(rng, people, end_us)
    contract = _contract(rng, people, end_us)
    labels = _labels(rng, people, end_us, behavior, demographics, contract)
    orders = _order_events(rng, people, snapshots_us, order_grid)

    frames = {
        "customer_behavior": behavior,
        "customer_demographics": demographics,
        "customer_contract": contract,
        "churn_labels": labels,
        "order_events": orders,
    }
    return {name: _to_arrow(frames[name], _SCHEMAS[name]) for name in TABLE_NAMES}


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


def _to_us(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category index per row of ``probs`` (rows sum to 1)."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(size=(probs.shape[0], 1))
    return np.minimum((u >= cumulative).sum(axis=1), probs.shape[1] - 1)


def _ar1(rng: np.random.Generator, shape: tuple[int, int], phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) paths along axis 1 (a loop over weeks, vectorised over customers)."""
    noise = rng.normal(0.0, sd, size=shape)
    out = np.empty(shape)
    out[:, 0] = noise[:, 0] / np.sqrt(1.0 - phi * phi)
    for t in range(1, shape[1]):
        out[:, t] = phi * out[:, t - 1] + noise[:, t]
    return out


def _rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum over ``window`` columns (fewer at the start)."""
    csum = np.cumsum(values, axis=1)
    out = csum.copy()
    out[:, window:] -= csum[:, :-window]
    return out


def _customers(
    rng: np.random.Generator, n: int, weeks: int, snapshots_us: np.ndarray
) -> dict[str, np.ndarray]:
    """Static attributes: join week, tenure at the start, demographics, first contract."""
    if weeks >= 6:
        late = rng.random(n) < 0.3
        join_week = np.where(late, rng.integers(1, weeks - 3, size=n), 0)
    else:
        late = np.zeros(n, dtype=bool)
        join_week = np.zeros(n, dtype=np.int64)
    initial_tenure = np.where(late, 0, rng.integers(0, 72, size=n))

    age = np.clip(np.rint(rng.normal(42.0, 14.0, size=n)), 18, 85).astype(np.int64)
    gender = _categorical(rng, np.tile([0.49, 0.49, 0.02], (n, 1)))
    region = _categorical(rng, np.tile([0.22, 0.18, 0.2, 0.2, 0.2], (n, 1)))

    # Long-standing customers are more likely to be on long contracts.
    mtm = 0.65 - 0.006 * initial_tenure
    one_year = np.full(n, 0.22)
    contract = _categorical(rng, np.column_stack([mtm, one_year, 1.0 - mtm - one_year]))
    payment = _categorical(rng, np.tile([0.24, 0.24, 0.34, 0.18], (n, 1)))
    paperless = rng.random(n) < 0.6

    return {
        "customer_id": np.arange(1, n + 1, dtype=np.int64),
        "late": late,
        "join_week": join_week.astype(np.int64),
        "first_us": snapshots_us[join_week],
        "initial_tenure": initial_tenure.astype(np.int64),
        "age": age,
        "gender": gender,
        "region": region,
        "contract": contract,
        "payment": payment,
        "paperless": paperless,
    }


def _behavior(
    rng: np.random.Generator,
    people: dict[str, np.ndarray],
    weeks: int,
    snapshots_us: np.ndarray,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Weekly snapshots; a (customers x weeks) grid with a burn-in, flattened at the end.

    Also returns the grid the order events are drawn from: ``weekly_orders``, ``day_offset``
    (days before the snapshot of each week's last order) and ``avg_order_value``, burn-in
    included (customers x (burn-in + weeks)).
    """
    n = people["customer_id"].size
    burn = _BURN_IN_WEEKS
    grid = weeks + burn
    shape = (n, grid)
    week_idx = np.arange(grid)[None, :]
    start = np.where(people["late"], people["join_week"] + burn, 0)
    active = week_idx >= start[:, None]

    # Monthly charges: a per-customer level, a slow random walk and rare plan changes.
    contract_shift = np.array([4.0, -3.0, -9.0])[people["contract"]]
    base_charge = rng.uniform(22.0, 112.0, size=n) + contract_shift
    steps = rng.normal(0.0, 0.7, size=shape)
    steps += (rng.random(shape) < 0.01) * rng.normal(0.0, 12.0, size=shape)
    monthly = np.clip(base_charge[:, None] + np.cumsum(steps, axis=1), 18.25, 150.0)

    # Engagement: ticket and order propensities drift (AR(1)) and are negatively correlated.
    ticket_drift = _ar1(rng, shape, phi=0.85, sd=0.35)
    order_drift = 0.85 * _ar1(rng, shape, phi=0.85, sd=0.3) - 0.5 * ticket_drift
    ticket_rate = np.exp(rng.normal(np.log(0.12), 0.8, size=n))[:, None] * np.exp(ticket_drift)
    order_rate = np.exp(rng.normal(np.log(0.45), 0.7, size=n))[:, None] * np.exp(order_drift)
    weekly_tickets = np.where(active, rng.poisson(np.minimum(ticket_rate, 2.5)), 0)
    weekly_orders = np.where(active, rng.poisson(np.minimum(order_rate, 4.0)), 0)
    tickets_30d = _rolling_sum(weekly_tickets, _WINDOW_WEEKS)
    orders_30d = _rolling_sum(weekly_orders, _WINDOW_WEEKS)

    # Days since the last order: from the last week with an order plus a day offset within it.
    last_week = np.maximum.accumulate(np.where(weekly_orders > 0, week_idx, -1), axis=1)
    day_offset = rng.integers(0, 7, size=shape)
    offset_at_last = np.take_along_axis(day_offset, np.maximum(last_week, 0), axis=1)
    prior_gap = np.where(people["late"], rng.integers(0, 7, size=n), rng.integers(7, 120, size=n))
    never = prior_gap[:, None] + (week_idx - start[:, None]) * 7
    days_since = np.where(last_week >= 0, (week_idx - last_week) * 7 + offset_at_last, never)

    aov_walk = np.cumsum(rng.normal(0.0, 0.03, size=shape), axis=1)
    base_aov = np.exp(rng.normal(np.log(45.0), 0.45, size=n))[:, None]
    avg_order_value = np.maximum(base_aov * np.exp(aov_walk), 5.0)

    order_grid = {
        "weekly_orders": weekly_orders,
        "day_offset": day_offset,
        "avg_order_value": avg_order_value,
    }
    # Keep the window only.
    window = slice(burn, grid)
    monthly = monthly[:, window]
    tickets_30d = tickets_30d[:, window]
    orders_30d = orders_30d[:, window]
    days_since = days_since[:, window]
    avg_order_value = avg_order_value[:, window]

    k = np.arange(weeks)[None, :]
    join = people["join_week"][:, None]
    in_window = k >= join
    weeks_since_join = np.maximum(k - join, 0)
    tenure = people["initial_tenure"][:, None] + np.floor(weeks_since_join * 7 / _DAYS_PER_MONTH)
    initial_total = (people["initial_tenure"] * monthly[:, 0] * rng.uniform(0.85, 1.05, size=n))[
        :, None
    ]
    weekly_charge = np.where(in_window, monthly * 7 / _DAYS_PER_MONTH, 0.0)
    total = initial_total + np.cumsum(weekly_charge, axis=1)

    rows, cols = np.nonzero(in_window)  # row-major: sorted by customer, then week
    event_us = snapshots_us[cols]
    created_us = event_us + rng.integers(60, 15 * 60, size=rows.size) * _US_PER_SECOND
    frame = pd.DataFrame(
        {
            "customer_id": people["customer_id"][rows],
            "event_timestamp": event_us,
            "created_timestamp": created_us,
            "tenure_months": tenure[rows, cols].astype(np.int64),
            "monthly_charges": np.round(monthly[rows, cols], 2),
            "total_charges": np.round(total[rows, cols], 2),
            "support_tickets": tickets_30d[rows, cols].astype(np.int64),
            "orders": orders_30d[rows, cols].astype(np.int64),
            "avg_order_value": np.round(avg_order_value[rows, cols], 2),
            "days_since_last_order": days_since[rows, cols].astype(np.int64),
        }
    )
    return frame, order_grid


def _uniform_after(
    rng: np.random.Generator, start_us: np.ndarray, end_us: int, margin_us: int
) -> np.ndarray:
    """Whole-second times uniformly in ``[start + margin, end]`` (``end`` if that is empty)."""
    lo = np.minimum(start_us + margin_us, end_us)
    span = end_us - lo
    offset = np.floor(rng.random(start_us.size) * span / _US_PER_SECOND).astype(np.int64)
    return lo + offset * _US_PER_SECOND


def _demographics(
    rng: np.random.Generator, people: dict[str, np.ndarray], end_us: int
) -> pd.DataFrame:
    """One row at sign-up per customer, and a second row for the few who moved region."""
    n = people["customer_id"].size
    signup_us = people["first_us"] - rng.integers(0, 30 * 86_400, size=n) * _US_PER_SECOND
    movers = np.flatnonzero((rng.random(n) < 0.03) & (people["first_us"] < end_us))
    moved_us = _uniform_after(rng, people["first_us"][movers], end_us, _US_PER_DAY)
    new_region = (people["region"][movers] + rng.integers(1, len(REGIONS), size=movers.size)) % len(
        REGIONS
    )
    idx = np.concatenate([np.arange(n), movers])
    frame = pd.DataFrame(
        {
            "customer_id": people["customer_id"][idx],
            "event_timestamp": np.concatenate([signup_us, moved_us]),
            "age": people["age"][idx],
            "gender": np.asarray(GENDERS, dtype=object)[people["gender"][idx]],
            "region": np.asarray(REGIONS, dtype=object)[
                np.concatenate([people["region"], new_region])
            ],
        }
    )
    return _sort(frame)


def _contract(rng: np.random.Generator, people: dict[str, np.ndarray], end_us: int) -> pd.DataFrame:
    """The first contract (just before the first snapshot) and occasional later changes."""
    n = people["customer_id"].size
    # Signed at most six days before the first snapshot, so a 365-day TTL always covers a
    # 52-week window.
    signed_us = people["first_us"] - rng.integers(0, 6 * 86_400, size=n) * _US_PER_SECOND
    changes = _categorical(rng, np.tile([0.78, 0.18, 0.04], (n, 1)))
    changes = np.where(people["first_us"] < end_us, changes, 0)
    who = np.repeat(np.arange(n), changes)
    changed_us = _uniform_after(rng, people["first_us"][who], end_us, _US_PER_HOUR)
    new_contract = (
        people["contract"][who] + rng.integers(1, len(CONTRACT_TYPES), size=who.size)
    ) % (len(CONTRACT_TYPES))
    switch_payment = rng.random(who.size) < 0.5
    new_payment = np.where(
        switch_payment,
        _categorical(rng, np.tile([0.3, 0.3, 0.25, 0.15], (who.size, 1))),
        people["payment"][who],
    )
    new_paperless = np.where(
        rng.random(who.size) < 0.2, ~people["paperless"][who], people["paperless"][who]
    )
    idx = np.concatenate([np.arange(n), who])
    frame = pd.DataFrame(
        {
            "customer_id": people["customer_id"][idx],
            "event_timestamp": np.concatenate([signed_us, changed_us]),
            "contract_type": np.asarray(CONTRACT_TYPES, dtype=object)[
                np.concatenate([people["contract"], new_contract])
            ],
            "payment_method": np.asarray(PAYMENT_METHODS, dtype=object)[
                np.concatenate([people["payment"], new_payment])
            ],
            "paperless_billing": np.concatenate([people["paperless"], new_paperless]),
        }
    )
    return _sort(frame)


def _as_of(left: pd.DataFrame, right: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The latest ``right`` row at or before each ``left`` row, per customer."""
    right = right[["customer_id", "event_timestamp", *columns]].rename(
        columns={"event_timestamp": "_feature_ts"}
    )
    merged = pd.merge_asof(
        left.sort_values("_label_ts", kind="stable"),
        right.sort_values("_feature_ts", kind="stable"),
        left_on="_label_ts",
        right_on="_feature_ts",
        by="customer_id",
        direction="backward",
    )
    return merged.sort_values("_row", kind="stable").drop(columns="_feature_ts")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    """The shift ``b`` with ``mean(sigmoid(logit + b)) == rate`` (bisection, deterministic)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _sigmoid(logit + mid).mean() < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _labels(
    rng: np.random.Generator,
    people: dict[str, np.ndarray],
    end_us: int,
    behavior: pd.DataFrame,
    demographics: pd.DataFrame,
    contract: pd.DataFrame,
) -> pd.DataFrame:
    """About two labels per customer, drawn from the features as of each label's time."""
    n = people["customer_id"].size
    per_customer = 1 + rng.binomial(2, 0.5, size=n)
    who = np.repeat(np.arange(n), per_customer)
    label_us = _uniform_after(rng, people["first_us"][who], end_us, _US_PER_HOUR)
    frame = pd.DataFrame(
        {
            "customer_id": people["customer_id"][who],
            "_label_ts": label_us,
            "_row": np.arange(who.size),
        }
    )
    frame = _as_of(
        frame,
        behavior,
        [
            "tenure_months",
            "monthly_charges",
            "total_charges",
            "support_tickets",
            "orders",
            "avg_order_value",
            "days_since_last_order",
        ],
    )
    frame = _as_of(frame, demographics, ["age", "region"])
    frame = _as_of(frame, contract, ["contract_type", "payment_method", "paperless_billing"])

    tickets = frame["support_tickets"].to_numpy(dtype=float)
    tenure = frame["tenure_months"].to_numpy(dtype=float)
    monthly = frame["monthly_charges"].to_numpy(dtype=float)
    orders = frame["orders"].to_numpy(dtype=float)
    aov = frame["avg_order_value"].to_numpy(dtype=float)
    days_since = frame["days_since_last_order"].to_numpy(dtype=float)
    age = frame["age"].to_numpy(dtype=float)
    contract_type = frame["contract_type"].to_numpy()
    payment = frame["payment_method"].to_numpy()
    paperless = frame["paperless_billing"].to_numpy(dtype=bool)
    region = frame["region"].to_numpy()

    contract_risk = np.select(
        [contract_type == "month-to-month", contract_type == "one_year"], [1.3, 0.4], 0.0
    )
    logit = (
        0.45 * np.minimum(tickets, 8)
        + contract_risk
        + 0.7 * (payment == "electronic_check")
        + 0.25 * paperless
        + 0.02 * np.minimum(days_since, 90)
        + 0.025 * (monthly - 65.0)
        - 0.045 * np.minimum(tenure, 72)
        - 0.1 * np.minimum(orders, 10)
        + 0.3 * (age < 30)
        + 0.15 * (region == "south")
        + rng.normal(0.0, 0.6, size=tenure.size)
    )
    p_churn = _sigmoid(logit + _intercept_for_rate(logit, _TARGET_CHURN_RATE))
    churned = (rng.random(p_churn.size) < p_churn).astype(np.int64)

    horizon = np.select(
        [contract_type == "month-to-month", contract_type == "one_year"], [10.0, 20.0], 32.0
    )
    lifetime_value = (
        (monthly * horizon * (1.0 + tenure / 60.0) + 3.0 * orders * aov)
        * (1.0 - 0.5 * p_churn)
        * rng.lognormal(0.0, 0.2, size=tenure.size)
    )
    out = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy(dtype=np.int64),
            "event_timestamp": frame["_label_ts"].to_numpy(dtype=np.int64),
            "churned": churned,
            "lifetime_value": np.round(lifetime_value, 2),
        }
    )
    return _sort(out)


def _order_events(
    rng: np.random.Generator,
    people: dict[str, np.ndarray],
    snapshots_us: np.ndarray,
    grid: dict[str, np.ndarray],
) -> pd.DataFrame:
    """One row per order of the behaviour grid (burn-in included), consistent with the snapshots.

    Week ``k``'s orders lie in ``(snapshot_{k-1}, snapshot_k]``: the last one ``day_offset``
    whole days (and under 23 hours) before ``snapshot_k``, so that ``days_since_last_order`` is
    the whole days since it; the others at whole seconds between the week's start and it.
    Amounts are lognormal around the week's ``avg_order_value`` (their mean is close to it).
    """
    weekly = grid["weekly_orders"]
    columns = weekly.shape[1]
    burn = columns - snapshots_us.size
    grid_us = snapshots_us[0] + (np.arange(columns, dtype=np.int64) - burn) * _US_PER_WEEK
    rows, cols = np.nonzero(weekly)  # row-major: by customer, then week
    counts = weekly[rows, cols].astype(np.int64)
    who = np.repeat(rows, counts)
    week = np.repeat(cols, counts)
    is_last = np.arange(who.size) == np.repeat(np.cumsum(counts) - 1, counts)
    within_day_s = rng.integers(0, 23 * 3_600, size=who.size)  # the last order's time of day
    last_us = (
        grid_us[week]
        - grid["day_offset"][who, week].astype(np.int64) * _US_PER_DAY
        - within_day_s * _US_PER_SECOND
    )
    week_start_us = grid_us[week] - _US_PER_WEEK
    span_s = (last_us - week_start_us) // _US_PER_SECOND  # at least an hour
    other_us = (
        week_start_us
        + (1 + np.floor(rng.random(who.size) * (span_s - 1))).astype(np.int64) * _US_PER_SECOND
    )
    event_us = np.where(is_last, last_us, other_us)
    amount = grid["avg_order_value"][who, week] * rng.lognormal(-0.045, 0.3, size=who.size)
    frame = _sort(
        pd.DataFrame(
            {
                "customer_id": people["customer_id"][who],
                "event_timestamp": event_us,
                "amount": np.round(np.maximum(amount, 1.0), 2),
            }
        )
    )
    frame["order_id"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame


def _sort(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["customer_id", "event_timestamp"], kind="stable").reset_index(
        drop=True
    )


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema`` (timestamps given as int64 microseconds)."""
    arrays = []
    for field in schema:
        values = frame[field.name].to_numpy()
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values.astype(np.int64), type=pa.int64()).view(field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
