"""The REST API's file boundary, attacked over real HTTP (issue 13, "a hard boundary on files").

Every attack of the issue is reproduced: outputs aimed at the registry, a source's files and the
online store; reading ``/etc/passwd`` by path and by traversal, through a registered data source
and as an entity table; a link inside the data folder that leads out of it; a column name that
echoes a file's first line; a source that would list a folder's files. Each is refused with a
4xx that quotes nothing read from a file, and every file the attacks aim at is unchanged.

Uses its own demo repo and server (``new_demo_server``): an attack that worked would wreck it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _http import assert_error

pytestmark = pytest.mark.slow  # a fresh demo repo and server: ~20 s of set-up

ROWS = {"columns": ["customer_id", "event_timestamp"], "data": [[1, "2025-06-01T00:00:00Z"]]}
FEATURES = ["customer_demographics:age"]
HISTORICAL = "/api/v1/serving/historical"
PASSWD_FIRST_LINE = Path("/etc/passwd").read_text().splitlines()[0]


@pytest.fixture(scope="module")
def target(new_demo_server: Any) -> Iterator[tuple[httpx.Client, Path]]:
    server = new_demo_server()
    with server.client() as client:
        yield client, server.repo


@pytest.fixture(scope="module")
def model(target: tuple[httpx.Client, Path]) -> str:
    """A trained model (so that a batch prediction gets as far as its output)."""
    client, _ = target
    body = {
        "name": "boundary_model",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {"entity_df_source": "churn_labels", "label_column": "churned"},
        "hyperparameters": {"params": {"n_estimators": 5, "n_jobs": 1}},
    }
    response = client.post("/api/v1/models", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["model_id"])


def digests(repo: Path) -> dict[str, str]:
    """The sha256 of every file the attacks aim at."""
    files = [repo / "data" / "registry.db", repo / "data" / "online.db"]
    files += sorted((repo / "data").glob("*.parquet"))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}


def no_leak(response: httpx.Response) -> None:
    assert PASSWD_FIRST_LINE not in response.text
    assert "root:x:" not in response.text


def historical_to(client: httpx.Client, path: str, **extra: Any) -> httpx.Response:
    body = {"features": FEATURES, "entity_rows": ROWS, "output": "parquet", "output_path": path}
    return client.post(HISTORICAL, json={**body, **extra})


# -- writes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "registry.db",  # relative to the data folder, as output paths once were
        "data/registry.db",
        "{repo}/data/registry.db",
        "../{name}/data/registry.db",
        "outputs/../data/registry.db",
        "data/registry.db-wal",
    ],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_never_replaces_the_registry(
    target: tuple[httpx.Client, Path], path: str, overwrite: bool
) -> None:
    client, repo = target
    before = digests(repo)
    path = path.format(repo=repo, name=repo.name)
    response = historical_to(client, path, overwrite=overwrite)
    error = assert_error(response, 403, "forbidden")
    assert "outside the folder the API writes to" in error["message"]
    assert str(repo / "outputs") in error["message"]  # names the root
    assert digests(repo) == before
    assert client.get("/api/v1/feature-views").status_code == 200  # the registry still reads


@pytest.mark.parametrize(
    "path",
    [
        "customer_contract.parquet",
        "data/customer_contract.parquet",
        "data/x/../churn_labels.parquet",
    ],
)
def test_an_output_never_replaces_a_source(target: tuple[httpx.Client, Path], path: str) -> None:
    client, repo = target
    before = digests(repo)
    response = historical_to(client, path, overwrite=True)
    assert_error(response, 403, "forbidden")
    assert digests(repo) == before


@pytest.mark.parametrize("path", ["online.db", "data/online.db", "{repo}/data/online.db"])
def test_batch_predictions_never_replace_the_online_store(
    target: tuple[httpx.Client, Path], model: str, path: str
) -> None:
    client, repo = target
    before = digests(repo)
    assert "online.db" in before
    body = {
        "model": model,
        "entity_rows": ROWS,
        "output_path": path.format(repo=repo),
        "overwrite": True,
    }
    response = client.post("/api/v1/predictions/batch", json=body)
    assert_error(response, 403, "forbidden")
    platform = {"model_id": model, "input_table": "churn_labels", "output_table": "data/online.db"}
    assert_error(client.post("/feast/predictions/batch", json=platform), 403, "forbidden")
    assert digests(repo) == before
    online = client.post(
        "/api/v1/serving/online",
        json={"features": FEATURES, "entities": {"customer_id": [1]}},
    )
    assert online.status_code == 200, online.text


def test_an_existing_output_is_replaced_only_when_asked(target: tuple[httpx.Client, Path]) -> None:
    client, repo = target
    first = historical_to(client, "outputs/once.parquet")
    assert first.status_code == 200, first.text
    written = Path(first.json()["output_path"])
    assert written == (repo / "outputs" / "once.parquet").resolve()
    content = written.read_bytes()
    again = historical_to(client, "outputs/once.parquet")
    assert "overwrite" in assert_error(again, 409, "conflict")["message"]
    assert written.read_bytes() == content
    replaced = historical_to(client, "outputs/once.parquet", overwrite=True)
    assert replaced.status_code == 200, replaced.text
    assert not [p.name for p in (repo / "outputs").iterdir() if p.name.endswith(".tmp")]


def test_a_link_in_the_write_root_cannot_redirect_a_write(
    target: tuple[httpx.Client, Path],
) -> None:
    client, repo = target
    (repo / "outputs").mkdir(exist_ok=True)
    link = repo / "outputs" / "innocent.parquet"
    link.unlink(missing_ok=True)
    link.symlink_to(repo / "data" / "registry.db")
    before = digests(repo)
    error = assert_error(historical_to(client, "outputs/innocent.parquet", overwrite=True), 403)
    assert "link" in error["message"] and "registry" not in error["message"]
    assert digests(repo) == before


# -- reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "../../../../../../../../etc/passwd",
        "data/../../../../../../../../../etc/passwd",
        "~/../../etc/passwd",
    ],
)
def test_etc_passwd_is_never_read(target: tuple[httpx.Client, Path], path: str) -> None:
    client, repo = target
    source = {
        "name": "passwd",
        "type": "file",
        "path": path,
        "format": "csv",
        "timestamp_field": "event_timestamp",  # not a column there: the error once listed them
    }
    created = client.post("/api/v1/data-sources", json=source)
    no_leak(created)
    error = assert_error(created, 403, "forbidden")
    assert "outside the folders the API reads" in error["message"]
    assert str(repo / "data") in error["message"]  # names the roots
    assert client.get("/api/v1/data-sources/passwd").status_code == 404
    view = {
        "name": "passwd_view",
        "entities": ["customer"],
        "features": [{"name": "age", "dtype": "int64"}],
        "source": {**source, "name": "passwd_inline"},
    }
    no_leak(assert_response(client.post("/api/v1/feature-views", json=view), 403))
    as_source = client.post(
        HISTORICAL,
        json={
            "features": FEATURES,
            "entity_source": "passwd",
            "timestamp_column": PASSWD_FIRST_LINE,
        },
    )
    no_leak(as_source)
    assert_error(as_source, 404)
    as_path = client.post(
        HISTORICAL,
        json={"features": FEATURES, "entity_path": path, "timestamp_column": "ts"},
    )
    no_leak(as_path)
    assert_error(as_path, 403, "forbidden")
    batch = {"model": "whatever", "input_path": path, "output_path": "outputs/p.parquet"}
    no_leak(assert_response(client.post("/api/v1/predictions/batch", json=batch), 403))
    training = {
        "name": "passwd_model",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {"entity_df_source": path, "label_column": "churned"},
    }
    no_leak(assert_response(client.post("/api/v1/models", json=training), 403))
    no_leak(assert_response(client.post("/feast/models", json=training), 403))


def assert_response(response: httpx.Response, status: int) -> httpx.Response:
    assert_error(response, status)
    return response


@pytest.mark.parametrize("name", ["..", ".", "~"])
def test_a_bare_name_that_is_a_folder_is_checked_as_a_path(
    target: tuple[httpx.Client, Path], name: str
) -> None:
    """``..`` as a training input once read the repo's parent folder."""
    client, _ = target
    training = {
        "name": "dotdot",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {"entity_df_source": name, "label_column": "churned"},
    }
    assert_error(client.post("/api/v1/models", json=training), 403, "forbidden")
    # The platform takes table names ('name', 'schema.name', 'catalog.schema.name'): none of
    # these is one, so nothing is read.
    platform = {"model_id": "boundary_model:1", "input_table": name, "output_table": "o"}
    assert_error(client.post("/feast/predictions/batch", json=platform), 422)


def test_a_link_in_the_data_folder_that_leads_out_is_refused(
    target: tuple[httpx.Client, Path],
) -> None:
    client, repo = target
    data = repo / "data"
    links = {
        "escape.csv": Path("/etc/passwd"),  # a file link
        "escape_dir": Path("/etc"),  # a folder link
    }
    for name, where in links.items():
        (data / name).unlink(missing_ok=True)
        (data / name).symlink_to(where)
    inner = data / "holds_a_link"
    inner.mkdir(exist_ok=True)
    (inner / "rows.csv").unlink(missing_ok=True)
    (inner / "rows.csv").symlink_to("/etc/passwd")
    for path in (
        "data/escape.csv",
        "data/escape_dir/passwd",
        "data/holds_a_link",
        "data/holds_*/*",
    ):
        source = {"name": "linked", "type": "file", "path": path, "format": "csv"}
        response = client.post("/api/v1/data-sources", json=source)
        no_leak(response)
        error = assert_error(response, 403, "forbidden")
        assert "lead" in error["message"], error  # "leads outside" / "a file that leads outside"
        assert "/etc" not in error["message"].replace(path, "")  # where the link goes: not said
        read = client.post(HISTORICAL, json={"features": FEATURES, "entity_path": path})
        no_leak(read)
        assert_error(read, 403, "forbidden")
    assert client.get("/api/v1/data-sources/linked").status_code == 404


def test_a_folder_source_lists_no_file_names(target: tuple[httpx.Client, Path]) -> None:
    client, _ = target
    outside = sorted(n for n in os.listdir("/usr/bin") if len(n) > 6)[:50]
    for path in ("/usr/bin", "/usr"):
        response = client.post(
            "/api/v1/data-sources", json={"name": "usr", "type": "file", "path": path}
        )
        assert_error(response, 403, "forbidden")
        assert not [n for n in outside if n in response.text]
    # The data folder itself holds the registry: refused, without naming what else it holds.
    response = client.post(
        "/api/v1/data-sources", json={"name": "all", "type": "file", "path": "data"}
    )
    error = assert_error(response, 403, "forbidden")
    assert "registry" in error["message"]
    assert "customer_behavior" not in response.text and "churn_labels" not in response.text
    glob = client.post(
        "/api/v1/data-sources", json={"name": "all", "type": "file", "path": "data/*.db"}
    )
    assert_error(glob, 403, "forbidden")


def test_the_servers_own_files_are_never_read(target: tuple[httpx.Client, Path]) -> None:
    """The registry lies in the data folder (a read root): still never read."""
    client, _ = target
    for path in ("data/registry.db", "data/online.db", "quiver.yaml", "data/registry.db-wal"):
        source = {"name": "internal", "type": "file", "path": path, "format": "csv"}
        assert_error(client.post("/api/v1/data-sources", json=source), 403, "forbidden")
        read = client.post(HISTORICAL, json={"features": FEATURES, "entity_path": path})
        assert_error(read, 403, "forbidden")


def test_a_platform_source_behind_a_link_is_refused(target: tuple[httpx.Client, Path]) -> None:
    """``POST /feast/features`` reads ``<data>/<schema>/<table>``: a linked schema folder that
    leads out of the data folder is refused."""
    client, repo = target
    outside = Path(tempfile.mkdtemp(prefix="quiver-outside-"))
    table = pa.table(
        {
            "customer_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([0], pa.timestamp("us", tz="UTC")),
            "secret": ["outside the repo"],
        }
    )
    pq.write_table(table, outside / "t.parquet")
    link = repo / "data" / "linked_schema"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    body = {
        "name": "linked_view",
        "entities": ["customer_id"],
        "features": [{"name": "secret", "dtype": "String"}],
        "source": {"schema": "linked_schema", "table_name": "t"},
    }
    assert_error(client.post("/feast/features", json=body), 403, "forbidden")
    assert client.get("/api/v1/feature-views/linked_view").status_code == 404


@pytest.mark.parametrize("path", ["s3://not-allowed/x.parquet", "s3a://bucket/k/*.parquet"])
def test_s3_outside_the_allowed_buckets_is_refused(
    target: tuple[httpx.Client, Path], path: str
) -> None:
    client, _ = target
    read = client.post(HISTORICAL, json={"features": FEATURES, "entity_path": path})
    assert "server.s3_buckets" in assert_error(read, 403, "forbidden")["message"]
    if "*" not in path:
        assert_error(historical_to(client, path), 403, "forbidden")
    source = {"name": "s3_src", "type": "file", "path": path}
    assert_error(client.post("/api/v1/data-sources", json=source), 403, "forbidden")


def test_every_target_is_intact_and_sources_still_read(target: tuple[httpx.Client, Path]) -> None:
    client, repo = target
    for name in ("customer_contract", "customer_behavior", "churn_labels"):
        table = pq.read_table(repo / "data" / f"{name}.parquet")
        assert table.num_rows > 1  # not the one-row file an overwrite left
    response = client.post(
        HISTORICAL,
        json={"feature_service": "churn_prediction_v1", "entity_rows": ROWS},
    )
    assert response.status_code == 200, response.text
