"""Opening a registry at the newest migration imports neither alembic nor (for reads of a SQLite
file) SQLAlchemy.

The registry reads the newest revision from the migration file names (``NNNN_name.py``); these
tests pin that convention against alembic's own view, and check the fast path in a fresh process
(where alembic's import is a large part of the first call's cost).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

from quiver.registry import Registry
from quiver.registry._registry import _MIGRATIONS, head_revision


def test_file_names_give_alembic_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_every_migration_file_holds_the_revision_its_name_says() -> None:
    for path in sorted((_MIGRATIONS / "versions").glob("*.py")):
        found = re.search(r'^revision = "([^"]+)"', path.read_text(), re.MULTILINE)
        assert found is not None, path.name
        assert path.name.startswith(found.group(1) + "_"), path.name


def test_a_registry_behind_head_is_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Registry(url, "p").close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # one migration back, as if made by an older Quiver
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() != (
            head_revision()
        )
    registry = Registry(url, "p")
    registry.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == (
            head_revision()
        )
    engine.dispose()


def test_opening_a_registry_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Registry(url, "p").close()  # created and migrated here
    code = textwrap.dedent(
        f"""
        import sys
        from quiver.registry import Registry
        Registry({url!r}, "p").close()
        print(sorted(m for m in sys.modules if m.split(".")[0] == "alembic"))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_fresh_process_reads_a_sqlite_registry_without_sqlalchemy(tmp_path: Path) -> None:
    """The reads of a training script (the objects, the revision) run on a ``sqlite3``
    connection: SQLAlchemy (about 150 ms to import) loads only for writes."""
    from datetime import UTC, datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
    from quiver.config import load_config

    (tmp_path / "data").mkdir()
    at = pa.array([datetime(2024, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    rows = pa.table({"customer_id": [1], "event_timestamp": at, "orders": [3]})
    pq.write_table(rows, tmp_path / "data" / "stats.parquet")
    source = FileSource(name="stats_source", path="data/stats.parquet")
    view = FeatureView(
        name="stats",
        entities=["customer"],
        features=[Field(name="orders", dtype="int64")],
        source=source,
    )
    with FeatureStore(config=load_config(tmp_path)) as store:
        store.apply([Entity(name="customer", join_keys=["customer_id"]), source, view])
    code = textwrap.dedent(
        f"""
        import sys
        from datetime import UTC, datetime
        import pyarrow as pa
        from quiver import FeatureStore
        store = FeatureStore(repo_path={str(tmp_path)!r})
        at = pa.array([datetime(2024, 1, 2, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
        entity = pa.table({{"customer_id": [1], "event_timestamp": at}})
        out = store.get_historical_features(entity, ["stats:orders"]).to_df()
        views = store.list_feature_views()
        print(list(out["orders"]), store.registry.revision() > 0, views[0].name)
        print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"sqlalchemy", "alembic"}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[3] True stats", "[]"]
