"""Data quality: validation rules of features and views, and their enforcement.

A feature (:class:`~quiver.definitions.Field`) may declare :class:`ValidationRules`
(``min_value``, ``max_value``, ``not_null``, ``regex``), ``allowed_values`` and a
``default_value``; a feature view declares :class:`ViewValidation`: SQL ``checks`` over the row
(sandboxed like transformations) and a ``policy`` saying what a failing row does:

- ``reject``: the batch (a push, a materialization run) fails and nothing is written; the
  :class:`~quiver.errors.DataValidationError` names the feature, the rule and a sample of keys;
- ``drop``: failing rows are left out and counted;
- ``warn``: failing rows are written and counted.

Semantics (pinned by a property test against a Python oracle): a null value passes every rule
but ``not_null``; NaN fails ``min_value`` and ``max_value`` and is not in any ``allowed_values``;
``regex`` must match the whole string (RE2 syntax, as DuckDB runs it); a check that gives
``NULL`` passes (as SQL ``CHECK`` constraints do), only ``FALSE`` fails.

Rules are evaluated vectorised, never by a Python loop over rows: per-feature rules by Arrow
compute kernels, the view's checks by one DuckDB query per batch in the SQL sandbox
(:mod:`quiver.features.sql`). This module imports only pydantic at import time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField

from quiver.errors import DataValidationError, InvalidError

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.definitions import FeatureView, Field

__all__ = [
    "POLICIES",
    "ValidationCounts",
    "ValidationPlan",
    "ValidationRules",
    "ViewValidation",
    "check_field_rules",
    "validation_plan",
]

POLICIES = ("reject", "drop", "warn")
Policy = Literal["reject", "drop", "warn"]
NUMERIC = ("int32", "int64", "float32", "float64")
SAMPLE_KEYS = 5
"""Keys of failing rows quoted per rule in an error and in the counts."""


class ValidationRules(BaseModel):
    """Rules a feature's values must follow (a null value passes all but ``not_null``).

    Attributes:
        min_value: The smallest allowed value (numeric features).
        max_value: The largest allowed value (numeric features).
        not_null: Whether a null value fails.
        regex: A pattern the whole string must match (string features; RE2 syntax).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_value: int | float | None = None
    max_value: int | float | None = None
    not_null: bool = False
    regex: str | None = None

    @field_validator("min_value", "max_value", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a bool")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("regex")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or "\x00" in value or len(value) > 1000:
            raise ValueError("regex must be a non-empty pattern of at most 1000 characters")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"regex {value!r} is not a valid pattern: {exc}") from None
        return value

    @property
    def empty(self) -> bool:
        """Whether no rule is set."""
        return (
            self.min_value is None
            and self.max_value is None
            and not self.not_null
            and self.regex is None
        )


class ViewValidation(BaseModel):
    """A feature view's validation: row-level SQL checks and the policy for failing rows.

    Attributes:
        policy: ``reject`` (default), ``drop`` or ``warn``.
        checks: SQL boolean expressions over the row's features and ``event_timestamp``
            (``orders <= 10 * tenure_months``); checked by the SQL sandbox.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Policy = "reject"
    checks: list[str] = PydanticField(default_factory=list)

    @field_validator("checks")
    @classmethod
    def _checks(cls, value: list[str]) -> list[str]:
        from quiver.features.sql import parse_expression

        if len(set(value)) != len(value):
            raise ValueError("a check is listed twice")
        for i, text in enumerate(value):
            try:
                parse_expression(text, f"check {i}")
            except InvalidError as exc:
                raise ValueError(exc.message) from None
        return value

    @property
    def is_default(self) -> bool:
        """Whether this is the default (policy ``reject``, no checks): left out of specs."""
        return self.policy == "reject" and not self.checks


# -- definition-time checks -----------------------------------------------------------------------

_RANGES: dict[str, tuple[float, float]] = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "float32": (-3.4e38, 3.4e38),
}


def _value_fits(value: Any, dtype: str) -> bool:
    if dtype in ("int32", "int64"):
        return isinstance(value, int) and not isinstance(value, bool)
    if dtype in ("float32", "float64"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype == "string":
        return isinstance(value, str)
    if dtype == "bool":
        return isinstance(value, bool)
    if dtype == "timestamp":
        from datetime import datetime

        if isinstance(value, datetime):
            return True
        if isinstance(value, str):
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return False
            return True
        return False
    if dtype.startswith("list<") and dtype.endswith(">"):
        inner = dtype[5:-1]
        return isinstance(value, list) and all(v is None or _value_fits(v, inner) for v in value)
    return True  # other dtypes (maps, structs, json) take any JSON value


def value_failures(field: Field, value: Any) -> list[str]:
    """The rules of ``field`` that the single value ``value`` fails (the Python oracle of
    :meth:`ValidationPlan.evaluate`, used for defaults and by tests)."""
    failed: list[str] = []
    rules = field.validation_rules
    if value is None:
        return ["not_null"] if rules is not None and rules.not_null else []
    nan = isinstance(value, float) and math.isnan(value)
    if rules is not None:
        if rules.min_value is not None and (nan or value < rules.min_value):
            failed.append("min_value")
        if rules.max_value is not None and (nan or value > rules.max_value):
            failed.append("max_value")
        if rules.regex is not None and re.fullmatch(rules.regex, value) is None:
            failed.append("regex")
    if field.allowed_values is not None and (nan or value not in field.allowed_values):
        failed.append("allowed_values")
    return failed


def check_field_rules(field: Field) -> None:
    """Check that a field's rules, allowed values and default fit its dtype (``ValueError``)."""
    dtype = field.dtype
    rules = field.validation_rules
    what = f"feature '{field.name}'"
    if rules is not None:
        if (rules.min_value is not None or rules.max_value is not None) and dtype not in NUMERIC:
            raise ValueError(f"{what}: min_value and max_value need a numeric dtype, not {dtype}")
        if (
            rules.min_value is not None
            and rules.max_value is not None
            and rules.min_value > rules.max_value
        ):
            raise ValueError(
                f"{what}: min_value {rules.min_value} is greater than max_value {rules.max_value}"
            )
        for bound in (rules.min_value, rules.max_value):
            if (
                bound is not None
                and dtype in _RANGES
                and not (_RANGES[dtype][0] <= bound <= _RANGES[dtype][1])
            ):
                raise ValueError(f"{what}: bound {bound} is outside the range of {dtype}")
        if rules.regex is not None and dtype != "string":
            raise ValueError(f"{what}: regex needs a string dtype, not {dtype}")
    allowed = field.allowed_values
    if allowed is not None:
        if dtype not in (*NUMERIC, "string", "bool"):
            raise ValueError(f"{what}: allowed_values needs a number, string or bool dtype")
        if not allowed:
            raise ValueError(f"{what}: allowed_values is empty; leave it out to allow any value")
        for value in allowed:
            if value is None or not _value_fits(value, dtype):
                raise ValueError(f"{what}: allowed value {value!r} is not a {dtype}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{what}: allowed value {value!r} must be finite")
    default = field.default_value
    if default is not None:
        if not _value_fits(default, dtype):
            raise ValueError(f"{what}: default_value {default!r} is not a {dtype}")
        failed = value_failures(field, default)
        if failed:
            raise ValueError(f"{what}: default_value {default!r} fails its own rule {failed[0]}")


def check_view_rules(view: FeatureView) -> None:
    """Check a view's validation against its fields (``ValueError``)."""
    from quiver.features.sql import parse_expression

    has_rules = any(_has_rules(f) for f in view.features) or view.validation.checks
    if has_rules and view.aggregations:
        raise ValueError(
            f"feature view '{view.name}': validation rules are not supported on views with "
            "aggregations; validate the source's rows in another view"
        )
    readable = {f.name for f in view.features} | {"event_timestamp"}
    for i, text in enumerate(view.validation.checks):
        expr = parse_expression(text, f"check {i}")
        unknown = [c for c in expr.columns if c not in readable]
        if unknown:
            raise ValueError(
                f"feature view '{view.name}': check {text!r} reads '{unknown[0]}', which is not a "
                f"feature of the view; it may read {', '.join(sorted(readable))}"
            )


def _has_rules(field: Field) -> bool:
    rules = field.validation_rules
    return (rules is not None and not rules.empty) or field.allowed_values is not None


# -- enforcement -----------------------------------------------------------------------------------


@dataclass
class ValidationCounts:
    """What a validation found in the rows of one push or materialization run.

    Attributes:
        policy: The view's policy.
        rows_checked: Rows validated.
        rows_invalid: Rows failing at least one rule.
        rows_dropped: Rows left out (policy ``drop``).
        failures: ``feature:rule`` (or ``check:<expression>``) -> rows failing it.
        samples: The same keys -> up to :data:`SAMPLE_KEYS` join-key dicts of failing rows.
    """

    policy: str
    rows_checked: int = 0
    rows_invalid: int = 0
    rows_dropped: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, other: ValidationCounts) -> None:
        """Add the counts of another batch."""
        self.rows_checked += other.rows_checked
        self.rows_invalid += other.rows_invalid
        self.rows_dropped += other.rows_dropped
        for key, n in other.failures.items():
            self.failures[key] = self.failures.get(key, 0) + n
        for key, keys in other.samples.items():
            have = self.samples.setdefault(key, [])
            have.extend(keys[: SAMPLE_KEYS - len(have)])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "policy": self.policy,
            "rows_checked": self.rows_checked,
            "rows_invalid": self.rows_invalid,
            "rows_dropped": self.rows_dropped,
            "failures": dict(self.failures),
            "samples": {k: list(v) for k, v in self.samples.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationCounts:
        """The inverse of :meth:`to_dict`."""
        return cls(
            policy=str(data.get("policy", "reject")),
            rows_checked=int(data.get("rows_checked", 0)),
            rows_invalid=int(data.get("rows_invalid", 0)),
            rows_dropped=int(data.get("rows_dropped", 0)),
            failures={str(k): int(v) for k, v in dict(data.get("failures") or {}).items()},
            samples={str(k): list(v) for k, v in dict(data.get("samples") or {}).items()},
        )

    def error(self, view: str, what: str) -> DataValidationError:
        """The error a ``reject`` raises for these counts."""
        parts = []
        for key, n in self.failures.items():
            feature, _, rule = key.partition(":")
            sample = ", ".join(_key_text(k) for k in self.samples.get(key, []))
            if feature == "check":
                parts.append(f"check {rule!r} fails for {n} row(s) (e.g. {sample})")
            else:
                parts.append(f"feature '{feature}' fails {rule} for {n} row(s) (e.g. {sample})")
        return DataValidationError(
            f"{what} of feature view '{view}' refused: " + "; ".join(parts) + "; nothing was "
            "written (the view's validation policy is 'reject'; fix the rows, or set the "
            "policy to 'drop' or 'warn')",
            details={"view": view, **self.to_dict()},
        )


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


@dataclass(frozen=True)
class _Rule:
    """One rule: ``kind`` is ``min_value``, ``max_value``, ``not_null``, ``regex``,
    ``allowed_values`` (an Arrow compute kernel on ``column``) or ``check`` (SQL in the
    sandbox: ``arg`` is the regenerated SQL of the check)."""

    key: str  # feature:rule or check:<expression>
    kind: str
    column: str | None
    columns: tuple[str, ...]
    arg: Any = None


@dataclass(frozen=True)
class ValidationPlan:
    """The compiled rules of one view.

    Per-feature rules are Arrow compute kernels over the column (vectorised, no Python loop);
    the view's checks run as one SQL query per batch in the sandbox database.

    Attributes:
        view: The view's name.
        policy: The view's policy.
        rules: The rules.
    """

    view: str
    policy: str
    rules: tuple[_Rule, ...]

    def evaluate(
        self, table: pa.Table, keys: list[str], *, what: str = "push"
    ) -> tuple[pa.Table, ValidationCounts]:
        """Validate ``table`` and apply the policy.

        Returns:
            The rows to write (all of them for ``warn``, the passing ones for ``drop``) and the
            counts.

        Raises:
            DataValidationError: a row fails and the policy is ``reject``.
        """
        table, counts = self.check(table, keys, what=what)
        if counts.rows_invalid and self.policy == "reject":
            raise counts.error(self.view, what)
        return table, counts

    def check(
        self, table: pa.Table, keys: list[str], *, what: str = "push"
    ) -> tuple[pa.Table, ValidationCounts]:
        """Validate ``table``: the rows to write under ``drop``/``warn`` and the counts; a
        ``reject`` policy is left to the caller (see :meth:`evaluate`)."""
        import pyarrow.compute as pc

        counts = ValidationCounts(policy=self.policy, rows_checked=table.num_rows)
        if table.num_rows == 0 or not self.rules:
            return table, counts
        needed = list(dict.fromkeys(c for r in self.rules for c in r.columns))
        missing = [c for c in needed if c not in table.column_names]
        if missing:
            raise InvalidError(
                f"validation of feature view '{self.view}': the rows lack column '{missing[0]}'"
            )
        flags = self._flags(table)
        bad: Any = None
        for rule, flag in zip(self.rules, flags, strict=True):
            n = int(pc.sum(flag).as_py() or 0)
            if not n:
                continue
            counts.failures[rule.key] = n
            sample = table.select(keys).filter(flag).slice(0, SAMPLE_KEYS).to_pylist()
            counts.samples[rule.key] = [{k: _jsonable(v) for k, v in r.items()} for r in sample]
            bad = flag if bad is None else pc.or_(bad, flag)
        if bad is None:
            return table, counts
        counts.rows_invalid = int(pc.sum(bad).as_py() or 0)
        if self.policy == "drop":
            table = table.filter(pc.invert(bad))
            counts.rows_dropped = counts.rows_invalid
        elif self.policy == "reject":
            table = table.slice(0, 0)
        return table, counts

    def _flags(self, table: pa.Table) -> list[Any]:
        """Per rule, a boolean column without nulls: true where the row fails."""
        import pyarrow as pa
        import pyarrow.compute as pc

        checks = [r for r in self.rules if r.kind == "check"]
        checked = iter(self._check_flags(table, checks) if checks else [])
        out: list[Any] = []
        for rule in self.rules:
            if rule.kind == "check":
                out.append(next(checked))
                continue
            assert rule.column is not None
            col = table.column(rule.column)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if rule.kind == "not_null":
                out.append(pc.is_null(col))
                continue
            if rule.kind == "min_value":
                flag = pc.less(col, pa.scalar(rule.arg, col.type))
            elif rule.kind == "max_value":
                flag = pc.greater(col, pa.scalar(rule.arg, col.type))
            elif rule.kind == "regex":
                flag = pc.invert(pc.match_substring_regex(col, rule.arg))
            else:  # allowed_values
                flag = pc.and_(pc.is_valid(col), pc.invert(pc.is_in(col, rule.arg.cast(col.type))))
            if rule.kind in ("min_value", "max_value") and pa.types.is_floating(col.type):
                flag = pc.or_(flag, pc.is_nan(col))
            out.append(pc.fill_null(flag, False))
        return out

    def _check_flags(self, table: pa.Table, checks: list[_Rule]) -> list[Any]:
        """The view's checks, as one query in the sandbox (a NULL result passes)."""
        import uuid

        import duckdb

        from quiver.errors import BackendError
        from quiver.features.sql import _normalized_inputs, _sandbox
        from quiver.offline.sources import quote

        needed = list(dict.fromkeys(c for r in checks for c in r.columns))
        inputs = _normalized_inputs(table.select(needed))
        flags = [f"COALESCE(NOT ({r.arg}), FALSE) AS f{i}" for i, r in enumerate(checks)]
        name = f"__qv_check_{uuid.uuid4().hex[:12]}"
        cur = _sandbox()
        try:
            cur.register(name, inputs)
            # No ORDER BY: a scan of a registered Arrow table keeps its order (one thread).
            result = cur.sql(f"SELECT {', '.join(flags)} FROM {quote(name)}").to_arrow_table()
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if isinstance(exc, (duckdb.PermissionException, duckdb.InternalException)):
                raise BackendError(f"validation: the SQL sandbox refused: {first}") from exc
            raise InvalidError(
                f"validation of feature view '{self.view}' failed to run a check: {first}"
            ) from exc
        finally:
            cur.close()
        return [result.column(i) for i in range(len(checks))]


def _jsonable(value: Any) -> Any:
    from datetime import date, datetime

    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _bound(value: int | float, dtype: str, kind: str) -> int | float:
    """A bound as the column's type compares it: an integer column compares with the nearest
    integer on the allowed side (``v < 0.5`` is ``v < 1``), exactly."""
    if dtype in ("int32", "int64") and isinstance(value, float):
        return math.ceil(value) if kind == "min_value" else math.floor(value)
    return value


def validation_plan(view: FeatureView) -> ValidationPlan | None:
    """The compiled rules of ``view``, or ``None`` when it declares none."""
    import pyarrow as pa

    from quiver.features.sql import parse_expression

    rules: list[_Rule] = []
    for f in view.features:
        r = f.validation_rules
        cols = (f.name,)
        if r is not None:
            if r.not_null:
                rules.append(_Rule(f"{f.name}:not_null", "not_null", f.name, cols))
            for kind in ("min_value", "max_value"):
                value = getattr(r, kind)
                if value is not None:
                    bound = _bound(value, f.dtype, kind)
                    rules.append(_Rule(f"{f.name}:{kind}", kind, f.name, cols, bound))
            if r.regex is not None:
                anchored = f"^(?:{r.regex})$"  # a full match, as DuckDB's regexp_full_match
                rules.append(_Rule(f"{f.name}:regex", "regex", f.name, cols, anchored))
        if f.allowed_values is not None:
            values = pa.array(list(f.allowed_values))
            rules.append(_Rule(f"{f.name}:allowed_values", "allowed_values", f.name, cols, values))
    for text in view.validation.checks:
        expr = parse_expression(text, f"check of feature view '{view.name}'")
        rules.append(_Rule(f"check:{text}", "check", None, expr.columns, expr.sql))
    if not rules:
        return None
    return ValidationPlan(view.name, view.validation.policy, tuple(rules))
