"""``quiver scheduler``, ``quiver schedules list`` and ``quiver jobs list|show|cancel``."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quiver.cli._common import JsonOption, RepoOption, console, err_console, open_store, print_json

jobs_app = typer.Typer(help="Background jobs (materializations, trainings, batch predictions).")
schedules_app = typer.Typer(help="The views' materialization schedules.")

_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "running": "yellow",
    "queued": "cyan",
}


def register(app: typer.Typer) -> None:
    """Add ``scheduler``, ``schedules`` and ``jobs`` to ``app``."""
    app.command("scheduler")(scheduler)
    app.add_typer(schedules_app, name="schedules")
    app.add_typer(jobs_app, name="jobs")


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def scheduler(
    poll: Annotated[
        float | None,
        typer.Option("--poll", min=0.1, help="Seconds between checks (scheduler.poll_seconds)."),
    ] = None,
    repo: RepoOption = None,
) -> None:
    """Run the views' materialization schedules until stopped (SIGTERM or Ctrl-C).

    Several schedulers (and 'quiver serve --scheduler' replicas) may run on one registry: each
    due run happens once. On SIGTERM, running jobs get jobs.grace_seconds to finish; a second
    SIGTERM exits at once.
    """
    from quiver.jobs.pool import JobPool
    from quiver.jobs.scheduler import Scheduler, list_schedules

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    store = open_store(repo)
    pool = JobPool(store)
    running = Scheduler(store, pool)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            import os

            os._exit(1)  # a second signal: exit at once (the next start reaps the jobs)
        pool.stop_taking()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    count = len(list_schedules(store))
    console.print(
        f"Scheduler of project '{store.project}': {count} scheduled view"
        f"{'' if count == 1 else 's'}, checked every "
        f"{poll or store.config.scheduler.poll_seconds:g} s (stop: Ctrl-C)"
    )
    try:
        running.run(stop, poll)
    finally:
        err_console.print("stopping: running jobs get jobs.grace_seconds to finish")
        pool.close()
        store.close()


@schedules_app.command("list")
def schedules_list(repo: RepoOption = None, json_: JsonOption = False) -> None:
    """Every view with a materialization schedule: next run, last run."""
    from quiver.jobs.scheduler import list_schedules

    store = open_store(repo)
    found = list_schedules(store)
    if json_:
        print_json([s.to_dict() for s in found])
        return
    if not found:
        console.print(f"No view of project '{store.project}' has a materialization_schedule.")
        return
    table = Table(title=f"Materialization schedules in project '{store.project}'")
    for col in ("view", "cron", "time zone", "next run (UTC)", "last run (UTC)", "status"):
        table.add_column(col)
    for s in found:
        status = (s.last_job or {}).get("status") or ""
        table.add_row(
            escape(s.view),
            escape(s.cron),
            escape(s.timezone),
            _time(s.next_run),
            _time(s.last_fire),
            f"[{_STYLE.get(status, 'white')}]{status}[/]" if status else "",
        )
    console.print(table)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="Only this status (repeatable).")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="materialize, train or predict_batch.")
    ] = None,
    view: Annotated[str | None, typer.Option("--view", help="Scheduled runs of a view.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many jobs.")] = 20,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """List recent background jobs (newest first)."""
    from quiver.errors import InvalidError
    from quiver.jobs.records import JOB_KINDS, JOB_STATUSES, list_jobs

    for s in status or ():
        if s not in JOB_STATUSES:
            raise InvalidError(f"status {s!r} is not one of {', '.join(JOB_STATUSES)}")
    if kind is not None and kind not in JOB_KINDS:
        raise InvalidError(f"kind {kind!r} is not one of {', '.join(JOB_KINDS)}")
    store = open_store(repo)
    found = list_jobs(store.registry, status=status, kind=kind, schedule=view, limit=limit)
    if json_:
        print_json([j.to_dict() for j in found])
        return
    if not found:
        console.print(f"No jobs in project '{store.project}'.")
        return
    table = Table(title=f"Jobs in project '{store.project}'")
    for col in ("job", "kind", "status", "created", "seconds", "by", "error"):
        table.add_column(col)
    for j in found:
        seconds = j.duration_seconds
        table.add_row(
            j.job_id,
            j.kind,
            f"[{_STYLE.get(j.status, 'white')}]{j.status}[/]",
            _time(j.created_at),
            f"{seconds:.2f}" if seconds is not None else "",
            escape(j.created_by or ""),
            escape(j.error or ""),
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """One job: status, progress, timings, result or error."""
    from quiver.jobs.records import get_job

    store = open_store(repo)
    job = get_job(store.registry, job_id).to_dict()
    if json_:
        print_json(job)
        return
    for key, value in job.items():
        console.print(f"{key}: {escape(str(value)) if value is not None else ''}", highlight=False)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Cancel a job: a queued one at once, a running one at its next safe point."""
    from quiver.jobs.records import request_cancel

    store = open_store(repo)
    job = request_cancel(store.registry, job_id)
    if json_:
        print_json(job.to_dict())
        return
    if job.status == "cancelled":
        console.print(f"Job {job_id} cancelled.")
    else:
        console.print(
            f"Job {job_id} is {job.status}; it stops at its next safe point "
            f"('quiver jobs show {job_id}' tells when)."
        )
