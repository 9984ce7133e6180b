"""Feast's definition API (quiver.compat.feast): what loads, what warns, what is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from quiver.errors import DefinitionError
from quiver.loader import load_definitions

HEADER = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, FeatureService, PushSource
from feast.types import Array, Float32, Int64, Map, String, Struct, UnixTimestamp
from feast.value_type import ValueType
"""


def _load(tmp_path: Path, body: str) -> dict[str, object]:
    (tmp_path / "defs.py").write_text(HEADER + body)
    return {obj.name: obj for obj in load_definitions(tmp_path / "defs.py").all()}


def test_feast_objects_become_quiver_objects(tmp_path: Path) -> None:
    objs = _load(
        tmp_path,
        """
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
src = FileSource(path="data/user stats.parquet", timestamp_field="ts")
push = PushSource(name="user_push", batch_source=src)
stats = FeatureView(
    name="stats", entities=[user], ttl=timedelta(days=2), source=push,
    schema=[Field(name="user_id", dtype=String), Field(name="n", dtype=Int64),
            Field(name="tags", dtype=Array(String)), Field(name="meta", dtype=Map),
            Field(name="p", dtype=Struct({"a": Float32})), Field(name="t", dtype=UnixTimestamp)],
)
svc = FeatureService(name="svc", features=[stats[["n"]]])
""",
    )
    assert objs["user"].value_type == "string"  # type: ignore[attr-defined]
    view = objs["stats"]
    assert [f.name for f in view.features] == ["n", "tags", "meta", "p", "t"]  # type: ignore[attr-defined]
    assert [f.dtype for f in view.features][1:4] == [  # type: ignore[attr-defined]
        "list<string>",
        "map<string, string>",
        "struct<a: float32>",
    ]
    assert view.source == "user_push"  # type: ignore[attr-defined]
    assert objs["user_stats"].path == "data/user stats.parquet"  # type: ignore[attr-defined]
    assert objs["svc"].features == ["stats:n"]  # type: ignore[attr-defined]
    assert "feast" not in sys.modules  # Feast was never imported, and nothing is left behind


def test_what_quiver_cannot_represent_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="BatchFeatureView"):
        _load(tmp_path, "from feast import BatchFeatureView\n")
    with pytest.raises(DefinitionError, match="Bytes"):
        _load(
            tmp_path,
            "from feast.types import Bytes\n"
            "e = Entity(name='e')\n"
            "v = FeatureView(name='v', entities=[e], source=FileSource(path='x.parquet'),"
            " schema=[Field(name='b', dtype=Bytes)])\n",
        )
    with pytest.raises(DefinitionError, match="aggregations"):
        _load(
            tmp_path,
            "e = Entity(name='e')\n"
            "v = FeatureView(name='v', entities=[e], source=FileSource(path='x.parquet'),"
            " schema=[Field(name='b', dtype=Int64)], aggregations=[])\n",
        )


def test_ignored_options_warn_by_name(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="enable_validation"):
        _load(
            tmp_path,
            "e = Entity(name='e')\n"
            "v = FeatureView(name='v', entities=[e], source=FileSource(path='x.parquet'),"
            " schema=[Field(name='b', dtype=Int64)], enable_validation=True)\n",
        )


def test_feature_store_yaml_is_read_as_settings(tmp_path: Path) -> None:
    from quiver.config import find_repo, load_config

    (tmp_path / "feature_store.yaml").write_text(
        "project: drivers\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
        "entity_key_serialization_version: 3\n"
    )
    with pytest.warns(UserWarning) as caught:
        config = load_config(tmp_path)
    assert config.project == "drivers"
    assert config.registry.url.endswith("quiver_registry.db")  # never Feast's registry file
    messages = " ".join(str(w.message) for w in caught)
    for option in ("provider", "entity_key_serialization_version", "registry"):
        assert f"'{option}' is ignored" in messages
    assert find_repo(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path) == (
        tmp_path.resolve()
    )
