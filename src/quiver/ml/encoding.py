"""Feature and label encoding, fitted on the training set and stored with the model.

Numeric and boolean features become float columns (nulls are NaN); string features become
category codes (``ordinal``, for tree models) or indicator columns (``onehot``, for linear models).
The categories seen in training, the per-feature training-time defaults (median for numeric, mode
for categorical and boolean) and the label's classes are all part of the encoding, which is saved
as ``encoding.json`` next to the model and reused unchanged at prediction time. A category never
seen in training encodes as missing (ordinal) or as all-zero indicators (one-hot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from quiver.errors import InvalidError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["MAX_CATEGORIES", "Encoding", "FeatureColumn", "LabelEncoding"]

MAX_CATEGORIES = 1000
"""At most this many categories are kept per feature (the most frequent); others are unknown."""

Kind = Literal["numeric", "boolean", "categorical", "timestamp"]
_NUMERIC = {"int32", "int64", "float32", "float64"}


def _kind_of(name: str, dtype: str) -> Kind:
    if dtype in _NUMERIC:
        return "numeric"
    if dtype == "bool":
        return "boolean"
    if dtype == "string":
        return "categorical"
    if dtype == "timestamp":
        return "timestamp"
    raise InvalidError(
        f"feature '{name}' has dtype {dtype}; models take scalar features only, so leave it out "
        "of the training features"
    )


@dataclass
class FeatureColumn:
    """One input feature of a model.

    Attributes:
        name: The column name in the training frame (``feature`` or ``view__feature``).
        ref: The feature reference ``view:feature``.
        dtype: The feature's Quiver dtype.
        kind: ``numeric``, ``boolean``, ``categorical`` or ``timestamp``.
        categories: The categories kept from training (categorical features only).
        default: The training-time default: median (numeric), mode (categorical, boolean).
    """

    name: str
    ref: str
    dtype: str
    kind: Kind
    categories: list[str] | None = None
    default: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "name": self.name,
            "ref": self.ref,
            "dtype": self.dtype,
            "kind": self.kind,
            "categories": self.categories,
            "default": self.default,
        }


@dataclass
class LabelEncoding:
    """The label: its dtype and, for classifiers, the classes in code order."""

    column: str
    dtype: str
    classes: list[Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {"column": self.column, "dtype": self.dtype, "classes": self.classes}

    def encode(self, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Class codes ``0..K-1`` of ``values`` (regression: the values as floats)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.classes is None:
            return np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False))
        value_set = pa.array(self.classes, type=_label_arrow_type(self.dtype))
        codes = pc.index_in(pc.cast(values, value_set.type), value_set=value_set)
        if codes.null_count:
            raise InvalidError(f"label column '{self.column}' holds a value not among its classes")
        return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)

    def decode(self, codes: np.ndarray) -> pa.Array:
        """The class values of ``codes``, as an Arrow array of the label's type."""
        import pyarrow as pa

        if self.classes is None:
            raise InvalidError("a regression label has no classes to decode")
        value_set = pa.array(self.classes, type=_label_arrow_type(self.dtype))
        return value_set.take(pa.array(codes, type=pa.int64()))


def _label_arrow_type(dtype: str) -> pa.DataType:
    from quiver.types import arrow_type

    return arrow_type(dtype)


@dataclass
class Encoding:
    """How a table of features becomes the model's input matrix.

    Attributes:
        features: The input features, in model column order.
        scheme: ``ordinal`` (category codes) or ``onehot`` (indicator columns).
        impute: Replace missing values by the training-time defaults (models that cannot take
            NaN); otherwise missing stays NaN for the model to handle.
        label: The label encoding.
    """

    features: list[FeatureColumn]
    scheme: Literal["ordinal", "onehot"] = "ordinal"
    impute: bool = False
    label: LabelEncoding | None = None
    _columns: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        cols: list[str] = []
        for f in self.features:
            if f.kind == "categorical" and self.scheme == "onehot":
                cols.extend(f"{f.name}={c}" for c in f.categories or [])
            else:
                cols.append(f.name)
        self._columns = cols

    # -- fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        table: pa.Table,
        features: Sequence[tuple[str, str, str]],
        *,
        scheme: Literal["ordinal", "onehot"] = "ordinal",
        impute: bool = False,
        label: LabelEncoding | None = None,
    ) -> Encoding:
        """Learn categories and defaults from the training rows.

        Args:
            table: The training rows (Arrow), holding every feature column.
            features: ``(column name, reference, dtype)`` per feature.
            scheme: ``ordinal`` or ``onehot``.
            impute: Whether to fill missing values with the defaults when encoding.
            label: The label encoding to keep with the features.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        columns: list[FeatureColumn] = []
        for name, ref, dtype in features:
            kind = _kind_of(name, dtype)
            col = table[name]
            categories = None
            default: Any = None
            if kind == "categorical":
                counts = pc.value_counts(pc.drop_null(pc.cast(col, pa.string())))
                pairs = sorted(
                    zip(
                        counts.field("values").to_pylist(),
                        counts.field("counts").to_pylist(),
                        strict=True,
                    ),
                    key=lambda p: (-p[1], p[0]),
                )[:MAX_CATEGORIES]
                default = pairs[0][0] if pairs else None
                categories = sorted(v for v, _ in pairs)
            elif kind == "boolean":
                trues = pc.sum(pc.cast(pc.drop_null(col), pa.int64())).as_py() or 0
                valid = len(col) - col.null_count
                default = bool(trues * 2 > valid) if valid else None
            else:
                values = _floats(col, kind)
                finite = values[~np.isnan(values)]
                if finite.size:
                    median = float(np.median(finite))
                    if kind == "timestamp":
                        default = datetime.fromtimestamp(median, tz=UTC).isoformat()
                    elif dtype.startswith("int"):
                        default = round(median)
                    else:
                        default = median
            columns.append(
                FeatureColumn(name, ref, dtype, kind, categories=categories, default=default)
            )
        return cls(features=columns, scheme=scheme, impute=impute, label=label)

    # -- encoding ---------------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        """The input feature column names, in order."""
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        """The names of the encoded matrix's columns."""
        return list(self._columns)

    @property
    def categorical_indices(self) -> list[int]:
        """Matrix columns holding category codes (ordinal scheme only)."""
        if self.scheme != "ordinal":
            return []
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    @property
    def defaults(self) -> dict[str, Any]:
        """The training-time default of each feature."""
        return {f.name: f.default for f in self.features}

    def encode(self, table: pa.Table) -> np.ndarray:
        """The model input matrix (float64, one row per table row) for ``table``.

        Raises:
            InvalidError: a feature column is missing from ``table``.
        """
        import numpy as np

        missing = [f.name for f in self.features if f.name not in table.column_names]
        if missing:
            raise InvalidError(
                f"the input lacks feature column(s) {', '.join(missing)} that the model was "
                "trained on"
            )
        n = table.num_rows
        out = np.empty((n, len(self._columns)), dtype=np.float64)
        j = 0
        for f in self.features:
            col = table[f.name]
            if f.kind == "categorical":
                codes = self._codes(f, col)
                if self.impute:
                    codes[np.isnan(codes)] = self._default_code(f)
                if self.scheme == "onehot":
                    k = len(f.categories or [])
                    if k:
                        out[:, j : j + k] = codes[:, None] == np.arange(k)[None, :]
                    j += k
                    continue
                out[:, j] = codes
            else:
                values = _floats(col, f.kind)
                if self.impute:
                    values[np.isnan(values)] = self._default_number(f)
                out[:, j] = values
            j += 1
        return out

    def _codes(self, f: FeatureColumn, col: Any) -> np.ndarray:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        value_set = pa.array(f.categories or [], type=pa.string())
        codes = pc.index_in(pc.cast(col, pa.string()), value_set=value_set)
        return np.array(pc.cast(codes, pa.float64()).to_numpy(zero_copy_only=False), copy=True)

    @staticmethod
    def _default_code(f: FeatureColumn) -> float:
        cats = f.categories or []
        if f.default in cats:
            return float(cats.index(f.default))
        return 0.0 if cats else math.nan

    @staticmethod
    def _default_number(f: FeatureColumn) -> float:
        if f.default is None:
            return 0.0
        if f.kind == "boolean":
            return float(bool(f.default))
        if f.kind == "timestamp":
            return _to_epoch(f.default)
        return float(f.default)

    # -- building an input table from values ------------------------------------------------

    def table_from_values(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """An Arrow table of the model's features from plain values (one mapping per row).

        Raises:
            InvalidError: a value that does not fit its feature's dtype (named).
        """
        import pyarrow as pa

        from quiver.types import arrow_type

        arrays = {}
        for f in self.features:
            values = [row.get(f.name) for row in rows]
            try:
                arrays[f.name] = pa.array(values, type=arrow_type(f.dtype))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                try:
                    raw = pa.array(values)
                    arrays[f.name] = raw.cast(arrow_type(f.dtype))
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                    raise InvalidError(
                        f"feature '{f.name}' expects {f.dtype} values; got {values[:3]!r}"
                    ) from exc
        return pa.table(arrays)

    # -- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (``encoding.json``)."""
        return {
            "format": 1,
            "scheme": self.scheme,
            "impute": self.impute,
            "features": [f.to_dict() for f in self.features],
            "label": self.label.to_dict() if self.label else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Encoding:
        """Rebuild an encoding from :meth:`to_dict` output.

        Raises:
            InvalidError: the mapping is not an encoding.
        """
        try:
            features = [FeatureColumn(**f) for f in data["features"]]
            label = LabelEncoding(**data["label"]) if data.get("label") else None
            return cls(
                features=features,
                scheme=data["scheme"],
                impute=bool(data["impute"]),
                label=label,
            )
        except (KeyError, TypeError) as exc:
            raise InvalidError(f"malformed model encoding: {exc}") from exc


def _floats(col: Any, kind: str) -> np.ndarray:
    """A writable float64 numpy copy of a column, nulls as NaN."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "timestamp":
        col = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64())
        return np.array(col.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
    if kind == "boolean" or not pa.types.is_floating(col.type) or col.type != pa.float64():
        col = pc.cast(col, pa.float64())
    return np.array(col.to_numpy(zero_copy_only=False), dtype=np.float64, copy=True)


def _to_epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
