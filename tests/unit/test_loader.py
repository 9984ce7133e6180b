"""Loading definitions: Python modules, YAML and JSON files, directories; three ways, one result."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from quiver.definitions import Entity, FeatureView, FileSource
from quiver.errors import DefinitionError, InvalidError, NotFoundError
from quiver.loader import definitions_from_mapping, load_definitions
from quiver.registry import DefinitionSet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXAMPLES = ["example_repo.py", "example_repo.yaml", "example_repo.json"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- three ways to define, one result ------------------------------------------------------------


def test_python_yaml_and_json_definitions_are_equal() -> None:
    loaded = [load_definitions(FIXTURES / name) for name in EXAMPLES]
    python, yaml_set, json_set = loaded
    assert len(python) == 9
    assert python == yaml_set == json_set
    for kind in ("entity", "data_source", "feature_view", "feature_service"):
        for name, obj in python.by_kind(kind).items():
            for other in (yaml_set, json_set):
                twin = other.by_kind(kind)[name]
                assert twin == obj
                assert twin.to_spec() == obj.to_spec()
                assert twin.spec_hash() == obj.spec_hash()


def test_the_example_repo_content() -> None:
    defs = load_definitions(FIXTURES / "example_repo.py")
    assert sorted(defs.entities) == ["customer", "merchant"]
    assert sorted(defs.data_sources) == ["merchants_csv", "orders_source", "payments"]
    view = defs.feature_views["customer_orders"]
    assert view.source == "orders_source"  # inline sources are registered by name
    assert [f.dtype for f in view.features] == ["int64", "float64", "timestamp", "list<string>"]
    assert defs.data_sources["merchants_csv"].format == "csv"
    assert defs.feature_services["checkout_v1"].features == [
        "customer_orders:*",
        "merchant_profile:rating",
        "customer_merchant_payments:amount_sum",
    ]


def test_a_rest_json_view_spec_builds_the_same_view_as_python() -> None:
    python = load_definitions(FIXTURES / "example_repo.py")
    data = json.loads((FIXTURES / "example_repo.json").read_text())
    spec = next(v for v in data["feature_views"] if v["name"] == "merchant_profile")
    assert FeatureView.from_spec(spec) == python.feature_views["merchant_profile"]


def test_specs_dumped_to_yaml_load_back_equal(tmp_path: Path) -> None:
    python = load_definitions(FIXTURES / "example_repo.py")
    sections = {
        "entities": [o.to_spec() for o in python.entities.values()],
        "data_sources": [o.to_spec() for o in python.data_sources.values()],
        "feature_views": [o.to_spec() for o in python.feature_views.values()],
        "feature_services": [o.to_spec() for o in python.feature_services.values()],
    }
    path = tmp_path / "dumped.yaml"
    path.write_text(yaml.safe_dump(sections))
    assert load_definitions(path) == python


def test_a_directory_of_all_three_loads_once(tmp_path: Path) -> None:
    for name in EXAMPLES:
        (tmp_path / name).write_text((FIXTURES / name).read_text())
    assert load_definitions(tmp_path) == load_definitions(FIXTURES / "example_repo.py")


# --- directories and files -----------------------------------------------------------------------


def test_directory_scan_skips_config_private_and_foreign_files(tmp_path: Path) -> None:
    _write(tmp_path / "quiver.yaml", "project: p\n")
    _write(tmp_path / "_helpers.py", "raise RuntimeError('never imported')\n")
    _write(tmp_path / ".hidden.yaml", "entities: [{name: hidden}]\n")
    _write(tmp_path / "training.yaml", "model: churn\nfeatures: [a]\n")
    _write(tmp_path / "notes.txt", "not definitions\n")
    _write(tmp_path / "sub" / "deeper.yaml", "entities: [{name: deeper}]\n")
    _write(tmp_path / "entities.yaml", "entities: [{name: customer}]\n")
    defs = load_definitions(tmp_path)
    assert list(defs.entities) == ["customer"]


def test_relative_paths_resolve_against_base(tmp_path: Path) -> None:
    _write(tmp_path / "defs" / "e.yaml", "entities: [{name: customer}]\n")
    defs = load_definitions(["defs/e.yaml"], base=tmp_path)
    assert list(defs.entities) == ["customer"]


def test_a_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_definitions(tmp_path / "nope.py")


def test_an_explicit_unsupported_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "defs.toml", "x = 1\n")
    with pytest.raises(DefinitionError, match="unsupported definitions file"):
        load_definitions(path)


def test_an_explicit_yaml_file_without_sections_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "training.yaml", "model: churn\n")
    with pytest.raises(DefinitionError, match="unknown section 'model'"):
        load_definitions(path)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.yaml", "entities:\n  - name: a\n   - name: b\n", r"malformed YAML at line 3"),
        ("bad.yaml", "entities: [unclosed\n", r"malformed YAML at line 2"),
        ("bad.json", '{"entities": [}', r"malformed JSON at line 1, column 15"),
        ("bad.yaml", "- just\n- a list\n", "expected a mapping"),
        ("bad.yaml", "entites: []\n", "unknown section 'entites'"),
        ("bad.yaml", "entities: {name: a}\n", "'entities' must be a list"),
        ("bad.yaml", "entities: [customer]\n", r"entities\[0\] must be a mapping"),
    ],
)
def test_malformed_files_are_definition_errors_naming_the_file(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(DefinitionError, match=match) as info:
        load_definitions(path)
    assert str(path) in info.value.message


def test_a_file_that_is_not_utf8_is_a_definition_error(tmp_path: Path) -> None:
    # Regression: a UnicodeDecodeError escaped (the CLI printed it as an internal error).
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00entities")
    with pytest.raises(DefinitionError, match="cannot be read as UTF-8"):
        load_definitions(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("entities: [{name: 'a b'}]\n", "not a plain identifier"),
        (
            "feature_views: [{name: v, entities: [e], source: s, "
            "features: [{name: a, dtype: money}]}]\n",
            "unknown dtype 'money'",
        ),
        ("entities: [{name: e, join_key: [a]}]\n", "join_key: Extra inputs are not permitted"),
    ],
)
def test_invalid_definitions_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path / "defs.yaml", text)
    with pytest.raises(InvalidError, match=match) as info:
        load_definitions(path)
    assert info.value.message.startswith(f"'{path}'")


def test_two_different_definitions_with_one_name_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "entities: [{name: customer, join_keys: [customer_id]}]\n")
    _write(tmp_path / "b.yaml", "entities: [{name: customer, join_keys: [id]}]\n")
    with pytest.raises(InvalidError, match="duplicate entity name 'customer'"):
        load_definitions(tmp_path)


def test_duplicates_within_one_file_are_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.yaml",
        """
        feature_views:
          - {name: v, entities: [e], source: s, features: [{name: a, dtype: int64}]}
          - {name: v, entities: [e], source: s, features: [{name: b, dtype: int64}]}
        """,
    )
    with pytest.raises(InvalidError, match="duplicate feature view name 'v'"):
        load_definitions(path)


def test_an_inline_source_clashing_with_a_declared_one_is_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.yaml",
        """
        data_sources: [{name: s, path: a.parquet}]
        feature_views:
          - name: v
            entities: [e]
            source: {name: s, path: b.parquet}
            features: [{name: a, dtype: int64}]
        """,
    )
    with pytest.raises(InvalidError, match="duplicate data source name 's'"):
        load_definitions(path)


def test_names_are_unique_per_kind_only(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "a.yaml",
        """
        entities: [{name: customer}]
        data_sources: [{name: customer, path: c.parquet}]
        """,
    )
    defs = load_definitions(path)
    assert "customer" in defs.entities and "customer" in defs.data_sources


def test_definitions_from_mapping() -> None:
    defs = definitions_from_mapping({"entities": [{"name": "customer"}], "feature_views": None})
    assert defs.entities == {"customer": Entity(name="customer")}
    with pytest.raises(DefinitionError, match="expected a mapping"):
        definitions_from_mapping(["entities"])


# --- Python modules ------------------------------------------------------------------------------


def test_a_python_module_contributes_every_module_level_definition(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "features.py",
        """
        from quiver import Entity, FeatureView, Field, FileSource

        customer = Entity(name="customer", join_keys=["customer_id"])
        views = [
            FeatureView(
                name=f"v{i}",
                entities=[customer],
                schema=[Field(name="a", dtype="int64")],
                source=FileSource(name="src", path="data/x.parquet"),
            )
            for i in range(2)
        ]
        alias = customer
        not_a_definition = {"name": "x"}
        """,
    )
    defs = load_definitions(path)
    assert list(defs.entities) == ["customer"]
    assert sorted(defs.feature_views) == ["v0", "v1"]
    assert defs.data_sources == {"src": FileSource(name="src", path="data/x.parquet")}


def test_a_python_module_can_import_a_sibling_module(tmp_path: Path) -> None:
    _write(tmp_path / "_common.py", "from quiver import Entity\ncustomer = Entity(name='c')\n")
    path = _write(tmp_path / "features.py", "from _common import customer\n")
    before = list(sys.path)
    try:
        assert list(load_definitions(path).entities) == ["c"]
        assert sys.path == before
    finally:
        sys.modules.pop("_common", None)


def test_a_module_raising_on_import_reports_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "features.py",
        """
        from quiver import Entity

        customer = Entity(name="customer")
        settings = {"a": 1}
        threshold = settings["b"]
        """,
    )
    with pytest.raises(DefinitionError) as info:
        load_definitions(path)
    message = info.value.message
    assert f"'{path}', line 6" in message
    assert "KeyError" in message
    assert isinstance(info.value.__cause__, KeyError)


def test_an_error_raised_in_a_helper_reports_the_line_in_the_module(tmp_path: Path) -> None:
    _write(tmp_path / "_helper.py", "def boom():\n    raise ValueError('nope')\n")
    path = _write(tmp_path / "features.py", "import _helper\n\n\n_helper.boom()\n")
    try:
        with pytest.raises(DefinitionError, match=r"line 4: importing the definitions raised"):
            load_definitions(path)
    finally:
        sys.modules.pop("_helper", None)


def test_a_syntax_error_reports_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "features.py", "x = 1\ny = (\n")
    with pytest.raises(DefinitionError, match=r"features.py', line 2: syntax error"):
        load_definitions(path)


def test_an_invalid_definition_in_a_module_keeps_its_error_type(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "features.py",
        """
        from quiver import Entity, Field

        ok = Entity(name="customer")
        bad = Field(name="amount", dtype="money")
        """,
    )
    with pytest.raises(InvalidError) as info:
        load_definitions(path)
    assert not isinstance(info.value, DefinitionError)
    assert f"'{path}', line 5" in info.value.message
    assert "unknown dtype 'money'" in info.value.message


def test_a_quiver_error_with_its_own_constructor_is_reported(tmp_path: Path) -> None:
    # Regression: re-raising as type(exc)(message, details=...) failed with a TypeError for
    # errors whose constructor takes other arguments (MissingExtraError).
    path = _write(
        tmp_path / "features.py",
        """
        from quiver.errors import MissingExtraError

        raise MissingExtraError("pyiceberg", "iceberg", "the payments source")
        """,
    )
    with pytest.raises(DefinitionError) as info:
        load_definitions(path)
    assert f"'{path}', line 4" in info.value.message
    assert "pip install 'quiver[iceberg]'" in info.value.message


def test_a_module_calling_sys_exit_is_a_definition_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "features.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(DefinitionError, match="SystemExit"):
        load_definitions(path)


def test_loading_twice_gives_equal_sets_without_module_clashes(tmp_path: Path) -> None:
    path = _write(tmp_path / "features.py", "from quiver import Entity\ne = Entity(name='e')\n")
    modules_before = set(sys.modules)
    first, second = load_definitions(path), load_definitions(path)
    assert first == second
    assert isinstance(first, DefinitionSet)
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("_quiver_defs")}
