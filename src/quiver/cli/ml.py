"""CLI commands for models: train, models list|describe|promote|jobs, predict batch|online."""

from __future__ import annotations

import enum
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from quiver.cli._common import (
    JsonOption,
    RepoOption,
    Table,
    console,
    err_console,
    open_store,
    print_json,
)

VersionOption = Annotated[
    int | None,
    typer.Option("--version", "-v", help="A model version (default: production, else latest)."),
]


class MissingPolicy(enum.StrEnum):
    """What a batch prediction does with rows whose features are missing."""

    flag = "flag"
    refuse = "refuse"
    defaults = "defaults"


StageOption = Annotated[
    str | None,
    typer.Option("--stage", "-s", help="Use the version in this stage (staging, production...)."),
]


def register(app: typer.Typer) -> None:
    """Add the model commands to ``app``."""
    app.command("train")(train)
    models = typer.Typer(help="Work with trained models.", no_args_is_help=True)
    models.command("list")(list_models)
    models.command("describe")(describe)
    models.command("promote")(promote)
    models.command("jobs")(jobs)
    app.add_typer(models, name="models")
    predict = typer.Typer(help="Score entity rows with a model.", no_args_is_help=True)
    predict.command("batch")(predict_batch)
    predict.command("online")(predict_online)
    app.add_typer(predict, name="predict")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _metrics_table(title: str, train: dict[str, Any], test: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    for key in test:
        table.add_row(key, _fmt(train.get(key)), _fmt(test.get(key)))
    return table


def train(
    spec: Annotated[Path, typer.Argument(help="A training spec (YAML or JSON).")],
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Train a model from a spec file and register it as a new version."""
    store = open_store(repo)
    started = time.perf_counter()
    if json_:
        version = store.train(spec)
        print_json(version.to_dict())
        return
    with err_console.status("Training...") as status:

        def progress(message: str) -> None:
            elapsed = time.perf_counter() - started
            err_console.print(f"[dim]{elapsed:6.1f}s[/] {message}", highlight=False)
            status.update(f"{message}...")

        version = store.train(spec, progress=progress)
    console.print(
        f"[green]Trained[/] [bold]{version.model_id}[/] ({version.framework} "
        f"{version.model_type}) in {version.training_duration_seconds:.1f}s of fitting; "
        f"{version.lineage['row_counts']['train']:,} train / "
        f"{version.lineage['row_counts']['test']:,} test rows"
    )
    console.print(_metrics_table("Metrics", version.training_metrics, version.test_metrics))
    top = list(version.feature_importance.items())[:5]
    if top:
        console.print(
            "Top features: " + ", ".join(f"{name} ({value:.2f})" for name, value in top),
            highlight=False,
        )
    console.print(
        f"Next: quiver models promote {version.name} {version.version} production", highlight=False
    )


def list_models(repo: RepoOption = None, json_: JsonOption = False) -> None:
    """List the project's models with their latest and production versions."""
    store = open_store(repo)
    records = store.list_models()
    if json_:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        console.print(f"No models in project '{store.project}'; train one with 'quiver train'.")
        return
    table = Table(title=f"Models in project '{store.project}' ({len(records)})")
    for col in ("name", "versions", "latest", "production", "framework", "type", "test metric"):
        table.add_column(col)
    for r in records:
        latest, prod = r.latest, r.production
        metric = ""
        if latest is not None:
            key = "roc_auc" if latest.model_type == "classification" else "r2"
            metric = f"{key} {_fmt(latest.test_metrics.get(key))}"
        table.add_row(
            r.name,
            str(len(r.versions)),
            str(latest.version) if latest else "",
            str(prod.version) if prod else "",
            latest.framework if latest else "",
            latest.model_type if latest else "",
            metric,
        )
    console.print(table)


def describe(
    model: Annotated[str, typer.Argument(help="A model id 'name:version', or a model name.")],
    version: VersionOption = None,
    stage: StageOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Show one model version: metrics, stage, features and lineage."""
    from quiver.ml.service import model_versions

    store = open_store(repo)
    chosen = store.get_model(model, version=version, stage=stage)
    if json_:
        print_json(chosen.to_dict())
        return
    console.print(
        f"[bold]{chosen.model_id}[/] {chosen.framework} {chosen.model_type}"
        + (f" ({chosen.algorithm})" if chosen.algorithm else "")
        + f", stage [cyan]{chosen.stage}[/], created {chosen.created_at:%Y-%m-%d %H:%M:%S} "
        f"by {chosen.created_by or 'unknown'}",
        highlight=False,
    )
    if chosen.description:
        console.print(chosen.description, highlight=False)
    console.print(_metrics_table("Metrics", chosen.training_metrics, chosen.test_metrics))
    lin = chosen.lineage
    rng = lin.get("time_range", {})
    counts = lin.get("row_counts", {})
    distribution = lin.get("label_distribution", {}).get("total")
    console.print(
        f"Labels: '{lin.get('label_column')}' from '{lin.get('label_source')}', "
        f"{rng.get('min_timestamp')} .. {rng.get('max_timestamp')}; "
        f"{counts.get('train', 0):,} train / {counts.get('test', 0):,} test rows "
        f"({lin.get('split')} split); label distribution {distribution}",
        highlight=False,
    )
    views = ", ".join(f"{v} v{n}" for v, n in lin.get("feature_views", {}).items())
    console.print(f"Feature views: {views}", highlight=False)
    table = Table(title="Features")
    table.add_column("feature")
    table.add_column("reference")
    table.add_column("dtype")
    table.add_column("importance", justify="right")
    for f in lin.get("features", []):
        table.add_row(
            f["name"], f["ref"], f["dtype"], _fmt(chosen.feature_importance.get(f["name"]))
        )
    console.print(table)
    libs = ", ".join(f"{k} {v}" for k, v in lin.get("library_versions", {}).items())
    console.print(f"Libraries: {libs}", highlight=False)
    console.print(f"Artifacts: {store.config.model_path / chosen.artifact_dir}", highlight=False)
    others = [v for v in model_versions(store, chosen.name) if v.version != chosen.version]
    if others:
        console.print(
            "Other versions: " + ", ".join(f"{v.version} ({v.stage})" for v in others),
            highlight=False,
        )


def promote(
    model: Annotated[str, typer.Argument(help="A model name (or id 'name:version').")],
    version: Annotated[
        int | None, typer.Argument(help="The version (not needed with a model id).")
    ] = None,
    stage: Annotated[
        str, typer.Argument(help="none, staging, production or archived.")
    ] = "production",
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Move a model version to a stage (production archives the previous production one)."""
    store = open_store(repo)
    if version is None and ":" not in model:
        from quiver.errors import InvalidError

        raise InvalidError(
            f"say which version of '{model}' to promote: quiver models promote {model} VERSION "
            f"{stage}"
        )
    chosen = store.promote(model, version, stage)
    if json_:
        print_json(chosen.to_dict(full=False))
        return
    console.print(f"[green]{chosen.model_id}[/] is now in stage [cyan]{chosen.stage}[/]")


def jobs(
    model: Annotated[str | None, typer.Argument(help="Only this model (name or id).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many jobs.")] = 20,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """List recent prediction jobs."""
    from quiver.ml.service import list_prediction_jobs

    store = open_store(repo)
    records = list_prediction_jobs(store, model, limit=limit)
    if json_:
        print_json([j.to_dict() for j in records])
        return
    if not records:
        console.print("No prediction jobs yet.")
        return
    table = Table(title="Prediction jobs")
    for col in ("id", "model", "status", "rows", "seconds", "created", "output", "error"):
        table.add_column(col)
    for j in records:
        table.add_row(
            j.prediction_id[:12],
            j.model_id,
            j.status,
            f"{j.rows:,}",
            f"{j.duration_seconds:.1f}",
            f"{j.created_at:%Y-%m-%d %H:%M:%S}",
            j.output or "",
            j.error or "",
        )
    console.print(table)


def predict_batch(
    model: Annotated[str, typer.Argument(help="A model id 'name:version', or a model name.")],
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="Entity rows: a data source name, a Parquet/CSV path, or iceberg:ns.table.",
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="A Parquet path, or an Iceberg table iceberg:ns.table."
        ),
    ],
    version: VersionOption = None,
    stage: StageOption = None,
    timestamp_column: Annotated[
        str, typer.Option("--timestamp-column", help="The input's timestamp column.")
    ] = "event_timestamp",
    prediction_column: Annotated[
        str, typer.Option("--prediction-column", help="Name of the prediction column.")
    ] = "prediction",
    entity_columns: Annotated[
        list[str] | None,
        typer.Option(
            "--entity-column",
            "-e",
            help="Input columns copied to the output (repeat; default: the join keys).",
            show_default=False,
        ),
    ] = None,
    chunk_rows: Annotated[
        int | None, typer.Option("--chunk-rows", min=1, help="Rows per chunk (bounds memory).")
    ] = None,
    missing: Annotated[
        MissingPolicy,
        typer.Option(
            "--missing",
            help=(
                "Rows whose features are missing: flag (score them, features_missing=true), "
                "refuse (fail the job) or defaults (use the features' defaults)."
            ),
        ),
    ] = MissingPolicy.flag,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Score every input row with features as of its timestamp and write the predictions."""
    store = open_store(repo)
    started = time.perf_counter()
    options: dict[str, Any] = {
        "version": version,
        "stage": stage,
        "timestamp_column": timestamp_column,
        "prediction_column": prediction_column,
        "entity_columns": [c for v in entity_columns or [] for c in v.split(",") if c] or None,
        "chunk_rows": chunk_rows,
        "missing": missing.value,
    }
    if json_:
        job = store.predict_batch(model, input, output, **options)
        print_json(job.to_dict())
        return
    with err_console.status("Predicting...") as status:

        def progress(rows: int) -> None:
            rate = rows / max(time.perf_counter() - started, 1e-9)
            status.update(f"Predicting... {rows:,} rows ({rate:,.0f} rows/s)")

        job = store.predict_batch(model, input, output, progress=progress, **options)
    console.print(
        f"[green]Wrote[/] {job.rows:,} predictions of [bold]{job.model_id}[/] to {job.output} "
        f"in {job.duration_seconds:.1f}s (job {job.prediction_id})",
        highlight=False,
    )
    if job.rows_missing_features:
        console.print(
            f"{job.rows_missing_features:,} rows had missing features "
            f"({'defaults used' if missing.value == 'defaults' else 'flagged'} in "
            "features_missing)",
            highlight=False,
        )


def predict_online(
    model: Annotated[str, typer.Argument(help="A model id 'name:version', or a model name.")],
    entity: Annotated[
        list[str] | None,
        typer.Option(
            "--entity",
            "-e",
            help="Join key values of one row, KEY=VALUE[,KEY=VALUE] (repeat for more rows).",
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", "-f", help="Feature values as a JSON object (instead of keys)."),
    ] = None,
    use_defaults: Annotated[
        bool,
        typer.Option("--use-defaults", help="Fill missing or expired features with defaults."),
    ] = False,
    version: VersionOption = None,
    stage: StageOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Score entity keys (features from the online store) or given feature values."""
    from quiver.errors import InvalidError

    store = open_store(repo)
    kwargs: dict[str, Any] = {"version": version, "stage": stage, "use_defaults": use_defaults}
    if features is not None:
        try:
            kwargs["features"] = json.loads(features)
        except json.JSONDecodeError as exc:
            raise InvalidError(f"--features is not valid JSON: {exc}") from exc
    if entity:
        kwargs["entity_rows"] = [_entity_row(text) for text in entity]
    answer = store.predict_online(model, **kwargs)
    if json_:
        print_json(answer)
        return
    table = Table(title=f"Predictions of {answer['model_id']}")
    rows = answer["predictions"]
    if any("entity" in r for r in rows):
        table.add_column("entity")
    table.add_column("prediction", justify="right")
    classifier = any("prediction_class" in r for r in rows)
    if classifier:
        table.add_column("class")
        table.add_column("probabilities")
    table.add_column("defaults used")
    for r in rows:
        cells = []
        if any("entity" in x for x in rows):
            cells.append(", ".join(f"{k}={v}" for k, v in r.get("entity", {}).items()))
        cells.append(f"{r['prediction']:.6g}")
        if classifier:
            cells.append(str(r.get("prediction_class")))
            cells.append(", ".join(f"{k}: {v:.3f}" for k, v in r.get("probabilities", {}).items()))
        cells.append(", ".join(r.get("used_defaults", [])))
        table.add_row(*cells)
    console.print(table)


def _entity_row(text: str) -> dict[str, Any]:
    from quiver.errors import InvalidError

    row: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InvalidError(f"--entity {text!r}: write KEY=VALUE[,KEY=VALUE]")
        raw = value.strip()
        try:
            row[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            row[key.strip()] = raw
    return row
