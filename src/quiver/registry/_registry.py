"""The registry: every definition object per project, with its version history.

Reads are per object (or per kind); writes happen in one transaction that holds the project's
lock (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), so concurrent
applies are serialized and each one checks the versions it planned against (compare-and-swap).

The common reads run on a kept driver connection (:mod:`quiver.registry._driver`); SQLAlchemy
(the writes, the migrations, the rarer reads) is imported and its engine made at first use, so
that a process that only reads a SQLite registry never loads it.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.definitions import KIND_LABELS, did_you_mean, object_from_spec
from quiver.errors import BackendError, ConcurrentChangeError, NotFoundError
from quiver.registry._driver import DriverReads, connect_sqlite, one_line, sqlite_file, stamp
from quiver.security.principal import current_principal, os_user

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["ObjectRecord", "Registry", "VersionRecord", "current_user"]

_MIGRATIONS = Path(__file__).parent / "migrations"
_PARAM_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
"""A positional parameter in the drivers' own SQL, by DB-API ``paramstyle`` (sqlite3, psycopg)."""

_RECORD = "kind, name, version, spec, spec_hash, created_at, updated_at, updated_by"
"""The columns of ``objects`` an :class:`ObjectRecord` is made of, in its fields' order."""


def head_revision() -> str | None:
    """The newest migration's revision, read from the file names (``NNNN_name.py`` holds
    revision ``NNNN``; a unit test checks this against alembic's own head), or ``None`` when
    there are none."""
    numbers = [p.name.split("_", 1)[0] for p in (_MIGRATIONS / "versions").glob("[0-9]*_*.py")]
    return max(numbers, default=None)


def current_user() -> str:
    """The author recorded with a change: the acting principal's name (a REST caller, or a
    principal given to :meth:`~quiver.store.FeatureStore.as_principal`), else ``QUIVER_USER``
    or the OS user."""
    principal = current_principal()
    return principal.name if principal is not None else os_user()


_one_line = one_line


def _storable(name: str) -> bool:
    """Whether an object could be called ``name`` (PostgreSQL refuses NUL in any text).

    Names are plain identifiers, so a name with NUL is simply not found, without a query.
    """
    return "\x00" not in name


_utc = stamp


@dataclass(frozen=True)
class ObjectRecord:
    """The current state of one registry object."""

    kind: str
    name: str
    version: int
    spec: dict[str, Any]
    spec_hash: str
    created_at: datetime
    updated_at: datetime
    updated_by: str | None

    @property
    def obj(self) -> Any:
        """The definition object."""
        return object_from_spec(self.kind, self.spec)


@dataclass(frozen=True)
class VersionRecord:
    """One entry of an object's history."""

    kind: str
    name: str
    version: int
    operation: str
    spec: dict[str, Any]
    spec_hash: str
    created_at: datetime
    author: str | None
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "operation": self.operation,
            "spec_hash": self.spec_hash,
            "created_at": self.created_at.isoformat(),
            "author": self.author,
            "message": self.message,
            "spec": self.spec,
        }


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine set up for the registry (SQLite: WAL, busy timeout, explicit BEGIN)."""
    import sqlalchemy as sa
    from sqlalchemy import event

    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let the "begin" hook below emit BEGIN
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("quiver_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except ImportError as exc:
        from quiver.errors import MissingExtraError

        where = f"registry URL {url.split('@')[-1]}"
        if url.startswith("postgresql"):
            raise MissingExtraError("psycopg", "postgres", where) from exc
        raise BackendError(
            f"{where} needs the database driver '{exc.name}', which is not installed"
        ) from exc
    except sa.exc.ArgumentError as exc:
        from quiver.errors import ConfigError

        raise ConfigError(f"registry.url {url!r} is not a valid SQLAlchemy URL") from exc


class Registry:
    """Objects of one project in a SQL database, with a version history.

    Args:
        url: A SQLAlchemy URL (``sqlite:///path`` or ``postgresql+psycopg://...``).
        project: The project whose objects this registry reads and writes.
    """

    def __init__(self, url: str, project: str) -> None:
        self.url = url
        self.project = project
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._file = sqlite_file(url)
        if self._file is None:  # a bad URL or a missing driver is an error here, not later
            self._engine = make_engine(url)
        self._reads = DriverReads(self._driver_connection, self._mark, self._safe_url)
        try:
            self._migrate()
            self._ensure_project()
        except Exception as exc:
            import sqlalchemy as sa

            if isinstance(exc, sa.exc.OperationalError):
                raise BackendError(
                    f"cannot open the registry at {self._safe_url}: {_one_line(exc.orig)}"
                ) from exc
            raise

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (made at first use)."""
        engine = self._engine
        if engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = make_engine(self.url)
                engine = self._engine
        return engine

    @property
    def _safe_url(self) -> str:
        if self._file is not None:  # no password in a file's URL
            return self.url
        import sqlalchemy as sa

        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self._file is not None else self.engine.dialect.name

    @property
    def _mark(self) -> str:
        if self._file is not None:
            return "?"
        return _PARAM_MARKS[self.engine.dialect.paramstyle]

    def close(self) -> None:
        """Release the database connections."""
        self._reads.close()
        if self._engine is not None:
            self._engine.dispose()

    def revision(self) -> int:
        """The project's revision: a counter that every registry write moves.

        Callers poll it (serving checks it every second for changes by other processes), so it
        is read on the kept driver connection (:mod:`quiver.registry._driver`): about 10 us on
        SQLite instead of about 300 us through SQLAlchemy.

        Raises:
            BackendError: the registry database cannot be read.
        """
        rows = self._reads.rows("SELECT revision FROM projects WHERE name = ?", (self.project,))
        return int(rows[0][0]) if rows else 0

    def _driver_connection(self) -> Any:
        """A new driver connection in autocommit mode: ``sqlite3`` for a SQLite file, else one
        of the engine's, taken out of its pool."""
        if self._file is not None:
            return connect_sqlite(self._file)
        proxied = self.engine.raw_connection()
        conn: Any = proxied.driver_connection
        proxied.detach()  # ours now: closing it will not hand it back to the pool
        if self.dialect == "postgresql":
            conn.rollback()  # the pool's pre-ping may have begun a transaction
            conn.autocommit = True
        # SQLite: autocommit already (isolation_level=None, set when the engine connects).
        return conn

    def _rows(
        self, sql: str, params: Sequence[Any], conn: Connection | None = None
    ) -> builtins.list[tuple[Any, ...]]:
        """The rows of one read (``?`` marks its parameters): inside ``conn``'s transaction
        when given; else, for a SQLite file, on the kept ``sqlite3`` connection, and for any
        other database on a connection of the engine's pool (reads of many threads at once)."""
        if conn is None and self._file is not None:
            return self._reads.rows(sql, params)
        if self._mark != "?":
            sql = sql.replace("?", self._mark)
        if conn is not None:
            return [tuple(r) for r in conn.exec_driver_sql(sql, tuple(params))]
        with self.engine.connect() as pooled:
            return [tuple(r) for r in pooled.exec_driver_sql(sql, tuple(params))]

    # -- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        if self._at_head():  # the usual case, without importing alembic (a fresh process's cost)
            return
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self.engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
        from alembic import command

        with self._write() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242424242)")
            if MigrationContext.configure(conn).get_current_revision() != head:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")

    def _at_head(self) -> bool:
        """Whether the database is at :func:`head_revision` (``False`` when unsure: then
        alembic decides)."""
        head = head_revision()
        if head is None:
            return False
        try:
            rows = self._reads.rows("SELECT version_num FROM alembic_version")
        except BackendError:  # no table yet (a new database), or no database: alembic's turn
            return False
        return [r[0] for r in rows] == [head]

    def _ensure_project(self) -> None:
        if self._reads.rows("SELECT name FROM projects WHERE name = ?", (self.project,)):
            return
        import sqlalchemy as sa

        from quiver.registry.tables import projects

        try:
            with self._write() as conn:
                conn.execute(
                    projects.insert().values(
                        name=self.project, revision=0, created_at=datetime.now(UTC)
                    )
                )
        except sa.exc.IntegrityError:
            pass  # another process created it first

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(quiver_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def reading(self, what: str) -> Iterator[Connection]:
        """A connection for reads of the registry's tables about ``what`` (for the error:
        ``registry read (what) failed``).

        Raises:
            BackendError: the database failed.
        """
        import sqlalchemy as sa

        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f"registry read ({what}) failed: {exc}") from exc

    @contextmanager
    def writing(self, what: str) -> Iterator[Connection]:
        """A write transaction on the registry's tables about ``what``; commits on success.

        Raises:
            BackendError: the database failed (nothing is written).
        """
        import sqlalchemy as sa

        try:
            with self._write() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f"registry write ({what}) failed: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction holding the project's lock; commits on success."""
        import sqlalchemy as sa

        from quiver.registry.tables import projects

        try:
            with self._write() as conn:
                conn.execute(
                    sa.select(projects.c.revision)
                    .where(projects.c.name == self.project)
                    .with_for_update()
                ).first()
                conn.execute(
                    projects.update()
                    .where(projects.c.name == self.project)
                    .values(revision=projects.c.revision + 1)
                )
                yield conn
        except sa.exc.OperationalError as exc:
            raise BackendError(f"registry write failed: {_one_line(exc.orig)}") from exc

    @contextmanager
    def global_transaction(self) -> Iterator[Connection]:
        """A write transaction for rows shared by every project (API keys); commits on success.

        It moves every project's revision, so servers of any project see the change at their
        next registry check (within a second).
        """
        import sqlalchemy as sa

        from quiver.registry.tables import projects

        try:
            with self._write() as conn:
                conn.execute(projects.update().values(revision=projects.c.revision + 1))
                yield conn
        except sa.exc.OperationalError as exc:
            raise BackendError(f"registry write failed: {_one_line(exc.orig)}") from exc

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _row_to_record(row: Sequence[Any]) -> ObjectRecord:
        kind, name, version, spec, spec_hash, created_at, updated_at, updated_by = row
        return ObjectRecord(
            kind=kind,
            name=name,
            version=int(version),
            spec=json.loads(spec),
            spec_hash=spec_hash,
            created_at=stamp(created_at),  # type: ignore[arg-type]
            updated_at=stamp(updated_at),  # type: ignore[arg-type]
            updated_by=updated_by,
        )

    def _records(
        self, where: str, params: Sequence[Any], conn: Connection | None
    ) -> builtins.list[ObjectRecord]:
        """The current records of the project matching ``where``, by kind and name."""
        rows = self._rows(
            f"SELECT {_RECORD} FROM objects WHERE project = ?{where} ORDER BY kind, name",
            (self.project, *params),
            conn,
        )
        return [self._row_to_record(r) for r in rows]

    def find_record(
        self, kind: str, name: str, conn: Connection | None = None
    ) -> ObjectRecord | None:
        """The current record of one object, or ``None``."""
        if not _storable(name):
            return None
        found = self._records(" AND kind = ? AND name = ?", (kind, name), conn)
        return found[0] if found else None

    def get_record(self, kind: str, name: str) -> ObjectRecord:
        """The current record of one object, or raise :class:`NotFoundError`."""
        record = self.find_record(kind, name)
        if record is None:
            names = self.names(kind)
            raise NotFoundError(
                f"{KIND_LABELS[kind]} '{name}' does not exist in project '{self.project}'"
                + did_you_mean(name, names)
            )
        return record

    def get(self, kind: str, name: str) -> Any:
        """The definition object ``name`` of ``kind``, or raise :class:`NotFoundError`."""
        return self.get_record(kind, name).obj

    def find(self, kind: str, name: str) -> Any | None:
        """The definition object, or ``None``."""
        record = self.find_record(kind, name)
        return record.obj if record else None

    def records(self, kind: str, conn: Connection | None = None) -> list[ObjectRecord]:
        """Every current record of one kind, by name."""
        return self._records(" AND kind = ?", (kind,), conn)

    def snapshot(self, conn: Connection | None = None) -> dict[str, builtins.list[ObjectRecord]]:
        """Every current record of every kind, by kind, each kind by name.

        Read by one statement, so the records are one consistent state on any database, even
        while other processes write (per-kind reads could see one write's view without the
        entity it came with).
        """
        out: dict[str, builtins.list[ObjectRecord]] = {}
        for record in self._records("", (), conn):
            out.setdefault(record.kind, []).append(record)
        return out

    def list(self, kind: str) -> list[Any]:
        """Every object of one kind, by name."""
        return [r.obj for r in self.records(kind)]

    def names(self, kind: str) -> builtins.list[str]:
        """The names of every object of one kind."""
        rows = self._rows(
            "SELECT name FROM objects WHERE project = ? AND kind = ? ORDER BY name",
            (self.project, kind),
        )
        return [r[0] for r in rows]

    def kinds_of(self, name: str) -> builtins.list[str]:
        """The kinds that have a current object called ``name``."""
        import sqlalchemy as sa

        from quiver.registry.tables import objects

        if not _storable(name):
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(objects.c.kind).where(
                    objects.c.project == self.project, objects.c.name == name
                )
            ).all()
        return [r.kind for r in rows]

    def history_kinds_of(self, name: str) -> builtins.list[str]:
        """The kinds with any history (deleted objects included) for ``name``."""
        import sqlalchemy as sa

        from quiver.registry.tables import object_versions

        if not _storable(name):
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(object_versions.c.kind)
                .where(object_versions.c.project == self.project, object_versions.c.name == name)
                .distinct()
            ).all()
        return sorted(r.kind for r in rows)

    def history(self, kind: str, name: str) -> builtins.list[VersionRecord]:
        """Every version of one object, oldest first (deletions included)."""
        import sqlalchemy as sa

        from quiver.registry.tables import object_versions

        rows: Any = []
        if _storable(name):
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(object_versions)
                    .where(
                        object_versions.c.project == self.project,
                        object_versions.c.kind == kind,
                        object_versions.c.name == name,
                    )
                    .order_by(object_versions.c.version)
                ).all()
        if not rows:
            raise NotFoundError(
                f"{KIND_LABELS[kind]} '{name}' has no history in project '{self.project}'"
            )
        return [
            VersionRecord(
                kind=r.kind,
                name=r.name,
                version=r.version,
                operation=r.operation,
                spec=json.loads(r.spec),
                spec_hash=r.spec_hash,
                created_at=_utc(r.created_at),  # type: ignore[arg-type]
                author=r.author,
                message=r.message,
            )
            for r in rows
        ]

    def count(self, kind: str) -> int:
        """How many objects of one kind exist."""
        import sqlalchemy as sa

        from quiver.registry.tables import objects

        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(objects)
                    .where(objects.c.project == self.project, objects.c.kind == kind)
                ).scalar_one()
            )

    def referrers(self, kind: str, name: str, conn: Connection) -> builtins.list[tuple[str, str]]:
        """Objects in the database that reference ``kind``/``name``, as (kind, name)."""
        from quiver.registry.plan import references_of

        found = []
        for other in (
            "feature_view",
            "on_demand_feature_view",
            "feature_service",
            "data_source",
            "entity",
        ):
            for record in self.records(other, conn):
                if (kind, name) in references_of(record.kind, record.spec):
                    found.append((record.kind, record.name))
        return found

    # -- writes -------------------------------------------------------------------------------

    def write_object(
        self,
        conn: Connection,
        kind: str,
        name: str,
        spec: dict[str, Any] | None,
        *,
        base_version: int | None,
        operation: str,
        author: str | None,
        spec_hash: str | None = None,
        message: str | None = None,
    ) -> int:
        """Create, update or delete one object inside :meth:`transaction`; returns its version.

        ``base_version`` is the version the caller planned against (``None`` for a create);
        if the object changed since, :class:`ConcurrentChangeError` is raised.
        """
        import sqlalchemy as sa

        from quiver.registry.tables import object_versions, objects

        current = self.find_record(kind, name, conn)
        label = f"{KIND_LABELS[kind]} '{name}'"
        if (current.version if current else None) != base_version:
            raise ConcurrentChangeError(
                f"{label} changed in the registry since the plan was made "
                f"(planned against version {base_version}, now "
                f"{current.version if current else 'deleted'}); run plan again"
            )
        now = datetime.now(UTC)
        last = conn.execute(
            sa.select(sa.func.max(object_versions.c.version)).where(
                object_versions.c.project == self.project,
                object_versions.c.kind == kind,
                object_versions.c.name == name,
            )
        ).scalar()
        version = int(last or 0) + 1
        if spec is None:
            assert current is not None
            stored_spec, stored_hash = current.spec, current.spec_hash
        else:
            stored_spec, stored_hash = spec, spec_hash or ""
        text = json.dumps(stored_spec, sort_keys=True)
        conn.execute(
            object_versions.insert().values(
                project=self.project,
                kind=kind,
                name=name,
                version=version,
                operation=operation,
                spec=text,
                spec_hash=stored_hash,
                created_at=now,
                author=author,
                message=message,
            )
        )
        key = (
            (objects.c.project == self.project)
            & (objects.c.kind == kind)
            & (objects.c.name == name)
        )
        if spec is None:
            conn.execute(objects.delete().where(key))
        elif current is None:
            conn.execute(
                objects.insert().values(
                    project=self.project,
                    kind=kind,
                    name=name,
                    version=version,
                    spec=text,
                    spec_hash=stored_hash,
                    created_at=now,
                    updated_at=now,
                    updated_by=author,
                )
            )
        else:
            result = conn.execute(
                objects.update()
                .where(key & (objects.c.version == current.version))
                .values(
                    version=version,
                    spec=text,
                    spec_hash=stored_hash,
                    updated_at=now,
                    updated_by=author,
                )
            )
            if result.rowcount != 1:  # pragma: no cover - guarded by the project lock
                raise ConcurrentChangeError(f"{label} changed concurrently; run plan again")
        return version
