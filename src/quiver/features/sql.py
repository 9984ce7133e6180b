"""The SQL sandbox: user SQL expressions are parsed, checked against an allow-list, and run in
a DuckDB database that cannot touch files, the network or its own settings.

Two layers keep a transformation from reaching outside its row:

1. **Parsing** (sqlglot, DuckDB dialect, imported lazily): the text must be one scalar
   expression. Only these constructs are accepted: unqualified column references, literals,
   arithmetic, comparison and boolean operators, ``CASE``/``IF``, ``IN`` over a list,
   ``BETWEEN``, ``LIKE``, casts, intervals, and calls of the functions in
   :data:`ALLOWED_FUNCTIONS` (math, string, date/time, conditional). Anything else, in
   particular subqueries, table functions, window and aggregate functions, parameters and
   every function that reads files or settings (``read_csv``, ``getenv``, ``current_setting``,
   ``glob``, ...), is refused with an :class:`~quiver.errors.InvalidError` naming it. What runs
   is the SQL regenerated from the checked tree, never the user's text.
2. **Running** (:func:`evaluate`): in a DuckDB database of its own, opened with
   ``enable_external_access = false`` and ``lock_configuration = true`` (so no statement can
   turn access back on), fed with Arrow tables that the engine has already read.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError, InvalidError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["ALLOWED_FUNCTIONS", "ParsedExpression", "evaluate", "parse_expression"]

ALLOWED_FUNCTIONS = frozenset(
    {
        # conditional and casts
        "coalesce", "nullif", "ifnull", "greatest", "least", "cast", "try_cast",
        # math
        "abs", "ceil", "ceiling", "floor", "round", "trunc", "sqrt", "cbrt", "exp", "ln", "log",
        "log2", "log10", "pow", "power", "sign", "mod", "isnan", "isinf", "isfinite", "pi",
        "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "even",
        "gcd", "lcm", "factorial", "bit_count",
        # strings
        "lower", "upper", "lcase", "ucase", "length", "strlen", "len", "char_length",
        "substr", "substring", "trim", "ltrim", "rtrim", "concat", "concat_ws", "replace",
        "left", "right", "lpad", "rpad", "starts_with", "ends_with", "contains", "strpos",
        "instr", "position", "reverse", "repeat", "split_part", "regexp_matches",
        "regexp_replace", "regexp_extract", "regexp_full_match", "prefix", "suffix", "ascii",
        "chr", "md5", "hash", "format", "printf", "levenshtein", "jaccard", "array_length",
        # dates and times
        "date_diff", "datediff", "date_sub", "datesub", "date_part", "datepart", "date_trunc",
        "datetrunc", "date_add", "extract", "year", "month", "day", "dayofweek", "dayofyear",
        "dayofmonth", "weekday", "week", "weekofyear", "quarter", "hour", "minute", "second",
        "millisecond", "microsecond", "epoch", "epoch_ms", "epoch_us", "epoch_ns",
        "make_date", "make_time", "make_timestamp", "to_timestamp", "strftime", "strptime",
        "last_day", "age", "time_bucket", "dayname", "monthname", "isodow", "yearweek",
        "to_days", "to_hours", "to_minutes", "to_seconds", "to_years", "to_months",
        "to_weeks", "to_milliseconds", "to_microseconds",
    }
)  # fmt: skip
"""Functions a SQL expression may call (DuckDB names, lower case)."""

_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


@dataclass(frozen=True)
class ParsedExpression:
    """A checked SQL expression.

    Attributes:
        text: The expression as written.
        sql: The SQL that runs: regenerated from the checked tree, identifiers quoted.
        columns: The columns it reads, in first-use order.
    """

    text: str
    sql: str
    columns: tuple[str, ...]


def _node_types() -> tuple[type, ...]:
    from sqlglot import exp

    names = (
        "Column", "Identifier", "Literal", "Boolean", "Null", "Paren", "Neg", "Not", "Add",
        "Sub", "Mul", "Div", "IntDiv", "Mod", "Pow", "EQ", "NEQ", "GT", "GTE", "LT", "LTE",
        "NullSafeEQ", "NullSafeNEQ", "And", "Or", "Xor", "Is", "Like", "ILike", "DPipe",
        "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitwiseLeftShift",
        "BitwiseRightShift", "In", "Between", "Interval", "Var", "DataType", "DataTypeParam",
        "Case", "If", "Cast", "TryCast", "Tuple", "Escape", "IntervalSpan", "Unit",
    )  # fmt: skip
    return tuple(getattr(exp, n) for n in names if hasattr(exp, n))


def _refuse(what: str, text: str, problem: str) -> InvalidError:
    return InvalidError(f"{what}: {problem} (in {text!r})")


def _function_name(node: Any) -> str:
    """The DuckDB function a call node runs (its name in the regenerated SQL)."""
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    found = _CALL.match(node.sql(dialect="duckdb"))
    return found.group(1).lower() if found else str(node.key).lower()


def _check_tree(tree: Any, text: str, what: str) -> list[str]:
    """Walk ``tree``; refuse what is not allowed; return the columns read."""
    from sqlglot import exp

    allowed_nodes = _node_types()
    columns: list[str] = []
    for node in tree.walk():
        if isinstance(node, (exp.Select, exp.Subquery, exp.Exists, exp.Query, exp.Union)):
            raise _refuse(what, text, "subqueries are not allowed; use a scalar expression")
        if isinstance(node, exp.Window):
            raise _refuse(what, text, "window functions (OVER) are not allowed in a row expression")
        if isinstance(node, exp.AggFunc):
            raise _refuse(
                what,
                text,
                f"aggregate function '{_function_name(node)}' is not allowed in a row expression",
            )
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            raise _refuse(what, text, "parameters are not allowed")
        if isinstance(node, (exp.Table, exp.From, exp.Join)):
            raise _refuse(what, text, "table access is not allowed")
        if isinstance(node, exp.Star):
            raise _refuse(what, text, "'*' is not allowed; name the columns")
        if isinstance(node, exp.Column):
            if node.table or node.args.get("db") or node.args.get("catalog"):
                raise _refuse(
                    what, text, f"qualified column '{node.sql()}' is not allowed; use 'column'"
                )
            name = node.name
            if not _PLAIN.match(name):
                raise _refuse(what, text, f"column {name!r} is not a plain identifier")
            if name not in columns:
                columns.append(name)
            continue
        if isinstance(node, exp.In) and (node.args.get("query") or node.args.get("unnest")):
            raise _refuse(what, text, "IN over a subquery is not allowed; list the values")
        if isinstance(node, allowed_nodes) and not isinstance(node, exp.Anonymous):
            continue  # operators, CASE/IF, casts (some are Func nodes in sqlglot)
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name not in ALLOWED_FUNCTIONS:
                raise _refuse(
                    what,
                    text,
                    f"function '{name}' is not allowed; allowed are math, string, date/time "
                    "and conditional functions (see quiver.features.sql.ALLOWED_FUNCTIONS)",
                )
            continue
        raise _refuse(what, text, f"{node.key.upper()} is not allowed in a SQL expression")
    return columns


@lru_cache(maxsize=1024)
def parse_expression(text: str, what: str = "SQL expression") -> ParsedExpression:
    """Parse and check one scalar SQL expression (DuckDB dialect).

    Args:
        text: The expression, e.g. ``date_diff('year', date_of_birth, event_timestamp)``.
        what: How to name it in errors (``transformation of feature 'age' ...``).

    Raises:
        InvalidError: the text is not one scalar expression, or uses anything not allowed;
            the message names the function, column or construct.
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    if not isinstance(text, str) or not text.strip():
        raise InvalidError(f"{what}: the expression is empty")
    if "\x00" in text:
        raise _refuse(what, text, "NUL characters are not allowed")
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(what, text, f"not valid SQL: {first}") from None
    if len(statements) != 1:
        raise _refuse(what, text, "give exactly one expression (no ';', no statements)")
    tree = statements[0]
    if isinstance(tree, exp.Command) or not isinstance(tree, exp.Expression):
        raise _refuse(what, text, f"'{tree.sql()[:30]}' is a statement, not an expression")
    if isinstance(tree, (exp.Alias,)):
        raise _refuse(what, text, "aliases are not allowed; the field's name is the output name")
    columns = _check_tree(tree, text, what)
    sql = tree.sql(dialect="duckdb", identify=True)
    # The SQL that runs must pass the same checks (the generator may spell things its way).
    again = sqlglot.parse(sql, read="duckdb")
    if len(again) != 1 or again[0] is None:  # pragma: no cover - a sqlglot bug
        raise _refuse(what, text, "the expression cannot be regenerated safely")
    _check_tree(again[0], text, what)
    return ParsedExpression(text=text, sql=sql, columns=tuple(columns))


# -- running ------------------------------------------------------------------------------------

_SANDBOX: duckdb.DuckDBPyConnection | None = None
_SANDBOX_LOCK = threading.Lock()

SANDBOX_MEMORY_LIMIT = "512MB"
"""The memory budget of the sandbox database."""


def _sandbox() -> duckdb.DuckDBPyConnection:
    """A cursor on the process's sandbox database (no file, network or settings access)."""
    global _SANDBOX
    import duckdb

    with _SANDBOX_LOCK:
        if _SANDBOX is None:
            con = duckdb.connect(
                ":memory:",
                config={
                    "enable_external_access": False,
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "memory_limit": SANDBOX_MEMORY_LIMIT,
                },
            )
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET lock_configuration = true")  # from now on no SET can succeed
            _SANDBOX = con
        return _SANDBOX.cursor()


def _normalized_inputs(table: pa.Table) -> pa.Table:
    """Timestamps as naive UTC microseconds, dictionaries decoded: the one form every path
    (offline join, materialization, push) hands to an expression."""
    import pyarrow as pa

    columns = []
    changed = False
    for col in table.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            col, t, changed = col.cast(t.value_type), t.value_type, True
        if pa.types.is_timestamp(t) and (t.unit != "us" or t.tz is not None):
            if t.tz is not None:
                col = col.cast(pa.timestamp(t.unit, tz="UTC")).cast(pa.timestamp(t.unit))
            col = col.cast(pa.timestamp("us"), safe=False)
            changed = True
        columns.append(col)
    return pa.table(columns, names=table.column_names) if changed else table


def evaluate(
    table: pa.Table,
    outputs: Mapping[str, tuple[ParsedExpression, str]],
    keep: Sequence[str] = (),
    *,
    what: str = "SQL expression",
) -> pa.Table:
    """Run checked expressions over ``table`` in the sandbox.

    Args:
        table: The input rows (columns the expressions read, and those in ``keep``).
        outputs: Output column -> (expression, dtype it is cast to).
        keep: Input columns passed through unchanged, before the outputs.
        what: How to name the expressions in errors.

    Returns:
        ``keep`` then the outputs, one row per input row, in input order; outputs are cast to
        their dtypes (timestamps as naive UTC ``timestamp[us]``).

    Raises:
        InvalidError: an expression reads a column the rows do not have, or fails on a value
            (a type mismatch, an invalid cast).
    """
    import duckdb
    import pyarrow as pa

    from quiver.offline.sources import quote, sql_type

    if table.num_rows == 0 and not outputs:
        return table.select(list(keep))
    present = set(table.column_names)
    for name, (expr, _) in outputs.items():
        missing = [c for c in expr.columns if c not in present]
        if missing:
            raise InvalidError(
                f"{what}: '{name}' reads column '{missing[0]}', which the rows do not have; "
                f"they have: {', '.join(table.column_names)}"
            )
    rows = "__qv_rows"
    inputs = _normalized_inputs(table)
    inputs = inputs.append_column(rows, pa.array(range(table.num_rows), pa.int64()))
    exprs = [quote(c) for c in keep] + [
        f"CAST(({expr.sql}) AS {sql_type(dtype)}) AS {quote(name)}"
        for name, (expr, dtype) in outputs.items()
    ]
    name = f"__qv_in_{uuid.uuid4().hex[:12]}"
    cur = _sandbox()
    try:
        cur.register(name, inputs)
        result = cur.sql(
            f"SELECT {', '.join(exprs)} FROM {quote(name)} ORDER BY {quote(rows)}"
        ).to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, (duckdb.PermissionException, duckdb.InternalException)):
            raise BackendError(f"{what}: the SQL sandbox refused: {first}") from exc
        raise InvalidError(f"{what}: {first}") from exc
    finally:
        cur.close()
    return result


# -- source queries -------------------------------------------------------------------------------

QUERY_FUNCTIONS = frozenset(
    {
        "count", "count_star", "sum", "avg", "mean", "min", "max", "stddev", "stddev_samp",
        "stddev_pop", "variance", "var_samp", "var_pop", "median", "arg_max", "arg_min",
        "max_by", "min_by", "first", "last", "any_value", "bool_and", "bool_or",
        "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag",
        "lead", "first_value", "last_value", "nth_value",
    }
)  # fmt: skip
"""Aggregate and window functions a source query may call besides :data:`ALLOWED_FUNCTIONS`."""


@dataclass(frozen=True)
class ParsedQuery:
    """A checked source query.

    Attributes:
        text: The query as written.
        sql: The SQL that runs: regenerated from the checked tree, identifiers quoted.
        tables: The tables it reads (registered data source names).
    """

    text: str
    sql: str
    tables: tuple[str, ...]


def _query_nodes() -> tuple[type, ...]:
    from sqlglot import exp

    names = (
        "Select", "From", "Join", "Where", "Group", "Having", "Order", "Ordered", "Limit",
        "Offset", "Alias", "TableAlias", "Table", "Star", "Window", "WindowSpec", "Distinct",
        "Qualify", "Filter",
    )  # fmt: skip
    return _node_types() + tuple(getattr(exp, n) for n in names if hasattr(exp, n))


def _check_query(tree: Any, text: str, what: str, tables: Sequence[str] | None) -> list[str]:
    from sqlglot import exp

    allowed_nodes = _query_nodes()
    read: list[str] = []
    for node in tree.walk():
        if node is not tree and isinstance(node, (exp.Select, exp.Subquery, exp.Query)):
            raise _refuse(what, text, "subqueries are not allowed in a source query")
        if isinstance(node, (exp.With, exp.CTE, exp.Union, exp.Lateral, exp.Unnest, exp.Values)):
            raise _refuse(what, text, f"{node.key.upper()} is not allowed in a source query")
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            raise _refuse(what, text, "parameters are not allowed")
        if isinstance(node, exp.Table):
            if node.args.get("db") or node.args.get("catalog"):
                raise _refuse(what, text, f"table '{node.sql()}' is not a data source name")
            if not isinstance(node.this, exp.Identifier):
                raise _refuse(
                    what,
                    text,
                    f"table function '{_function_name(node.this)}' is not allowed; read "
                    "registered data sources by name",
                )
            if not _PLAIN.match(node.name):
                raise _refuse(what, text, f"table {node.name!r} is not a data source name")
            if tables is not None and node.name not in tables:
                raise _refuse(
                    what,
                    text,
                    f"table '{node.name}' is not allowed; a source query reads "
                    + " or ".join(f"'{t}'" for t in tables),
                )
            if node.name not in read:
                read.append(node.name)
            continue
        if isinstance(node, exp.Column):
            continue
        if isinstance(node, allowed_nodes) and not isinstance(node, exp.Anonymous):
            continue
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name not in ALLOWED_FUNCTIONS and name not in QUERY_FUNCTIONS:
                raise _refuse(
                    what,
                    text,
                    f"function '{name}' is not allowed; allowed are math, string, date/time, "
                    "conditional, aggregate and window functions",
                )
            continue
        raise _refuse(what, text, f"{node.key.upper()} is not allowed in a source query")
    if not read:
        raise _refuse(what, text, "the query reads no data source")
    return read


@lru_cache(maxsize=256)
def parse_query(
    text: str, tables: tuple[str, ...] | None, what: str = "source query"
) -> ParsedQuery:
    """Parse and check one ``SELECT`` over the data sources named in ``tables`` (``None``: any
    plain name, to be checked against the registry later).

    Raises:
        InvalidError: not one ``SELECT``, or a construct, function or table that is not allowed
            (subqueries, CTEs, set operations, table functions, other tables, parameters).
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    if not isinstance(text, str) or not text.strip():
        raise InvalidError(f"{what}: the query is empty")
    try:
        statements = [s for s in sqlglot.parse(text, read="duckdb") if s is not None]
    except SqlglotError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(what, text, f"not valid SQL: {first}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise _refuse(what, text, "give exactly one SELECT statement")
    read = _check_query(statements[0], text, what, tables)
    sql = statements[0].sql(dialect="duckdb", identify=True)
    again = sqlglot.parse(sql, read="duckdb")
    if len(again) != 1 or not isinstance(again[0], exp.Select):  # pragma: no cover
        raise _refuse(what, text, "the query cannot be regenerated safely")
    _check_query(again[0], text, what, tables)
    return ParsedQuery(text=text, sql=sql, tables=tuple(read))


def run_query(query: ParsedQuery, inputs: Mapping[str, pa.Table], *, what: str) -> pa.Table:
    """Run a checked source query in the sandbox over ``inputs`` (table name -> rows).

    Raises:
        InvalidError: the query fails on the rows (a missing column, a type mismatch).
    """
    import duckdb

    cur = _sandbox()
    try:
        for name in query.tables:
            cur.register(name, _normalized_inputs(inputs[name]))
        return cur.sql(query.sql).to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, duckdb.PermissionException):
            raise BackendError(f"{what}: the SQL sandbox refused: {first}") from exc
        raise InvalidError(f"{what}: {first}") from exc
    finally:
        cur.close()  # registrations live and die with the cursor
