"""CLI commands for the online path: materialize, materialize-incremental, validate-consistency,
get-online, materialization-runs."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from quiver.cli._common import (
    JsonOption,
    RepoOption,
    Table,
    console,
    err_console,
    open_store,
    print_json,
)

ViewsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--views",
        "--view",
        "-v",
        help="Feature views to materialize (repeat, or comma-separated; default: every online "
        "view).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the online commands to ``app``."""
    app.command("materialize")(materialize)
    app.command("materialize-incremental")(materialize_incremental)
    app.command("validate-consistency")(validate_consistency)
    app.command("get-online")(get_online)
    app.command("materialization-runs")(materialization_runs)


def _views(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


class _RichProgress:
    """Shows one progress line per view: a pulsing bar, rows written, rate, elapsed time."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.began: dict[str, float] = {}
        self.skipped: list[tuple[str, datetime]] = []

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def view_started(self, view: str, start: datetime | None, end: datetime) -> None:
        self.tasks[view] = self.progress.add_task(view, total=None, rate="", rows=0)
        self.began[view] = time.perf_counter()

    def rows_written(self, view: str, rows: int) -> None:
        task = self.tasks[view]
        done = self.progress.tasks[task].fields["rows"] + rows
        elapsed = max(time.perf_counter() - self.began[view], 1e-9)
        self.progress.update(task, rows=done, rate=f"{done / elapsed:,.0f} rows/s")

    def view_finished(self, run: Any) -> None:
        task = self.tasks.get(run.view)
        if task is None:
            return
        mark = "[green]done[/]" if run.status == "succeeded" else "[red]failed[/]"
        self.progress.update(
            task, total=1, completed=1, rows=run.rows_written, description=f"{run.view} {mark}"
        )

    def view_skipped(self, view: str, watermark: datetime) -> None:
        self.skipped.append((view, watermark))


def _summary(runs: list[Any], skipped: list[tuple[str, datetime]], json_: bool) -> None:
    if json_:
        print_json(
            {
                "runs": [r.to_dict() for r in runs],
                "skipped": [{"view": v, "watermark": w.isoformat()} for v, w in skipped],
            }
        )
        return
    for view, mark in skipped:
        console.print(f"{view}: up to date (watermark {mark.isoformat()})")
    if not runs:
        if not skipped:
            console.print("Nothing to materialize: no feature view has online=True.")
        return
    rows = sum(r.rows_written for r in runs)
    seconds = sum(r.duration_seconds for r in runs)
    ends = {r.end.isoformat() for r in runs}
    console.print(
        f"[green]Materialized[/] {len(runs)} view{'s' if len(runs) != 1 else ''}, "
        f"{rows:,} rows in {seconds:.1f}s, up to {', '.join(sorted(ends))}"
    )
    for r in runs:
        if getattr(r, "rows_invalid", 0):
            console.print(
                f"{r.view}: {r.rows_invalid:,} rows failed validation "
                f"({r.rows_dropped:,} dropped); failures: {r.validation['failures']}",
                highlight=False,
            )


def materialize(
    start: Annotated[str, typer.Argument(help="Range start (inclusive): ISO 8601 or 'now'.")],
    end: Annotated[str, typer.Argument(help="Range end (exclusive): ISO 8601 or 'now'.")],
    views: ViewsOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Copy the latest value per entity key in [START, END) to the online store."""
    store = open_store(repo)
    if json_:
        runs = store.materialize(start, end, _views(views))
        _summary(runs, [], json_=True)
        return
    with _RichProgress() as progress:
        runs = store.materialize(start, end, _views(views), progress=progress)
    _summary(runs, progress.skipped, json_=False)


def materialize_incremental(
    end: Annotated[str, typer.Argument(help="Range end (exclusive): ISO 8601 or 'now'.")],
    views: ViewsOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Materialize each view from its watermark up to END."""
    store = open_store(repo)
    if json_:
        skipped: list[tuple[str, datetime]] = []

        class _Collect:
            def view_skipped(self, view: str, watermark: datetime) -> None:
                skipped.append((view, watermark))

        runs = store.materialize_incremental(end, _views(views), progress=_Collect())
        _summary(runs, skipped, json_=True)
        return
    with _RichProgress() as progress:
        runs = store.materialize_incremental(end, _views(views), progress=progress)
    _summary(runs, progress.skipped, json_=False)


def validate_consistency(
    view: Annotated[str, typer.Argument(help="The feature view to check.")],
    sample: Annotated[
        int, typer.Option("--sample", "-n", min=0, help="Keys to check (0: every key).")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the key sample.")] = 0,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Compare online values with point-in-time offline values as of the watermark.

    Exits with status 1 when a value differs.
    """
    from quiver.consistency import validate_consistency as check

    store = open_store(repo)
    report = check(store, view, sample=sample or None, seed=seed)
    if json_:
        print_json(report.to_dict())
    else:
        console.print(
            f"Feature view '{view}': checked {report.keys_sampled:,} of {report.keys_total:,} "
            f"keys ({report.values_compared:,} values) as of the watermark "
            f"{report.watermark.isoformat()}"
        )
        if report.newer_online:
            console.print(
                f"  {report.newer_online:,} keys skipped: their online value is newer than the "
                "watermark (pushed since)"
            )
        if report.reclaimed:
            console.print(
                f"  {report.reclaimed:,} keys skipped: the online store already dropped their "
                "stale value (key expiry); the watermark lags behind"
            )
        if report.ok:
            console.print("[green]OK[/]: 0 mismatches")
        else:
            table = Table(title=f"{report.mismatch_count:,} mismatched values")
            for col in ("key", "feature", "online", "offline", "online status"):
                table.add_column(col)
            for m in report.mismatches[:20]:
                table.add_row(
                    ", ".join(f"{k}={v}" for k, v in m.key.items()),
                    m.feature,
                    repr(m.online),
                    repr(m.offline),
                    m.online_status,
                )
            console.print(table)
            by = ", ".join(f"{f}: {n:,}" for f, n in sorted(report.by_feature.items()))
            console.print(
                f"[red]{report.mismatch_count:,} mismatches[/] in {report.keys_mismatched:,} "
                f"keys ({by})"
            )
    if not report.ok:
        raise typer.Exit(1)


def _parse_key(value: str, dtype: str, key: str) -> Any:
    from quiver.errors import InvalidError

    try:
        if dtype in ("int32", "int64"):
            return int(value)
        if dtype in ("float32", "float64"):
            return float(value)
        if dtype == "bool":
            lowered = value.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if dtype == "timestamp":
            return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidError(f"--entity {key}={value}: join key '{key}' must be {dtype}") from None
    return value


def get_online(
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features",
            "--feature",
            "-f",
            help="Feature references view:feature or view:* (repeat, or comma-separated).",
            show_default=False,
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="A feature service instead.")
    ] = None,
    entity: Annotated[
        list[str] | None,
        typer.Option(
            "--entity",
            "-e",
            help=(
                "One entity row: key=value, comma-separated for compound keys and request "
                "fields of on-demand views (repeat)."
            ),
            show_default=False,
        ),
    ] = None,
    full_names: Annotated[
        bool, typer.Option("--full-names", help="Name columns view__feature.")
    ] = False,
    use_defaults: Annotated[
        bool,
        typer.Option(
            "--use-defaults",
            help="Show each feature's default_value where its value is missing or expired.",
        ),
    ] = False,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Read feature values from the online store for a few entity rows."""
    from quiver.errors import InvalidError

    store = open_store(repo)
    refs = [r.strip() for f in features or [] for r in f.split(",") if r.strip()] or None
    if not entity:
        raise InvalidError("give at least one --entity key=value")
    selections = store.resolve_selections(refs, service)
    key_types: dict[str, str] = {}
    for sel in selections:
        key_types.update(sel.key_types)
    for sel in selections:  # request fields of on-demand views come with the keys
        for field in getattr(sel, "request_fields", ()):
            key_types.setdefault(field.name, field.dtype)
    rows = []
    for text in entity:
        row: dict[str, Any] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or not key:
                raise InvalidError(f"--entity {text!r} must be key=value[,key=value]")
            if key not in key_types:
                raise InvalidError(
                    f"--entity {text!r}: '{key}' is not a join key (or request field) of the "
                    f"requested views; they use {', '.join(key_types)}"
                )
            row[key] = _parse_key(value.strip(), key_types[key], key)
        rows.append(row)
    result = store.get_online_features(
        features=refs,
        entity_rows=rows,
        feature_service=service,
        full_feature_names=full_names,
        use_defaults=use_defaults,
    )
    if json_:
        print_json({**result.to_dict(), "statuses": result.statuses})
        return
    _print_online(result, len(rows))


def _print_online(result: Any, count: int) -> None:
    """Print online values without cutting a name or a value short.

    One column per feature when that fits the console's width, else one row per entity row and
    feature (a long layout whose cells wrap).
    """
    from rich.measure import Measurement

    title = f"Online features ({count} rows)"
    wide = _wide_table(result, count, title)
    unbounded = console.options.update_width(sys.maxsize)  # the table's natural width
    if Measurement.get(console, unbounded, wide).maximum <= console.width:
        console.print(wide)
    else:
        console.print(_long_table(result, count, title))


def _wide_table(result: Any, count: int, title: str) -> Table:
    table = Table(title=title)
    for col in [*result.join_keys, *result.feature_names]:
        table.add_column(escape(col))
    for i in range(count):
        keys = [escape(str(result.entity_columns[k][i])) for k in result.join_keys]
        table.add_row(*keys, *(_online_cell(result, name, i) for name in result.feature_names))
    return table


def _long_table(result: Any, count: int, title: str) -> Table:
    table = Table(title=title)
    for col in [*result.join_keys, "feature", "value"]:
        table.add_column(escape(col), overflow="fold")  # wrap what does not fit, never "…"
    for i in range(count):
        keys = [escape(str(result.entity_columns[k][i])) for k in result.join_keys]
        last = len(result.feature_names) - 1
        for j, name in enumerate(result.feature_names):
            table.add_row(
                *(keys if j == 0 else [""] * len(keys)),
                escape(name),
                _online_cell(result, name, i),
                end_section=j == last and i < count - 1,
            )
    return table


def _online_cell(result: Any, name: str, i: int) -> str:
    """The value of feature ``name`` in row ``i`` as Rich markup, or its status if absent."""
    status = result.statuses[name][i]
    if status == "present":
        value = result.values[name][i]
        if value is None:
            return "[dim]null[/]"
        if isinstance(value, dict) or (
            isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
        ):  # maps, structs and JSON documents print as JSON
            return escape(json.dumps(value, ensure_ascii=False, default=str))
        return escape(str(value))
    return "[yellow]expired[/]" if status == "expired" else "[red]not found[/]"


def materialization_runs(
    view: Annotated[str | None, typer.Option("--view", "-v", help="Only this view.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many runs.")] = 20,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """List recent materialization runs (newest first) and the views' watermarks."""
    from quiver.registry.runs import list_runs, list_watermarks, online_store_key

    store = open_store(repo)
    runs = list_runs(store.registry, view=view, limit=limit)
    marks = list_watermarks(store.registry, online_store_key(store.config))
    if json_:
        print_json(
            {
                "runs": [r.to_dict() for r in runs],
                "watermarks": {k: v.isoformat() for k, v in marks.items()},
            }
        )
        return
    if not runs:
        console.print(f"No materialization runs in project '{store.project}'.")
        return
    table = Table(title=f"Materialization runs in project '{store.project}'")
    for col in ("started", "view", "range", "rows", "seconds", "status", "error", "job"):
        table.add_column(col)
    style = {"succeeded": "green", "failed": "red", "running": "yellow"}
    for r in runs:
        start = r.start.strftime("%Y-%m-%d %H:%M") if r.start else "beginning"
        table.add_row(
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.view,
            f"{start} -> {r.end.strftime('%Y-%m-%d %H:%M')}",
            f"{r.rows_written:,}",
            f"{r.duration_seconds:.2f}",
            f"[{style.get(r.status, 'white')}]{r.status}[/]",
            r.error or "",
            r.job_id or "",
        )
    console.print(table)
    for name, mark in sorted(marks.items()):
        if view is None or name == view:
            console.print(f"watermark {name}: {mark.isoformat()}")
