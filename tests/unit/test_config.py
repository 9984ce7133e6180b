"""Config: quiver.yaml, QUIVER_* overrides, embedded defaults and errors naming the key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from quiver.config import (
    RedisOnlineStoreConfig,
    RepoConfig,
    SqliteOnlineStoreConfig,
    build_config,
    find_repo,
    load_config,
)
from quiver.errors import ConfigError, InvalidError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("QUIVER_"):
            monkeypatch.delenv(key)


def _repo(tmp_path: Path, text: str | None) -> Path:
    if text is not None:
        (tmp_path / "quiver.yaml").write_text(text)
    return tmp_path


def test_defaults_are_embedded(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.project == "default"
    assert config.repo_path == tmp_path.resolve()
    assert config.definitions == ["."]
    assert config.registry.url == "sqlite:///data/registry.db"
    assert config.registry_url == f"sqlite:///{tmp_path.resolve()}/data/registry.db"
    assert isinstance(config.online_store, SqliteOnlineStoreConfig)
    assert config.offline_engine.type == "duckdb"
    assert list(config.iceberg.catalogs) == ["default"]
    assert config.data_path == tmp_path.resolve() / "data"
    assert config.model_path == tmp_path.resolve() / "models"
    assert config.server.port == 8000


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(_repo(tmp_path, "")).project == "default"


def test_values_come_from_quiver_yaml(tmp_path: Path) -> None:
    repo = _repo(
        tmp_path,
        """
project: shop
definitions: [features.py, more/]
data_dir: /srv/data
registry: postgresql+psycopg://user@db/quiver
online_store: {type: redis, url: "redis://cache:6379/1", key_prefix: shop}
iceberg:
  catalogs:
    lake: {type: sql, uri: "sqlite:///cat.db", warehouse: wh}
s3: {endpoint_url: "http://minio:9000", region: eu-west-1}
server: {port: 9100}
""",
    )
    config = load_config(repo)
    assert config.project == "shop"
    assert config.definitions == ["features.py", "more/"]
    assert config.data_path == Path("/srv/data")
    assert config.registry_url == "postgresql+psycopg://user@db/quiver"  # shorthand string
    assert isinstance(config.online_store, RedisOnlineStoreConfig)
    assert (config.online_store.url, config.online_store.key_prefix) == (
        "redis://cache:6379/1",
        "shop",
    )
    assert config.iceberg.catalogs["lake"].warehouse == "wh"
    assert config.s3.endpoint_url == "http://minio:9000"
    assert config.server.port == 9100


def test_relative_paths_resolve_against_the_repo_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config("repo")
    assert config.resolve("data/x.parquet") == repo.resolve() / "data" / "x.parquet"
    assert config.registry_url == f"sqlite:///{repo.resolve()}/data/registry.db"
    assert config.resolve("/abs/x") == Path("/abs/x")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, "project: from_file\nserver: {port: 9100, host: 0.0.0.0}\n")
    monkeypatch.setenv("QUIVER_PROJECT", "from_env")
    monkeypatch.setenv("QUIVER_SERVER__PORT", "9200")
    monkeypatch.setenv("QUIVER_REGISTRY__URL", "sqlite:///other.db")
    monkeypatch.setenv("QUIVER_DEFINITIONS", '["a.py", "b.yaml"]')
    config = load_config(repo)
    assert config.project == "from_env"
    assert config.server.port == 9200
    assert config.server.host == "0.0.0.0"  # untouched keys of the section keep the file value
    assert config.registry_url == f"sqlite:///{tmp_path.resolve()}/other.db"
    assert config.definitions == ["a.py", "b.yaml"]


def test_explicit_overrides_beat_the_file(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "project: from_file\n")
    assert load_config(repo, project="given").project == "given"


def test_switching_the_online_store_type_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: the file's sqlite `path` was merged into the Redis settings, an error.
    repo = _repo(tmp_path, "online_store:\n  type: sqlite\n  path: data/online.db\n")
    monkeypatch.setenv("QUIVER_ONLINE_STORE__TYPE", "redis")
    monkeypatch.setenv("QUIVER_ONLINE_STORE__URL", "redis://10.0.0.1:6380/2")
    store = load_config(repo).online_store
    assert isinstance(store, RedisOnlineStoreConfig)
    assert store.url == "redis://10.0.0.1:6380/2"


def test_the_same_online_store_type_in_the_environment_keeps_the_file_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path, "online_store: {type: sqlite, path: custom.db}\n")
    monkeypatch.setenv("QUIVER_ONLINE_STORE__TYPE", "sqlite")
    store = load_config(repo).online_store
    assert isinstance(store, SqliteOnlineStoreConfig)
    assert store.path == "custom.db"


def test_unrelated_quiver_variables_are_not_config_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("QUIVER_USER", "QUIVER_REPO", "QUIVER_DEBUG"):
        monkeypatch.setenv(name, "x")
    assert load_config(tmp_path).project == "default"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("projetc: x\n", "projetc"),
        ("registry: {url: 'sqlite:///x.db', pool: 3}\n", "registry.pool"),
        ("online_store: {type: sqlite, pth: x.db}\n", "online_store.pth"),
        ("online_store: {type: redis, path: x.db}\n", "online_store.path"),
        ("server: {prot: 1}\n", "server.prot"),
        ("iceberg: {catalogs: {lake: {uri: x, warehous: y}}}\n", "iceberg.catalogs.lake.warehous"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_repo(tmp_path, text))
    assert f"unknown key '{key}'" in info.value.message
    assert str(tmp_path / "quiver.yaml") in info.value.message


def test_an_unknown_nested_key_from_the_environment_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIVER_SERVER__PROT", "9000")
    with pytest.raises(ConfigError, match=r"unknown key 'server\.prot'.*QUIVER_SERVER__PROT"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("projetc: x\n", "unknown key 'projetc'; did you mean 'project'?"),
        ("registry: {ulr: 'sqlite:///x.db'}\n", "unknown key 'registry.ulr'; did you mean 'url'?"),
        ("online_store: {tpye: sqlite}\n", "unknown key 'online_store.tpye'; did you mean 'type'?"),
        (
            "online_store: {type: redis, key_prefx: q}\n",
            "unknown key 'online_store.key_prefx'; did you mean 'key_prefix'?",
        ),
        (
            "iceberg: {catalogs: {lake: {uri: x, warehous: y}}}\n",
            "unknown key 'iceberg.catalogs.lake.warehous'; did you mean 'warehouse'?",
        ),
        ("server: {prot: 1}\n", "unknown key 'server.prot'; did you mean 'port'?"),
    ],
)
def test_an_unknown_key_gets_a_did_you_mean(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_repo(tmp_path, text))
    assert info.value.message == f"{tmp_path / 'quiver.yaml'}: {problem}"


@pytest.mark.parametrize("text", ["zzz: 1\n", "repo_pth: x\n"])
def test_no_did_you_mean_without_a_close_public_key(tmp_path: Path, text: str) -> None:
    # `repo_path` is set by Quiver, not a key of quiver.yaml: it is never suggested.
    with pytest.raises(ConfigError) as info:
        load_config(_repo(tmp_path, text))
    assert "did you mean" not in info.value.message


@pytest.mark.parametrize(
    ("variable", "problem"),
    [
        ("QUIVER_SERVER__PROT", "unknown key 'server.prot'; did you mean 'port'?"),
        ("QUIVER_ONLINE_STORE__PTH", "unknown key 'online_store.pth'; did you mean 'path'?"),
    ],
)
def test_an_unknown_key_from_the_environment_gets_a_did_you_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, problem: str
) -> None:
    monkeypatch.setenv(variable, "x")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert problem in info.value.message
    assert variable in info.value.message


def test_an_online_store_without_a_type_is_the_sqlite_store(tmp_path: Path) -> None:
    # Regression: the section needed `type` although SQLite is the default.
    store = load_config(_repo(tmp_path, "online_store: {path: custom.db}\n")).online_store
    assert isinstance(store, SqliteOnlineStoreConfig)
    assert store.path == "custom.db"


@pytest.mark.parametrize("variable", ["QUIVER_REGISTRY", "QUIVER_DEFINITIONS"])
def test_a_malformed_complex_variable_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Regression: pydantic-settings' SettingsError escaped instead of a ConfigError.
    monkeypatch.setenv(variable, "not json")
    with pytest.raises(ConfigError, match=f"{variable} cannot be read"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("project: [unclosed\n", r"malformed YAML: .* at line 2"),
        ("project: a\n  bad: indent\n", r"malformed YAML: .* at line 2"),
        ("- a\n- b\n", "expected a mapping"),
        ("server: {port: abc}\n", "server.port"),
        ("online_store: {type: memcached}\n", "online_store"),
        ("project: 'my project'\n", "not a plain identifier"),
        ('project: "shop\\n"\n', "not a plain identifier"),
        ("project: 'x; drop table projects'\n", "not a plain identifier"),
    ],
)
def test_bad_files_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_repo(tmp_path, text))


def test_config_errors_are_invalid_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidError):
        load_config(_repo(tmp_path, "nope: 1\n"))


def test_a_missing_repo_directory_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    # Regression: a mistyped repo path was accepted, and opening its registry created it.
    missing = tmp_path / "no_such_repo"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(missing)
    assert not missing.exists()


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("repo\x00x", "contains a NUL character"),
        ("~no-such-user-q/repo", "home directory"),
        ("r" * 300, "longer than 255 bytes"),
    ],
)
def test_a_repo_path_no_file_system_accepts_is_a_config_error(path: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_paths_no_file_system_accepts_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "quiver.yaml").write_text('data_dir: "da\\0ta"\n')
    config = load_config(tmp_path)
    with pytest.raises(ConfigError, match="contains a NUL character"):
        config.data_path  # noqa: B018
    with pytest.raises(ConfigError, match="home directory"):
        config.resolve("~no-such-user-q/x")


def test_build_config_validates_a_mapping(tmp_path: Path) -> None:
    config = build_config({"project": "p", "registry": "sqlite:///r.db", "repo_path": tmp_path})
    assert isinstance(config, RepoConfig)
    assert config.registry_url == f"sqlite:///{tmp_path.resolve()}/r.db"
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        build_config({"bogus": 1})


def test_registry_url_keeps_absolute_sqlite_and_memory_urls(tmp_path: Path) -> None:
    absolute = build_config({"registry": "sqlite:////var/lib/q.db", "repo_path": tmp_path})
    assert absolute.registry_url == "sqlite:////var/lib/q.db"
    memory = build_config({"registry": "sqlite:///:memory:", "repo_path": tmp_path})
    assert memory.registry_url == "sqlite:///:memory:"


def test_find_repo_looks_in_the_directory_and_its_parents(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    deeper = repo / "notebooks" / "eda"
    deeper.mkdir(parents=True)
    (repo / "quiver.yaml").write_text("project: shop\n")
    assert find_repo(repo) == repo.resolve()
    assert find_repo(deeper) == repo.resolve()


def test_find_repo_without_a_quiver_yaml_is_none(tmp_path: Path) -> None:
    if any((parent / "quiver.yaml").exists() for parent in tmp_path.parents):
        pytest.skip("a parent of the temporary directory holds a quiver.yaml")
    (tmp_path / "quiver.yaml").mkdir()  # a directory of that name is not a config file
    assert find_repo(tmp_path / "quiver.yaml") is None
    assert find_repo(tmp_path) is None


def test_a_dynamodb_online_store_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quiver.config import DynamoDBOnlineStoreConfig

    repo = _repo(
        tmp_path,
        "online_store: {type: dynamodb, region: eu-west-1, table_prefix: prod.,"
        " endpoint_url: 'http://localhost:8000'}\n",
    )
    store = load_config(repo).online_store
    assert isinstance(store, DynamoDBOnlineStoreConfig)
    assert (store.region, store.table_prefix, store.endpoint_url) == (
        "eu-west-1",
        "prod.",
        "http://localhost:8000",
    )
    assert store.access_key_id is None and store.expire_with_ttl and store.max_workers == 8
    # Switched from the environment: the file's sqlite settings are dropped.
    (tmp_path / "other").mkdir()
    sqlite = _repo(tmp_path / "other", "online_store: {type: sqlite, path: data/online.db}\n")
    monkeypatch.setenv("QUIVER_ONLINE_STORE__TYPE", "dynamodb")
    monkeypatch.setenv("QUIVER_ONLINE_STORE__REGION", "us-west-2")
    switched = load_config(sqlite).online_store
    assert isinstance(switched, DynamoDBOnlineStoreConfig) and switched.region == "us-west-2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("online_store: {type: dynamodb, table_prefx: q}\n", "did you mean 'table_prefix'"),
        ("online_store: {type: dynamodb, table_prefix: 'a b'}\n", "online_store.table_prefix"),
        ("online_store: {type: dynamodb, max_workers: 0}\n", "online_store.max_workers"),
        ("online_store: {type: dynamodb, url: x}\n", "unknown key 'online_store.url'"),
    ],
)
def test_bad_dynamodb_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_repo(tmp_path, text))
