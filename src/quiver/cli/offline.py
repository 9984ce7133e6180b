"""CLI for offline data: ``quiver training-set`` writes point-in-time correct training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quiver.cli._common import JsonOption, RepoOption, console, err_console, open_store, print_json


def register(app: typer.Typer) -> None:
    """Add the offline commands to ``app``."""
    app.command("training-set")(training_set)


def training_set(
    entities: Annotated[
        str,
        typer.Option(
            "--entities",
            "-e",
            help="The entity table: a Parquet or CSV file (local or s3://), or the name of a "
            "registered data source (a label table).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The Parquet file to write.", show_default=False)
    ],
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features",
            "-f",
            help="Feature references 'view:feature' or 'view:*' (repeat, or separate with commas; "
            "more may follow as arguments).",
            show_default=False,
        ),
    ] = None,
    more: Annotated[
        list[str] | None, typer.Argument(help="More feature references.", show_default=False)
    ] = None,
    service: Annotated[
        str | None,
        typer.Option("--service", "-s", help="A feature service (instead of --features)."),
    ] = None,
    timestamp_column: Annotated[
        str, typer.Option("--timestamp-column", help="The entity table's timestamp column.")
    ] = "event_timestamp",
    full_feature_names: Annotated[
        bool,
        typer.Option("--full-feature-names", help="Name feature columns 'view__feature'."),
    ] = False,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Write point-in-time correct training data (entity table + features) to Parquet."""
    from quiver.errors import InvalidError

    refs = [r.strip() for item in [*(features or []), *(more or [])] for r in item.split(",")]
    refs = [r for r in refs if r]
    if refs and service:
        raise InvalidError("give either --features or --service, not both")
    if not refs and not service:
        raise InvalidError("name the features: --features view:feature ... or --service NAME")
    out = out.expanduser().absolute()
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise InvalidError(f"--out '{out}' must be a .parquet file")
    store = open_store(repo)
    summary = _run(
        store, entities, refs or None, service, timestamp_column, full_feature_names, out, json_
    )
    if json_:
        print_json(
            {
                "path": str(summary.path),
                "rows": summary.rows,
                "columns": summary.columns,
                "null_rates": {c: summary.null_rate(c) for c in summary.feature_columns},
            }
        )
        return
    rates = ", ".join(f"{c} {summary.null_rate(c):.1%}" for c in summary.feature_columns)
    console.print(
        f"Wrote {summary.rows:,} rows x {len(summary.columns)} columns to {summary.path} "
        f"(null rate per feature: {rates or 'none'})",
        highlight=False,
        soft_wrap=True,
    )


def _run(
    store: Any,
    entities: str,
    refs: list[str] | None,
    service: str | None,
    timestamp_column: str,
    full_feature_names: bool,
    out: Path,
    quiet: bool,
) -> Any:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    entity_df: str = entities
    local = Path(entities).expanduser()
    if local.exists():  # a path on the command line is relative to the working directory
        entity_df = str(local.absolute())
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    )
    with progress:
        task = progress.add_task("reading the entity table", total=None, rows="")
        job = store.get_historical_features(
            entity_df,
            refs,
            feature_service=service,
            full_feature_names=full_feature_names,
            timestamp_column=timestamp_column,
        )
        total = job.num_rows
        progress.update(
            task,
            description="joining features (point in time)",
            total=total,
            rows=f"0/{total:,} rows",
        )

        def advance(rows: int) -> None:
            progress.update(
                task, description="writing Parquet", completed=rows, rows=f"{rows:,}/{total:,} rows"
            )

        summary = job.to_parquet(out, progress=advance)
        progress.update(task, completed=summary.rows)
    return summary
