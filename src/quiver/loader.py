"""Loading definitions from a Python module, YAML or JSON files, or a directory of them.

YAML and JSON files hold a mapping with any of the keys ``entities``, ``data_sources``,
``feature_views`` and ``feature_services``, each a list of specs in the REST API's JSON shape.
A Python module is imported and every module-level definition object is collected; one that
imports ``feast`` gets Feast's definition API from :mod:`quiver.compat.feast` (Feast repos load
unchanged, and Feast is never imported).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
import traceback
import uuid
from pathlib import Path
from typing import Any

import yaml

from quiver.definitions import object_from_spec
from quiver.errors import DefinitionError, InvalidError, NotFoundError, QuiverError
from quiver.registry.plan import DEFINITION_TYPES, DefinitionSet

__all__ = ["SECTION_KINDS", "definitions_from_mapping", "load_definitions"]

SECTION_KINDS = {
    "entities": "entity",
    "data_sources": "data_source",
    "feature_views": "feature_view",
    "on_demand_feature_views": "on_demand_feature_view",
    "feature_services": "feature_service",
}
_SKIP_DIRS = {"data", "models", "__pycache__", "node_modules", ".git", ".venv", "venv"}
_CONFIG_NAMES = {"quiver.yaml", "quiver.yml", "feature_store.yaml"}
_IMPORTS_FEAST = re.compile(r"^\s*(?:from\s+feast(?:\.|\s)|import\s+feast\b)", re.MULTILINE)


def load_definitions(
    paths: str | Path | list[str | Path], base: Path | None = None
) -> DefinitionSet:
    """Load every definition in ``paths`` (files or directories) into one set.

    Args:
        paths: Python modules, YAML/JSON files, or directories holding them (not recursive).
        base: The directory relative paths are resolved against (default: the current one).

    Raises:
        NotFoundError: a path does not exist.
        DefinitionError: a file cannot be read or imported (the message names file and line).
        InvalidError: a definition is invalid or two share a name.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    result = DefinitionSet()
    for raw in paths:
        path = Path(raw).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.exists():
            raise NotFoundError(f"definitions path '{path}' does not exist")
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and _is_candidate(child):
                    _load_file(child, result, explicit=False)
        else:
            _load_file(path, result, explicit=True)
    return result


def _is_candidate(path: Path) -> bool:
    if path.name in _CONFIG_NAMES or path.name.startswith((".", "_")):
        return False
    return path.suffix in (".py", ".yaml", ".yml", ".json")


def _load_file(path: Path, result: DefinitionSet, *, explicit: bool) -> None:
    if path.suffix == ".py":
        for obj in _load_python(path):
            result.add(obj, origin=str(path))
    elif path.suffix in (".yaml", ".yml", ".json"):
        data = _read_structured(path)
        if not explicit and (not isinstance(data, dict) or not set(data) & set(SECTION_KINDS)):
            return  # not a definitions file (e.g. a training spec) when scanning a directory
        for obj in definitions_from_mapping(data, origin=str(path)).all():
            result.add(obj, origin=str(path))
    else:
        raise DefinitionError(
            f"'{path}': unsupported definitions file; use .py, .yaml, .yml or .json"
        )


def _read_structured(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"'{path}': cannot be read as UTF-8 text: {exc}") from exc
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            f"'{path}': malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(f"'{path}': malformed YAML{where}: {problem}") from exc


def definitions_from_mapping(data: Any, origin: str = "definitions") -> DefinitionSet:
    """Build a :class:`DefinitionSet` from ``{"entities": [...], "feature_views": [...], ...}``.

    Raises:
        DefinitionError: unknown sections or a malformed layout.
        InvalidError: an invalid definition (the message names it and the file).
    """
    if not isinstance(data, dict):
        raise DefinitionError(
            f"'{origin}': expected a mapping with keys {', '.join(SECTION_KINDS)}"
        )
    unknown = sorted(set(data) - set(SECTION_KINDS))
    if unknown:
        raise DefinitionError(
            f"'{origin}': unknown section '{unknown[0]}'; use {', '.join(SECTION_KINDS)}"
        )
    result = DefinitionSet()
    for section, kind in SECTION_KINDS.items():
        items = data.get(section) or []
        if not isinstance(items, list):
            raise DefinitionError(f"'{origin}': '{section}' must be a list")
        for i, spec in enumerate(items):
            if not isinstance(spec, dict):
                raise DefinitionError(f"'{origin}': {section}[{i}] must be a mapping")
            try:
                obj = object_from_spec(kind, spec)
            except InvalidError as exc:
                raise InvalidError(f"'{origin}': {exc.message}", details=exc.details) from None
            result.add(obj, origin=origin)
    return result


def _load_python(path: Path) -> list[Any]:
    module_name = f"_quiver_defs_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"'{path}': cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    parent = str(path.parent.resolve())
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    try:
        with _feast_if_imported(path):
            spec.loader.exec_module(module)
    except QuiverError as exc:
        message = f"'{path}'{_line_in(exc, path)}: {exc.message}"
        try:
            located = type(exc)(message, details=exc.details)
        except TypeError:  # a subclass with its own constructor (e.g. MissingExtraError)
            located = DefinitionError(message, details=exc.details)
        raise located from None
    except SyntaxError as exc:
        raise DefinitionError(f"'{path}', line {exc.lineno}: syntax error: {exc.msg}") from exc
    except BaseException as exc:  # the user's module may raise anything on import
        raise DefinitionError(
            f"'{path}'{_line_in(exc, path)}: importing the definitions raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if added:
            sys.path.remove(parent)
    objects: list[Any] = []
    seen: set[int] = set()
    for value in vars(module).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, DEFINITION_TYPES) and id(item) not in seen:
                seen.add(id(item))
                objects.append(item)
    return objects


def _feast_if_imported(path: Path) -> Any:
    """Feast's API (:mod:`quiver.compat.feast`) as ``feast`` while a file that imports it loads."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return contextlib.nullcontext()
    if not _IMPORTS_FEAST.search(text):
        return contextlib.nullcontext()
    from quiver.compat.feast import feast_modules

    return feast_modules()


def _line_in(exc: BaseException, path: Path) -> str:
    target = str(path.resolve())
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if str(Path(frame.filename).resolve()) == target:
            line = frame.lineno
    return f", line {line}" if line else ""
