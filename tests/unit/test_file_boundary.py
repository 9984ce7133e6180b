"""The REST API's file boundary (:mod:`quiver.security.paths`) and atomic writes
(:func:`quiver._paths.publish_file`), on a repo in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver._paths import publish_file, temp_path
from quiver.config import build_config
from quiver.definitions import FileSource, IcebergSource
from quiver.errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from quiver.security.paths import FileBoundary


def boundary(repo: Path, sources: list[object] | None = None, **server: object) -> FileBoundary:
    config = build_config({"repo_path": repo, "server": server})
    return FileBoundary(config, lambda: sources or [])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.parquet").write_bytes(b"PAR1")
    (tmp_path / "data" / "registry.db").write_bytes(b"SQLite format 3")
    (tmp_path / "data" / "tables").mkdir()
    (tmp_path / "data" / "tables" / "a.parquet").write_bytes(b"PAR1")
    (tmp_path / "quiver.yaml").write_text("project: p\n")
    return tmp_path


def test_reads_inside_the_data_folder_resolve_to_absolute_paths(repo: Path) -> None:
    b = boundary(repo)
    assert b.readable("data/labels.parquet") == str(repo / "data" / "labels.parquet")
    assert b.readable("data/tables") == str(repo / "data" / "tables")
    assert b.readable("data/tables/*.parquet") == str(repo / "data" / "tables" / "*.parquet")
    assert b.readable(str(repo / "data" / "x" / ".." / "labels.parquet")).endswith("labels.parquet")
    with pytest.raises(NotFoundError):
        b.readable("data/missing.parquet")
    assert b.readable("data/missing.parquet", must_exist=False).endswith("missing.parquet")


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "../x.parquet", "data/../../x", "~/x.parquet", "quiver.yaml", "*.py"]
)
def test_reads_outside_the_roots_are_forbidden(repo: Path, path: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        boundary(repo).readable(path)
    assert "root" in info.value.message or "quiver.yaml" in info.value.message


@pytest.mark.parametrize(
    ("path", "what"),
    [
        ("data/registry.db", "registry"),
        ("data/registry.db-wal", "registry"),
        ("data", "registry"),  # a folder that holds it
        ("data/*.db", "registry"),  # a glob that could take it in
        ("data/online.db", "online store"),
    ],
)
def test_the_servers_own_files_are_never_readable(repo: Path, path: str, what: str) -> None:
    with pytest.raises(ForbiddenError) as info:
        boundary(repo).readable(path, must_exist=False)
    assert what in info.value.message


def test_links_that_lead_out_are_forbidden_without_saying_where(repo: Path) -> None:
    outside = repo.parent / f"{repo.name}-outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("root:x:0:0\n")
    (repo / "data" / "link.csv").symlink_to(outside / "secret.csv")
    (repo / "data" / "linked_dir").symlink_to(outside)
    (repo / "data" / "tables" / "b.csv").symlink_to(outside / "secret.csv")
    b = boundary(repo)
    for path in ("data/link.csv", "data/linked_dir/secret.csv", "data/tables", "data/tables/*"):
        with pytest.raises(ForbiddenError) as info:
            b.readable(path)
        assert "lead" in info.value.message
        assert str(outside) not in info.value.message and "root:x" not in info.value.message


def test_configured_read_roots_replace_the_data_folder(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    lake = tmp_path_factory.mktemp("lake")
    (lake / "t.parquet").write_bytes(b"PAR1")
    b = boundary(repo, read_roots=[str(lake)])
    assert b.readable(str(lake / "t.parquet")) == str(lake / "t.parquet")
    with pytest.raises(ForbiddenError):
        b.readable("data/labels.parquet")
    assert b.readable("outputs/x.parquet", must_exist=False)  # the write root stays readable


def test_writes_go_only_to_the_write_root(repo: Path) -> None:
    b = boundary(repo)
    target = b.writable("outputs/a/b.parquet")
    assert target == str(repo / "outputs" / "a" / "b.parquet")
    assert (repo / "outputs" / "a").is_dir()  # the folder is made
    default = Path(b.writable(None, prefix="historical"))
    assert default.parent == repo / "outputs" and default.name.startswith("historical-")
    for path in ("data/new.parquet", "registry.db", "/tmp/x.parquet", "outputs/../x.parquet"):
        with pytest.raises(ForbiddenError) as info:
            b.writable(path, overwrite=True)
        assert str(repo / "outputs") in info.value.message
    with pytest.raises(InvalidError):
        b.writable("outputs/*.parquet")
    with pytest.raises(InvalidError):
        b.writable("outputs/a")  # a folder


def test_an_existing_file_is_replaced_only_when_asked(repo: Path) -> None:
    b = boundary(repo)
    (repo / "outputs").mkdir()
    (repo / "outputs" / "x.parquet").write_bytes(b"old")
    with pytest.raises(ConflictError):
        b.writable("outputs/x.parquet")
    assert b.writable("outputs/x.parquet", overwrite=True).endswith("x.parquet")


def test_a_write_root_holding_the_servers_files_still_guards_them(repo: Path) -> None:
    """With ``server.write_root: data`` (an owner's choice) the registry, the online store, a
    source's files, pushed rows and the models stay out of reach; a new file is fine."""
    sources = [
        FileSource(name="src", path="data/labels.parquet", timestamp_field="ts"),
        FileSource(name="tree", path="data/tables/*.parquet", timestamp_field="ts"),
    ]
    b = boundary(repo, sources, write_root="data")
    for path in (
        "data/registry.db",
        "data/online.db",
        "data/labels.parquet",
        "data/tables/new.parquet",
        "data/_pushed/src/x.parquet",
    ):
        with pytest.raises(ForbiddenError):
            b.writable(path, overwrite=True)
    assert b.writable("data/new.parquet") == str(repo / "data" / "new.parquet")
    root = boundary(repo, write_root=".")
    with pytest.raises(ForbiddenError):
        root.writable("models/m/1/model.txt", overwrite=True)
    with pytest.raises(ForbiddenError):
        root.writable("quiver.yaml", overwrite=True)


def test_a_data_sources_iceberg_table_is_never_an_output(repo: Path) -> None:
    source = IcebergSource(name="orders", table="sales.orders", timestamp_field="ts")
    b = boundary(repo, [source])
    with pytest.raises(ForbiddenError):
        b.writable_table("iceberg:sales.orders")
    with pytest.raises(ForbiddenError):
        b.writable_table("iceberg:default/sales.orders")
    assert b.writable_table("iceberg:sales.scores") == "iceberg:sales.scores"
    assert b.writable_table("iceberg:other/sales.orders") == "iceberg:other/sales.orders"


def test_s3_only_in_the_listed_buckets(repo: Path) -> None:
    closed = boundary(repo)
    with pytest.raises(ForbiddenError) as info:
        closed.readable("s3://bucket/x.parquet")
    assert "none" in info.value.message
    b = boundary(repo, s3_buckets=["bucket/team", "s3://open"])
    assert b.readable("s3://bucket/team/x.parquet") == "s3://bucket/team/x.parquet"
    assert b.readable("s3://open/any/*.parquet") == "s3://open/any/*.parquet"
    for path in ("s3://bucket/other/x.parquet", "s3://bucket/teamx/y", "s3://bucket/team/../x"):
        with pytest.raises(ForbiddenError):
            b.readable(path)
    with pytest.raises(InvalidError):
        b.readable("http://example.com/x.parquet")
    with pytest.raises(InvalidError):
        b.writable("s3://open/", overwrite=True)  # no object named
    source = FileSource(name="s3src", path="s3://open/src/", timestamp_field="ts")
    with pytest.raises(ForbiddenError):
        boundary(repo, [source], s3_buckets=["open"]).writable("s3://open/src/x.parquet")


def test_publish_file_moves_a_complete_file_into_place(tmp_path: Path) -> None:
    final = tmp_path / "out.parquet"
    tmp = temp_path(final, "job1")
    assert tmp.name == ".out.parquet.job1.tmp" and tmp.parent == tmp_path
    tmp.write_bytes(b"one")
    publish_file(tmp, final, overwrite=False)
    assert final.read_bytes() == b"one" and not tmp.exists()
    tmp.write_bytes(b"two")
    with pytest.raises(ConflictError):
        publish_file(tmp, final, overwrite=False)
    assert final.read_bytes() == b"one" and not tmp.exists()  # the old file is intact
    tmp.write_bytes(b"three")
    publish_file(tmp, final, overwrite=True)
    assert final.read_bytes() == b"three"
