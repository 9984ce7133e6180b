"""Time-windowed aggregations: the definition (:class:`Aggregation`) and its semantics.

A feature view over an event source may declare ``aggregations``; each one is a feature whose
value at time ``t`` for an entity key is ``function(column)`` over the view's events of that key
with ``start(t) < event_ts <= t``, where ``start(t) = floor(t / interval) * interval - window``
and ``interval`` is the view's ``aggregation_interval`` (the tile size). At a tile boundary
``start(t) = t - window`` exactly; between two boundaries the window also covers the elapsed
part of the current tile, so it spans between ``window`` and ``window + interval`` (Chronon's
"sawtooth" windows). The same rule holds offline (:mod:`quiver.features.aggregation_sql`) and
online (:mod:`quiver.features.tiles`), so both give the same value for the same key and time.

This module is imported by :mod:`quiver.definitions` and stays light (pydantic and the standard
library only).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, field_validator, model_validator
from pydantic import Field as PydanticField

__all__ = [
    "AGGREGATION_FUNCTIONS",
    "Aggregation",
    "aggregation_dtype",
    "default_interval",
    "format_duration",
    "parse_duration",
]

AggregationFunction = Literal[
    "count", "sum", "mean", "min", "max", "stddev", "count_distinct", "last"
]
AGGREGATION_FUNCTIONS: tuple[str, ...] = (
    "count",
    "sum",
    "mean",
    "min",
    "max",
    "stddev",
    "count_distinct",
    "last",
)
"""The aggregation functions, as named in definitions."""

_NUMERIC = ("int32", "int64", "float32", "float64")
_ACCEPTS: dict[str, tuple[str, ...] | None] = {
    "count": None,  # any column (or every event)
    "sum": _NUMERIC,
    "mean": _NUMERIC,
    "stddev": _NUMERIC,
    "min": (*_NUMERIC, "timestamp"),
    "max": (*_NUMERIC, "timestamp"),
    "count_distinct": ("int32", "int64", "float32", "float64", "string", "bool", "timestamp"),
    "last": ("int32", "int64", "float32", "float64", "string", "bool", "timestamp"),
}
_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"^\s*(\d+)\s*(d|h|m|s)\s*$")
MAX_INTERVAL = timedelta(hours=1)
"""The default tile size is the greatest common divisor of the windows and this."""


def parse_duration(value: Any, what: str = "duration") -> timedelta:
    """A positive whole number of seconds from ``5m``/``1h``/``7d`` text, a timedelta or seconds.

    Raises:
        ValueError: anything else (pydantic turns it into an :class:`~quiver.errors.InvalidError`).
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a duration such as '1h' or '7d', not a bool")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{what} {value!r} is not a duration; use a number and a unit: '30s', '5m', "
                "'1h', '7d'"
            )
        delta = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    elif isinstance(value, (int, float)):
        delta = timedelta(seconds=value)
    elif isinstance(value, timedelta):
        delta = value
    else:
        raise ValueError(f"{what} must be a duration such as '1h' or '7d'")
    if delta <= timedelta(0):
        raise ValueError(f"{what} must be positive, got {format_duration(delta)}")
    if delta.microseconds:
        raise ValueError(f"{what} must be a whole number of seconds")
    return delta


def format_duration(delta: timedelta) -> str:
    """``delta`` in the largest unit that divides it: ``7d``, ``90m``, ``45s``."""
    seconds = int(delta.total_seconds())
    for unit, size in _UNITS.items():
        if seconds % size == 0 and seconds:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def default_interval(windows: list[timedelta]) -> timedelta:
    """The tile size used when a view declares none: gcd(windows, 1 hour)."""
    seconds = int(MAX_INTERVAL.total_seconds())
    for w in windows:
        seconds = math.gcd(seconds, int(w.total_seconds()))
    return timedelta(seconds=seconds)


def aggregation_dtype(function: str, column_dtype: str | None) -> str:
    """The dtype of an aggregated feature: ``count``/``count_distinct`` are ``int64``,
    ``mean``/``stddev`` ``float64``, ``sum`` ``int64`` over integers and ``float64`` over floats,
    ``min``/``max``/``last`` the column's dtype."""
    if function in ("count", "count_distinct"):
        return "int64"
    if function in ("mean", "stddev"):
        return "float64"
    assert column_dtype is not None
    if function == "sum":
        return "int64" if column_dtype in ("int32", "int64") else "float64"
    return column_dtype


class Aggregation(BaseModel):
    """One time-windowed aggregated feature of a feature view.

    Attributes:
        column: The source column aggregated (a field of the view's schema); ``None`` or
            ``"*"`` for ``count`` counts events.
        function: ``count``, ``sum``, ``mean``, ``min``, ``max``, ``stddev`` (the sample standard
            deviation, as DuckDB's ``stddev_samp``: null below two values), ``count_distinct``
            or ``last`` (the value of the latest event in the window; ties on the event time go
            to the greatest created time, then the greatest value). Every function but
            ``count(*)`` skips null values.
        time_window: The window (``window`` in specs): ``timedelta`` or ``5m``, ``1h``, ``7d``.
        name: The feature's name; default ``<column>_<function>_<window>`` (``count_<window>``
            for ``count(*)``), e.g. ``amount_sum_7d``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    column: str | None = None
    function: AggregationFunction
    time_window: timedelta = PydanticField(validation_alias=AliasChoices("time_window", "window"))
    name: str = ""

    @field_validator("column", mode="before")
    @classmethod
    def _column(cls, value: Any) -> Any:
        if value in (None, "*", ""):
            return None
        from quiver.definitions import validate_name

        return validate_name(value, "aggregation column") if isinstance(value, str) else value

    @field_validator("time_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return parse_duration(value, "window")

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        if self.column is None and self.function != "count":
            raise ValueError(f"aggregation function '{self.function}' needs a column")
        if not self.name:
            window = format_duration(self.time_window)
            name = f"{self.column}_{self.function}_{window}" if self.column else f"count_{window}"
            object.__setattr__(self, "name", name)
        from quiver.definitions import validate_name

        try:
            validate_name(self.name, "aggregation name")
        except Exception as exc:  # an InvalidError: reported as a pydantic value error
            raise ValueError(str(exc)) from None
        return self

    @property
    def window_us(self) -> int:
        """The window in microseconds."""
        return int(self.time_window.total_seconds()) * 1_000_000

    def dtype(self, column_dtype: str | None) -> str:
        """The feature's dtype given the column's (see :func:`aggregation_dtype`)."""
        return aggregation_dtype(self.function, column_dtype)

    def check_column(self, view: str, column_dtype: str | None) -> None:
        """Raise ``ValueError`` if the function does not take a column of ``column_dtype``."""
        accepts = _ACCEPTS[self.function]
        if accepts is None or self.column is None:
            return
        if column_dtype not in accepts:
            raise ValueError(
                f"feature view '{view}': aggregation '{self.name}': {self.function} does not "
                f"take column '{self.column}' of dtype {column_dtype}; it takes "
                + ", ".join(accepts)
            )

    def to_spec(self) -> dict[str, Any]:
        """The canonical JSON shape: ``{"name", "column", "function", "window": "7d"}``."""
        return {
            "name": self.name,
            "column": self.column,
            "function": self.function,
            "window": format_duration(self.time_window),
        }
