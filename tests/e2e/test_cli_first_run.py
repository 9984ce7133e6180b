"""What a new user meets first: --version, running outside a repo, --help, colours, narrow
terminals."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

import quiver as quiver_package
from _cli import TIMEOUT, cli_env, quiver, quiver_command
from quiver.cli import app
from quiver.store import FeatureStore

ROOT = Path(__file__).resolve().parents[2]
ESCAPE = "\x1b["
# Variables that make Rich or Typer style output that is not a terminal.
FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "PY_COLORS", "GITHUB_ACTIONS", "CLICOLOR_FORCE")


def _unforced(**changes: str | None) -> dict[str, str]:
    """:func:`cli_env` with nothing forcing or suppressing colour, plus ``changes``."""
    return cli_env(**{"NO_COLOR": None, **dict.fromkeys(FORCING), **changes})


def _on_a_terminal(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``command`` with stdout and stderr on a pseudo-terminal; what it wrote there."""
    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=secondary, stderr=secondary)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=TIMEOUT)
    finally:
        os.close(main)
    return b"".join(chunks).decode(errors="replace")


# --- --version -----------------------------------------------------------------------------------


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    proc = quiver("--version", cwd=tmp_path)
    assert proc.stdout == f"quiver {version('quiver')}\n"
    assert list(tmp_path.iterdir()) == []


def test_version_falls_back_to_the_module_version(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("importlib.metadata.version", not_installed)
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"quiver {quiver_package.__version__}\n"


# --- outside a repo ------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """An empty directory with no quiver.yaml in it or any parent."""
    if any((parent / "quiver.yaml").exists() for parent in tmp_path.parents):
        pytest.skip("a parent of the temporary directory holds a quiver.yaml")
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["entities", "list"],
        ["apply"],
        ["materialize-incremental", "now"],
        ["get-online", "-f", "v:f", "-e", "id=1"],
    ],
    ids=lambda args: args[0],
)
def test_a_command_outside_a_repo_fails_and_creates_nothing(outside: Path, args: list[str]) -> None:
    # Regression: it silently created ./data/registry.db under a project called 'default'.
    proc = quiver(*args, cwd=outside, ok=False)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: no quiver.yaml in {outside} or its parents; run 'quiver init' or pass --repo\n"
    )
    assert list(outside.iterdir()) == []


def test_init_help_and_version_work_outside_a_repo(outside: Path) -> None:
    assert "Usage: quiver" in quiver("--help", cwd=outside).stdout
    assert "Usage: quiver entities list" in quiver("entities", "list", "--help", cwd=outside).stdout
    assert quiver("--version", cwd=outside).stdout.startswith("quiver ")
    assert list(outside.iterdir()) == []
    quiver("init", "shop", cwd=outside)
    assert (outside / "shop" / "quiver.yaml").is_file()


def test_a_command_finds_the_repo_in_a_parent_directory(outside: Path) -> None:
    quiver("init", "shop", cwd=outside)
    deeper = outside / "shop" / "notebooks" / "eda"
    deeper.mkdir(parents=True)
    assert "No entities in project 'shop'" in quiver("entities", "list", cwd=deeper).stdout
    assert not (deeper / "data").exists()


def test_an_explicit_repo_needs_no_quiver_yaml(outside: Path) -> None:
    # --repo (or QUIVER_REPO) names the repo: its embedded defaults still apply, as in the SDK.
    proc = quiver("entities", "list", "--repo", str(outside), cwd=outside)
    assert "No entities in project 'default'" in proc.stdout
    env = cli_env(QUIVER_REPO=str(outside))
    assert "project 'default'" in quiver("entities", "list", cwd=outside.parent, env=env).stdout


# --- --help --------------------------------------------------------------------------------------


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[list[str]]:
    yield list(path)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _command_paths(sub, (*path, name))


def test_help_shows_flags_without_a_type() -> None:
    paths = list(_command_paths(typer.main.get_command(app)))
    assert len(paths) > 20  # every command and group, the root included
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        for metavar in ("<bool>", "BOOLEAN"):
            assert metavar not in result.output, (path, result.output)
    assert "--json" in runner.invoke(app, ["plan", "--help"]).output


# --- colours -------------------------------------------------------------------------------------


def test_piped_output_has_no_escape_codes(outside: Path) -> None:
    env = _unforced(TERM="xterm-256color")
    runs = [
        quiver("init", "shop", "--project", "shop", cwd=outside, env=env),
        quiver("plan", cwd=outside / "shop", env=env),
        quiver("entities", "list", "--repo", "missing", cwd=outside, env=env, ok=False),
        quiver("--help", cwd=outside, env=env),
        quiver("plan", "--help", cwd=outside, env=env),
    ]
    for proc in runs:
        assert ESCAPE not in proc.stdout + proc.stderr, proc.args


@pytest.mark.parametrize(("no_color", "styled"), [(None, True), ("1", False)])
def test_a_terminal_gets_styles_unless_no_color(
    outside: Path, no_color: str | None, styled: bool
) -> None:
    # Regression: with NO_COLOR, Rich dropped the colours but still wrote bold.
    command = [*quiver_command(), "entities", "list", "--repo", "missing"]
    env = _unforced(TERM="xterm-256color", NO_COLOR=no_color)
    written = _on_a_terminal(command, outside, env)
    assert "does not exist" in written
    assert (ESCAPE in written) is styled, repr(written)


DEMO_STEP = 'source <(sed -n "/^step() {/,/^}/p" scripts/demo.sh); step "quiver apply"'


@pytest.mark.parametrize(
    ("terminal", "no_color", "styled"),
    [(False, None, False), (True, None, True), (True, "1", False)],
    ids=["piped", "terminal", "terminal-no-color"],
)
def test_the_demo_script_styles_its_steps_only_on_a_terminal(
    terminal: bool, no_color: str | None, styled: bool
) -> None:
    # Regression: `bash scripts/demo.sh > demo.log` wrote raw escape codes into the log.
    env = _unforced(NO_COLOR=no_color)
    command = ["bash", "-c", DEMO_STEP]
    if terminal:
        written = _on_a_terminal(command, ROOT, env)
    else:
        written = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout
    assert "== quiver apply" in written
    assert (ESCAPE in written) is styled, repr(written)


# --- get-online in a narrow terminal -------------------------------------------------------------


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo repo, applied and materialized."""
    repo = tmp_path_factory.mktemp("first_run") / "churn"
    quiver("init", str(repo), "--demo", "--customers", "20", cwd=repo.parent)
    with FeatureStore(repo_path=repo) as store:
        store.apply(store.load_definitions(), prune=True)
        store.materialize_incremental("now")
    return repo


def test_get_online_in_a_narrow_terminal_cuts_no_name_or_value(materialized: Path) -> None:
    # Regression: 14 columns in 60 characters printed headers and values as `custom…`, `one_ye…`.
    args = ["get-online", "--service", "churn_prediction_v1", "-e", "customer_id=1"]
    payload = json.loads(quiver(*args, "-e", "customer_id=2", "--json", cwd=materialized).stdout)
    names = [k for k in payload if k not in ("customer_id", "statuses")]
    values = [str(v) for name in names for v in payload[name] if v is not None]
    assert len(names) > 10 and values

    # 72 columns: the demo's longest name (charges_per_month_of_tenure) and a float's full repr
    # need 66 with the borders
    narrow = cli_env(COLUMNS="72")
    text = quiver(*args, "-e", "customer_id=2", "-e", "customer_id=999999", cwd=materialized,
                  env=narrow).stdout  # fmt: skip
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 72
    for word in ["customer_id", "feature", "value", "999999", "not found", *names, *values]:
        assert word in text, word

    wide = quiver(*args, cwd=materialized, env=cli_env(COLUMNS="500")).stdout  # a column each
    header = next(line for line in wide.splitlines() if "customer_id" in line)
    assert all(name in header for name in names)


@pytest.mark.parametrize(
    "args",
    [["feature-views", "list"], ["feature-services", "list"], ["history", "customer_behavior"]],
    ids=["feature-views", "feature-services", "history"],
)
def test_no_table_cuts_a_value_in_a_narrow_terminal(materialized: Path, args: list[str]) -> None:
    # Regression: every CLI table but get-online ended long cells with "…" when narrow.
    text = quiver(*args, cwd=materialized, env=cli_env(COLUMNS="60")).stdout
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    # Long cells fold onto the next line: every character of a name is there, in order.
    cells = "".join(ch for ch in text if ch.isalnum() or ch == "_")
    assert "custom" in cells or "churn_" in cells
