"""Model artifacts on disk: the model file, ``encoding.json`` and ``metadata.json``.

A version's files live in ``<model_dir>/<name>/<version>/``. Every file's sha256 is stored in the
registry when the version is created and checked again on every load; a missing or changed file is
refused with an error naming it. The formats cannot run code when read (skops for scikit-learn,
UBJSON for XGBoost, the text model for LightGBM) and JSON for the rest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quiver.errors import ConflictError, NotFoundError
from quiver.ml.encoding import Encoding
from quiver.ml.trainers import ModelType, get_trainer

__all__ = [
    "ENCODING_FILE",
    "METADATA_FILE",
    "ArtifactIntegrityError",
    "LoadedModel",
    "load_artifacts",
    "publish_dir",
    "sha256_bytes",
    "staging_dir",
    "staging_path",
    "verify_file",
    "write_artifacts",
]

ENCODING_FILE = "encoding.json"
METADATA_FILE = "metadata.json"
_CACHE_SIZE = 16


class ArtifactIntegrityError(ConflictError):
    """A model artifact on disk does not match the checksum recorded in the registry."""

    error_type = "artifact_integrity"


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def staging_path(model_root: Path, name: str, token: str) -> Path:
    """The private directory a job with ``token`` writes a new version's files into."""
    return model_root / name / f".staging-{token}"


def staging_dir(model_root: Path, name: str) -> Path:
    """A fresh private directory to write a new version's files into before it is published.

    Inside a worker process it is named after the job's token (:mod:`quiver.jobs.context`), so
    the server can remove it if it kills the job.
    """
    from quiver.jobs.context import current_token

    path = staging_path(model_root, name, current_token() or uuid.uuid4().hex)
    path.mkdir(parents=True)
    return path


def write_artifacts(
    directory: Path,
    framework: str,
    model: Any,
    encoding: Encoding,
) -> dict[str, str]:
    """Save the model and its encoding into ``directory``; returns ``{file: sha256}``."""
    trainer = get_trainer(framework)
    model_file = directory / trainer.artifact_file
    trainer.save(model, model_file)
    (directory / ENCODING_FILE).write_text(json.dumps(encoding.to_dict(), indent=2, default=str))
    return {
        trainer.artifact_file: _sha256_file(model_file),
        ENCODING_FILE: _sha256_file(directory / ENCODING_FILE),
    }


def publish_dir(staging: Path, final: Path, metadata: dict[str, Any]) -> str:
    """Write ``metadata.json`` and move ``staging`` to ``final``; returns the metadata's sha256.

    A leftover directory at ``final`` (from a registry that was reset) is replaced: the registry
    is the source of truth for which versions exist.
    """
    text = json.dumps(metadata, indent=2, sort_keys=True, default=str)
    (staging / METADATA_FILE).write_text(text)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
    return sha256_bytes(text.encode())


def verify_file(path: Path, expected: str, model_id: str) -> bytes:
    """Read ``path`` and check its sha256 against ``expected``; returns the bytes.

    Raises:
        NotFoundError: the file is missing.
        ArtifactIntegrityError: its content changed since the version was registered.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"artifact file '{path}' of model '{model_id}' is missing; restore it from a backup "
            "or train the model again"
        ) from None
    actual = sha256_bytes(data)
    if actual != expected:
        raise ArtifactIntegrityError(
            f"artifact file '{path}' of model '{model_id}' does not match its registered "
            f"checksum (sha256 {actual[:12]}..., expected {expected[:12]}...); it was changed "
            "after training: refusing to load it. Restore the file or train the model again",
            details={"file": str(path), "expected": expected, "actual": actual},
        )
    return data


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to predict: the framework's model object and its encoding."""

    model_id: str
    framework: str
    model_type: ModelType
    model: Any
    encoding: Encoding

    def predict_matrix(self, x: Any) -> Any:
        """Probabilities ``(n, K)`` (classifiers) or values ``(n,)`` (regressors) of ``x``."""
        return get_trainer(self.framework).predict(self.model, x, self.model_type)


_cache: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()


def load_artifacts(
    directory: Path,
    checksums: dict[str, str],
    *,
    model_id: str,
    framework: str,
    model_type: ModelType,
) -> LoadedModel:
    """Verify every file's checksum, then load the model and its encoding.

    Checksums are checked on every call; the parsed model is cached per checksum so repeated
    online predictions do not parse the file again.

    Raises:
        NotFoundError: a file is missing.
        ArtifactIntegrityError: a file changed since the version was registered.
    """
    trainer = get_trainer(framework)
    contents: dict[str, bytes] = {}
    for file, expected in sorted(checksums.items()):
        contents[file] = verify_file(directory / file, expected, model_id)
    key = (str(directory), checksums.get(trainer.artifact_file, ""))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached.model_id == model_id:
            _cache.move_to_end(key)
            return cached
    if trainer.artifact_file not in contents:
        raise NotFoundError(
            f"model '{model_id}' has no registered model file '{trainer.artifact_file}'"
        )
    encoding = Encoding.from_dict(json.loads(contents[ENCODING_FILE]))
    model = trainer.load(directory / trainer.artifact_file, model_type)
    # Re-check after parsing: the file must not have changed between the check and the load.
    verify_file(directory / trainer.artifact_file, checksums[trainer.artifact_file], model_id)
    loaded = LoadedModel(model_id, framework, model_type, model, encoding)
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded
