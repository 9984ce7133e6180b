"""The SQL sandbox: what a transformation may say, and what it can never reach."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from quiver import Field, InvalidError
from quiver.features.sql import _sandbox, evaluate, parse_expression

CANARY = "/tmp/quiver-sandbox-canary"

# Each attempt, and what the error must name.
ESCAPES = [
    (f"read_csv('{CANARY}.csv')", "read_csv"),
    ("read_csv_auto('/etc/passwd')", "read_csv_auto"),
    ("read_parquet('x.parquet')", "read_parquet"),
    ("read_json_auto('x.json')", "read_json_auto"),
    ("read_text('/etc/passwd')", "read_text"),
    ("read_blob('/etc/passwd')", "read_blob"),
    ("upper(getenv('HOME'))", "getenv"),
    ("current_setting('temp_directory')", "current_setting"),
    ("getvariable('x')", "getvariable"),
    ("glob('/etc/*')", "glob"),
    ("query_table('t')", "query_table"),
    ("query('SELECT 1')", "query"),
    ("sniff_csv('/etc/passwd')", "sniff_csv"),
    ("parquet_metadata('x.parquet')", "parquet_metadata"),
    ("duckdb_settings()", "duckdb_settings"),
    ("list_transform([1], x -> x + 1)", "list_transform"),
    ("(SELECT 1)", "subqueries"),
    ("SELECT * FROM read_csv('/etc/passwd')", "subqueries"),
    ("coalesce(a, (SELECT 1))", "subqueries"),
    ("a IN (SELECT b FROM t)", "subquery"),
    ("EXISTS (SELECT 1)", "subqueries"),
    (f"a + 1; COPY t TO '{CANARY}.csv'", "exactly one expression"),
    (f"COPY (SELECT 1) TO '{CANARY}.csv'", "COPY"),
    (f"ATTACH '{CANARY}.db'", "ATTACH"),
    ("DETACH x", "DETACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "statement"),
    ("CALL pragma_version()", "statement"),
    ("PRAGMA database_list", "PRAGMA"),
    ("SET enable_external_access = true", "SET"),
    (f"CREATE TABLE t AS SELECT * FROM read_csv('{CANARY}.csv')", "CREATE"),
    ("count(*) OVER ()", "window functions"),
    ("row_number() OVER (ORDER BY a)", "window functions"),
    ("sum(a)", "aggregate function 'sum'"),
    ("t.a + 1", "qualified column 't.a'"),
    ("main.t.a", "qualified column 'main.t.a'"),
    ("$1", "parameters"),
    ("?", "parameters"),
    ("*", "'*'"),
]


@pytest.mark.parametrize(("text", "named"), ESCAPES, ids=[e[0][:40] for e in ESCAPES])
def test_the_sandbox_refuses_an_escape(
    text: str, named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    def no_database(*args: object, **kwargs: object) -> None:
        raise AssertionError("refusing must not run any SQL")

    monkeypatch.setattr(duckdb, "connect", no_database)  # so nothing can be read or written
    with pytest.raises(InvalidError) as info:
        Field(name="x", dtype="int64", transformation=text)
    assert named in info.value.message
    assert "feature 'x'" in info.value.message
    assert not any(Path("/tmp").glob("quiver-sandbox-canary*"))  # nothing was written


def test_at_least_twenty_escape_attempts() -> None:
    assert len(ESCAPES) >= 20


@pytest.mark.parametrize(
    "text",
    [
        "date_diff('year', date_of_birth, event_timestamp)",
        "a / NULLIF(b, 0)",
        "CASE WHEN a > 1 THEN 'big' ELSE lower(s) END",
        "coalesce(a, 0) + abs(b) * 2",
        "CAST(a AS DOUBLE) / 3",
        "a::int",
        "strftime(ts, '%Y-%m')",
        "ts + INTERVAL 1 DAY",
        "a IN (1, 2, 3) AND s LIKE 'x%'",
        "extract(year FROM ts) - 2000",
        "round(greatest(a, b), 2)",
        "if(a > 0, 'pos', 'neg')",
    ],
)
def test_scalar_expressions_are_accepted(text: str) -> None:
    parsed = parse_expression(text)
    assert parsed.columns
    assert parsed.text == text


def test_what_runs_is_regenerated_and_quoted() -> None:
    parsed = parse_expression("a + b")
    assert parsed.sql == '"a" + "b"'
    assert parsed.columns == ("a", "b")


def test_the_sandbox_database_cannot_touch_files_even_if_sql_reached_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    cur = _sandbox()
    try:
        for sql in (
            f"SELECT * FROM read_csv('{secret}')",
            f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
            f"ATTACH '{tmp_path / 'x.db'}'",
            "SET enable_external_access = true",
        ):
            with pytest.raises(Exception) as info:
                cur.sql(sql)
            assert "disabled" in str(info.value) or "Cannot change" in str(info.value)
    finally:
        cur.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.csv"]


def test_evaluate_casts_to_the_dtype_and_keeps_row_order() -> None:
    table = pa.table({"a": [3, None, 1, 4], "b": [0, 1, 2, 4]})
    out = evaluate(
        table,
        {
            "ratio": (parse_expression("a / NULLIF(b, 0)"), "float64"),
            "label": (parse_expression("CASE WHEN a > 2 THEN 'big' END"), "string"),
        },
        keep=["b"],
    )
    assert out.column_names == ["b", "ratio", "label"]
    assert out.column("ratio").to_pylist() == [None, None, 0.5, 1.0]
    assert out.column("label").to_pylist() == ["big", None, None, "big"]
    assert out.schema.field("ratio").type == pa.float64()


def test_evaluate_names_a_missing_column() -> None:
    with pytest.raises(InvalidError, match="reads column 'c'"):
        evaluate(pa.table({"a": [1]}), {"x": (parse_expression("c + 1"), "int64")})
