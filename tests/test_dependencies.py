"""Every import of src/quiver is declared, in the right extra, and uv.lock matches pyproject.toml.

A dependency that only arrives as someone else's dependency (``click`` through an older Typer)
works on the machine that happened to have it and fails on a new one: these checks name the
module at fault instead.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "quiver"

# Packages of quiver whose modules may import an extra's dependencies at module level: they
# are only imported once that extra's feature is used (``quiver serve``, the REST API).
EXTRA_PACKAGES = {"server": "server"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


@cache
def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _distributions(extra: str | None) -> set[str]:
    """The distributions the core (``extra=None``) or the core plus ``extra`` declare."""
    project = _pyproject()["project"]
    names = {_name(r) for r in project["dependencies"]}
    pending = [extra] if extra else []
    while pending:
        for requirement in project["optional-dependencies"][pending.pop()]:
            if requirement.startswith("quiver["):
                pending.extend(requirement[len("quiver[") : requirement.index("]")].split(","))
            else:
                names.add(_name(requirement))
    return names


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _providers(module: str) -> set[str]:
    """The installed distributions that provide top-level ``module``."""
    return {_name(d) for d in _installed().get(module.split(".")[0], [])}


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top not in {"quiver", "__future__"}


def _module_level_imports(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Imports that run when the module is imported (not inside functions or TYPE_CHECKING)."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            pending.extend(node.body)


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def test_deptry_finds_every_import_declared() -> None:
    """Missing (DEP001), unused (DEP002) and transitive-only (DEP003) dependencies."""
    result = _run(sys.executable, "-m", "deptry", "--no-ansi", "src")
    assert result.returncode == 0, "deptry: " + result.stdout + result.stderr


def test_module_level_imports_need_only_the_core_or_their_own_extra() -> None:
    problems = []
    for path, tree in _sources():
        package = path.relative_to(SRC).parts[0]
        allowed = _distributions(EXTRA_PACKAGES.get(package))
        for line, module in _module_level_imports(tree):
            if _third_party(module) and not _providers(module) & allowed:
                where = f"{path.relative_to(ROOT)}:{line}"
                extra = EXTRA_PACKAGES.get(package, "the core")
                problems.append(f"{where} imports {module!r}, not a dependency of {extra}")
    assert not problems, "\n".join(problems)


def test_optional_imports_name_an_extra_that_declares_them() -> None:
    """``require("module", "extra", ...)`` names an extra whose dependencies provide it."""
    extras = _pyproject()["project"]["optional-dependencies"]
    calls = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "require"
                and len(node.args) >= 2
                and all(isinstance(a, ast.Constant) for a in node.args[:2])
            ):
                module, extra = (a.value for a in node.args[:2])  # type: ignore[attr-defined]
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", module, extra))
    assert calls
    problems = []
    for where, module, extra in calls:
        if extra not in extras:
            problems.append(f"{where}: require({module!r}) names extra {extra!r}, which is unknown")
        elif not _providers(module) & _distributions(extra):
            problems.append(f"{where}: {module!r} is not a dependency of quiver[{extra}]")
    assert not problems, "\n".join(problems)


def test_lock_matches_pyproject() -> None:
    """uv.lock is what the README and CI install: it must agree with pyproject.toml."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is not installed (it is in the dev extra)"
    result = _run(uv, "lock", "--check", "--offline")
    assert result.returncode == 0, (
        "uv.lock does not match pyproject.toml; refresh it with `uv lock`:\n" + result.stderr
    )


def test_scripts_use_the_uv_the_dev_extra_pins() -> None:
    script = (ROOT / "scripts" / "_uv.sh").read_text()
    pinned = re.search(r"^QUIVER_UV_VERSION=(\S+)", script, re.MULTILINE)
    assert pinned, "scripts/_uv.sh names no QUIVER_UV_VERSION"
    dev = _pyproject()["project"]["optional-dependencies"]["dev"]
    assert f"uv=={pinned.group(1)}" in dev, f"scripts/_uv.sh pins uv {pinned.group(1)}, dev: {dev}"
