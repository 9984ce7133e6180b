"""The ``quiver`` command as a user runs it: a real subprocess on a real repo."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _cli import TIMEOUT, assert_one_line_error, cli_env, quiver

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def quiver_json(*args: str, cwd: Path) -> Any:
    return json.loads(quiver(*args, "--json", cwd=cwd).stdout)


def registry_rows(repo: Path) -> Any:
    """Every row of the registry's tables, read straight from the SQLite file."""
    db = repo / "data" / "registry.db"
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in ("projects", "objects", "object_versions")
        }
    finally:
        conn.close()


@pytest.fixture(scope="module")
def applied_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo repo, initialised and applied once per module (copy it before changing it)."""
    repo = tmp_path_factory.mktemp("demo") / "churn"
    quiver("init", str(repo), "--demo", "--customers", "40", cwd=repo.parent)
    quiver("apply", cwd=repo)
    return repo


@pytest.fixture
def demo(applied_demo: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "churn"
    shutil.copytree(applied_demo, repo)
    return repo


# --- the new user's path -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_new_user_gets_the_demo_applied_and_listed(tmp_path: Path) -> None:
    init = quiver("init", "shop", "--demo", "--customers", "30", cwd=tmp_path)
    repo = tmp_path / "shop"
    assert "Created Quiver repo 'shop'" in init.stdout
    assert {p.name for p in repo.iterdir()} >= {"quiver.yaml", "features.py", "data"}

    plan = quiver("plan", cwd=repo)
    assert "12 to create, 0 to update, 0 to delete, 0 unchanged" in plan.stdout
    assert registry_rows(repo) is None or registry_rows(repo)["objects"] == []

    applied = quiver("apply", cwd=repo)
    assert "Applied to project 'shop': 12 created, 0 updated, 0 deleted." in applied.stdout

    entities = quiver("entities", "list", cwd=repo).stdout
    assert "entities in project 'shop' (1)" in entities
    assert "customer" in entities and "customer_id" in entities
    views = quiver("feature-views", "list", cwd=repo).stdout
    for name in (
        "customer_behavior",
        "customer_demographics",
        "customer_contract",
        "customer_order_activity",
    ):
        assert name in views

    assert [v["name"] for v in quiver_json("feature-views", "list", cwd=repo)] == [
        "customer_behavior",
        "customer_contract",
        "customer_demographics",
        "customer_order_activity",
    ]
    (service,) = quiver_json("feature-services", "list", cwd=repo)
    assert service["features"] == [
        "customer_behavior:*",
        "customer_demographics:*",
        "customer_contract:*",
        "customer_order_activity:*",
        "customer_derived_features:*",
    ]
    assert "No changes" in quiver("plan", cwd=repo).stdout


@pytest.mark.slow
def test_editing_a_dtype_is_a_breaking_change(demo: Path) -> None:
    features = demo / "features.py"
    text = features.read_text()
    edited = text.replace('Field(name="age", dtype="int64"', 'Field(name="age", dtype="float64"')
    assert edited != text
    features.write_text(edited)
    before = registry_rows(demo)

    plan = quiver("plan", cwd=demo)
    assert "BREAKING" in plan.stdout
    assert "features.age.dtype: int64 -> float64" in plan.stdout
    assert "1 breaking" in plan.stdout
    data = quiver_json("plan", cwd=demo)
    assert data["breaking"] == 1
    (change,) = [c for c in data["changes"] if c["action"] != "unchanged"]
    assert change["name"] == "customer_demographics" and change["breaking"] is True
    assert registry_rows(demo) == before

    refused = quiver("apply", cwd=demo, ok=False)
    assert_one_line_error(refused, r"breaking changes.*customer_demographics.*--allow-breaking")
    assert registry_rows(demo) == before

    quiver("apply", "--allow-breaking", cwd=demo)
    history = quiver_json("history", "customer_demographics", cwd=demo)
    assert [(v["version"], v["operation"], v["author"]) for v in history] == [
        (1, "create", "tester"),
        (2, "update", "tester"),
    ]

    restore = quiver("restore", "customer_demographics", "--version", "1", cwd=demo, ok=False)
    assert_one_line_error(restore, r"breaking changes")
    done = quiver(
        "restore", "customer_demographics", "--version", "1", "--allow-breaking", cwd=demo
    )
    assert "now version 3" in done.stdout
    info = quiver_json("describe", "customer_demographics", cwd=demo)
    assert info["version"] == 3
    assert info["spec"] == history[0]["spec"]
    table = quiver("history", "customer_demographics", cwd=demo).stdout
    assert table.count("tester") == 3 and table.count("update") == 2


@pytest.mark.slow
def test_file_applies_are_additive_and_the_repo_apply_prunes(demo: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("entities: [{name: store, join_keys: [store_id]}]\n")
    applied = quiver_json("apply", "-f", str(extra), cwd=demo)
    assert applied["applied"] is True
    assert applied["summary"] == {"create": 1, "update": 0, "delete": 0, "unchanged": 12}
    assert [e["name"] for e in quiver_json("entities", "list", cwd=demo)] == ["customer", "store"]

    before = registry_rows(demo)
    pruning = quiver_json("plan", "-f", str(extra), "--prune", cwd=demo)
    assert pruning["summary"] == {"create": 0, "update": 0, "delete": 12, "unchanged": 1}
    assert registry_rows(demo) == before  # plan writes nothing

    repo_plan = quiver_json("plan", cwd=demo)
    assert [
        (c["name"], c["action"]) for c in repo_plan["changes"] if c["action"] != "unchanged"
    ] == [("store", "delete")]
    quiver("apply", cwd=demo)
    assert [e["name"] for e in quiver_json("entities", "list", cwd=demo)] == ["customer"]
    assert [v["operation"] for v in quiver_json("history", "store", cwd=demo)] == [
        "create",
        "delete",
    ]


def test_the_example_definitions_apply_from_every_format(demo: Path) -> None:
    # The example repo's 9 objects land next to the demo's (its 'customer' entity replaces the
    # demo's); the YAML and JSON versions then change nothing.
    quiver("apply", "-f", str(FIXTURES / "example_repo.py"), cwd=demo)
    for name in ("example_repo.yaml", "example_repo.json"):
        plan = quiver_json("plan", "-f", str(FIXTURES / name), cwd=demo)
        assert plan["summary"] == {"create": 0, "update": 0, "delete": 0, "unchanged": 20}


def test_describe_needs_a_kind_only_when_ambiguous(demo: Path, tmp_path: Path) -> None:
    info = quiver_json("describe", "customer", cwd=demo)
    assert info["kind"] == "entity" and info["spec"]["join_keys"] == ["customer_id"]
    # Regression: rich parsed '[...]' in user text as markup; '[/]' crashed with a traceback.
    (tmp_path / "extra.yaml").write_text(
        "data_sources: [{name: customer, path: data/c.parquet, description: '[/] [bold]x'}]\n"
    )
    # Regression: -f was resolved against --repo instead of the working directory.
    quiver("apply", "-f", "extra.yaml", "--repo", str(demo), cwd=tmp_path)
    assert_one_line_error(quiver("describe", "customer", cwd=demo, ok=False), r"--kind")
    by_kind = quiver("describe", "customer", "--kind", "data_source", cwd=demo).stdout
    assert "path: data/c.parquet" in by_kind
    assert "'[/] [bold]x'" in by_kind
    assert "[/] [bold]x" in quiver("data-sources", "list", cwd=demo).stdout
    history = quiver_json("history", "customer", "--kind", "entity", cwd=demo)
    assert len(history) == 1


def test_init_refuses_to_overwrite_a_repo(demo: Path) -> None:
    assert_one_line_error(
        quiver("init", str(demo), cwd=demo.parent, ok=False), r"already holds a Quiver repo"
    )


def test_init_derives_a_valid_project_name_from_any_folder(tmp_path: Path) -> None:
    # Regression: a non-ASCII folder name became a project name the config then rejected.
    repo = tmp_path / "Café Ünïcode-repo"
    quiver("init", str(repo), cwd=tmp_path)
    assert "project: Caf_" in (repo / "quiver.yaml").read_text()
    assert "No entities" in quiver("entities", "list", cwd=repo).stdout


def test_init_rejects_a_bad_project_name_and_writes_nothing(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    proc = quiver("init", str(repo), "--project", "my project", cwd=tmp_path, ok=False)
    assert_one_line_error(proc, r"project name 'my project' is not a plain identifier")
    assert not repo.exists()


def test_no_arguments_prints_the_help_without_an_error(tmp_path: Path) -> None:
    # Regression: Typer's vendored Click exceptions slipped past main() and were printed as
    # "error: NoArgsIsHelpError"; usage errors lost the option's name.
    proc = quiver(cwd=tmp_path, ok=False)
    assert "Usage: quiver" in proc.stdout  # on stdout, like --help
    assert "error" not in proc.stderr.lower()
    assert proc.returncode in (0, 2)


def test_python_dash_m_quiver_runs_the_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "quiver", "--help"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "feature-views" in proc.stdout


# --- bad input: one line on stderr, a non-zero exit, the registry unchanged ---------------------


def _write(name: str, text: str) -> Callable[[Path], list[str]]:
    def setup(repo: Path) -> list[str]:
        (repo / name).write_text(text)
        return ["apply", "-f", name] if name != "quiver.yaml" else ["entities", "list"]

    return setup


def _edit_features(old: str, new: str, command: str = "apply") -> Callable[[Path], list[str]]:
    def setup(repo: Path) -> list[str]:
        path = repo / "features.py"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))
        return [command]

    return setup


def _command(*args: str) -> Callable[[Path], list[str]]:
    return lambda repo: list(args)


_VIEW = "{name: v, entities: [customer], source: churn_labels, features: [{name: a, dtype: int64}]}"

BAD_INPUT: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "malformed yaml": (
        _write("bad.yaml", "entities:\n  - name: a\n   - name: b\n"),
        r"bad\.yaml': malformed YAML at line 3",
    ),
    "malformed json": (_write("bad.json", '{"entities": [}'), r"malformed JSON at line 1"),
    "malformed quiver.yaml": (
        _write("quiver.yaml", "project: [oops\n"),
        r"quiver\.yaml: malformed YAML",
    ),
    "unknown config key": (
        _write("quiver.yaml", "project: churn\nregisty: {url: 'sqlite:///x.db'}\n"),
        r"unknown key 'registy'; did you mean 'registry'\?",
    ),
    "unknown nested config key": (
        _write("quiver.yaml", "project: churn\nonline_store: {type: sqlite, pth: x}\n"),
        r"unknown key 'online_store\.pth'; did you mean 'path'\?",
    ),
    "unknown dtype in python": (
        _edit_features('name="amount", dtype="float64"', 'name="amount", dtype="money"'),
        r"features\.py', line \d+: .*unknown dtype 'money'",
    ),
    "unknown dtype with brackets": (
        _write("bad.yaml", "feature_views: [" + _VIEW.replace("int64", '"list[money]"') + "]\n"),
        r"unknown dtype 'list\[money\]'",
    ),
    "missing entity": (
        _write("bad.yaml", f"feature_views: [{_VIEW.replace('[customer]', '[shopper]')}]\n"),
        r"references entity 'shopper', which does not exist",
    ),
    "missing source": (
        _write("bad.yaml", f"feature_views: [{_VIEW.replace('churn_labels', 'nowhere')}]\n"),
        r"references data source 'nowhere', which does not exist",
    ),
    "missing feature view": (
        _write("bad.yaml", "feature_services: [{name: s, features: ['customer_behaviour:*']}]\n"),
        r"feature view 'customer_behaviour', which does not exist; did you mean "
        r"'customer_behavior'",
    ),
    "missing feature": (
        _write(
            "bad.yaml", "feature_services: [{name: s, features: ['customer_behavior:ordrs']}]\n"
        ),
        r"has no feature 'ordrs'; did you mean 'orders'",
    ),
    "duplicate names": (
        _write("bad.yaml", "entities: [{name: store}, {name: store, join_keys: [id]}]\n"),
        r"duplicate entity name 'store'",
    ),
    "join key as feature": (
        _write("bad.yaml", f"feature_views: [{_VIEW.replace('name: a,', 'name: customer_id,')}]\n"),
        r"'customer_id' is a join key of its entities and cannot also be a feature",
    ),
    "quote in a name": (
        _write("bad.yaml", 'entities: [{name: "x\'; DROP TABLE objects; --"}]\n'),
        r"is not a plain identifier",
    ),
    "space in a name": (
        _write("bad.yaml", "entities: [{name: my store}]\n"),
        r"'my store' is not a plain identifier",
    ),
    "module raising on import": (
        _edit_features("# --- entity", "raise RuntimeError('config server down')\n# --- entity"),
        r"features\.py', line \d+: importing the definitions raised RuntimeError: config server",
    ),
    "unknown kind": (_command("describe", "customer", "--kind", "widget"), r"unknown kind"),
    "unknown object": (_command("describe", "custmer"), r"no object called 'custmer'"),
    "missing version": (
        _command("restore", "customer", "--version", "9"),
        r"entity 'customer' has no version 9; versions are 1",
    ),
    "bad option value": (
        _command("restore", "customer", "--version", "abc"),
        r"Invalid value for '--version'.*valid integer",
    ),
    "unknown command": (_command("aply"), r"No such command 'aply'"),
    "missing repo": (_command("entities", "list", "--repo", "no_such_dir"), r"does not exist"),
    "missing file": (_command("plan", "-f", "nope.yaml"), r"'.*nope\.yaml' does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_changes_nothing(demo: Path, case: str) -> None:
    setup, pattern = BAD_INPUT[case]
    before = registry_rows(demo)
    args = setup(demo)
    proc = quiver(*args, cwd=demo, ok=False)
    assert_one_line_error(proc, pattern)
    assert registry_rows(demo) == before


def test_deleting_a_referenced_entity_is_refused_naming_the_referrer(demo: Path) -> None:
    path = demo / "features.py"
    text = path.read_text()
    # Keep the views (they take the entity by name) but drop the entity itself.
    text = text.replace("entities=[customer]", 'entities=["customer"]')
    text = text.replace("customer = Entity(", "_not_an_entity = dict(")
    path.write_text(text)
    before = registry_rows(demo)
    proc = quiver("apply", cwd=demo, ok=False)
    assert_one_line_error(
        proc, r"cannot delete entity 'customer': feature view 'customer_\w+' still references it"
    )
    assert registry_rows(demo) == before
