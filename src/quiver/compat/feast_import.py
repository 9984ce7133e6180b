"""``quiver import-feast DIR OUT``: a Feast repo written out as an equivalent Quiver repo.

The Feast repo is loaded as ``quiver apply`` loads it (:mod:`quiver.compat.feast`), and its
objects are written as ``OUT/definitions.yaml`` (the REST API's spec shape, which
``quiver apply`` reads) next to ``OUT/quiver.yaml`` (the project of ``feature_store.yaml``).
Files the sources read that lie inside the Feast repo are copied to the same relative path in
``OUT``; other paths (absolute, ``s3://``) are kept as they are.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from quiver.errors import InvalidError
from quiver.loader import SECTION_KINDS, load_definitions

__all__ = ["import_feast"]


def import_feast(source: Path, out: Path) -> dict[str, int]:
    """Write the Quiver repo equivalent to the Feast repo ``source`` into ``out``.

    Returns:
        How many objects of each kind were written.

    Raises:
        InvalidError: ``out`` already holds a ``quiver.yaml`` or ``definitions.yaml``.
        DefinitionError: an object of the Feast repo cannot be represented (named).
    """
    from quiver.config import load_config

    source, out = source.resolve(), out.resolve()
    for name in ("quiver.yaml", "definitions.yaml"):
        if (out / name).exists():
            raise InvalidError(f"'{out / name}' exists already; choose an empty directory")
    config = load_config(source)
    paths: list[str | Path] = [source / p for p in config.definitions]
    objects = load_definitions(paths)
    sections: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    out.mkdir(parents=True, exist_ok=True)
    for section, kind in SECTION_KINDS.items():
        specs = []
        for obj in objects.by_kind(kind).values():
            spec = obj.to_spec()
            if kind == "data_source" and spec.get("path"):
                spec["path"] = _carry(source, out, spec["path"])
            specs.append(spec)
        if specs:
            sections[section] = specs
            counts[kind] = len(specs)
    (out / "definitions.yaml").write_text(yaml.safe_dump(sections, sort_keys=False))
    settings = {"project": config.project, "definitions": ["definitions.yaml"]}
    (out / "quiver.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return counts


def _carry(source: Path, out: Path, path: str) -> str:
    """The path the new repo uses: files inside the Feast repo are copied along."""
    if "://" in path:
        return path
    full = (source / path).resolve()
    try:
        relative = full.relative_to(source)
    except ValueError:
        return str(full)
    target = out / relative
    if full.is_dir():
        shutil.copytree(full, target, dirs_exist_ok=True)
    elif full.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(full, target)
    return relative.as_posix()
