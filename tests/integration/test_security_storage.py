"""API keys, permissions and the audit log on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from _registry import open_store
from quiver.definitions import Entity, FeatureService, FeatureView, Field, FileSource
from quiver.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    UnauthorizedError,
)
from quiver.security.audit import AuditEntry, AuditWriter
from quiver.security.keys import hash_secret, parse_expires, split_key
from quiver.security.permissions import Permission
from quiver.security.principal import Principal
from quiver.store import FeatureStore


def _rows(store: FeatureStore, table: str) -> list[tuple[object, ...]]:
    with store.registry.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).all()]


def test_keys_are_stored_only_hashed(store: FeatureStore) -> None:
    new = store.security.create_key("alice", "reader")
    assert re.fullmatch(r"qk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", new.key)
    key_id, secret = split_key(new.key)
    assert key_id == new.record.key_id
    rows = _rows(store, "api_keys")
    assert len(rows) == 1
    cells = " ".join(str(c) for c in rows[0])
    assert secret not in cells and new.key not in cells
    assert hash_secret(secret) in cells  # only the SHA-256 of the secret
    assert store.security.keys.verify(new.key).name == "alice"
    listed = store.security.keys.list()[0].to_dict()
    assert listed["status"] == "active" and "secret" not in str(listed).lower()


def test_bad_keys_are_refused_with_a_reason(store: FeatureStore) -> None:
    keys = store.security.keys
    new = store.security.create_key("bob", "writer")
    key_id, secret = split_key(new.key)
    for bad, reason in (
        ("nope", "malformed"),
        (f"qk_{key_id}_{'A' * 43}", "not valid"),
        (f"qk_{'0' * 16}_{secret}", "not valid"),
    ):
        with pytest.raises(UnauthorizedError, match=reason):
            keys.verify(bad)
    store.security.revoke_key("bob")
    with pytest.raises(UnauthorizedError, match="API key 'bob' was revoked at"):
        keys.verify(new.key)
    with pytest.raises(NotFoundError, match="revoked already"):
        store.security.revoke_key("bob")
    with pytest.raises(NotFoundError, match="does not exist"):
        store.security.revoke_key("nobody")
    # The name of a revoked key can be given again; an active one cannot.
    again = store.security.create_key("bob", "reader")
    with pytest.raises(ConflictError, match="revoke it first"):
        store.security.create_key("bob", "reader")
    assert keys.verify(again.key).role == "reader"
    old = keys.create("carol", "ml", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(UnauthorizedError, match="API key 'carol' expired at"):
        keys.verify(old.key)
    assert [k.status() for k in keys.list()] == ["revoked", "active", "expired"]
    with pytest.raises(InvalidError, match="unknown role 'root'"):
        keys.create("dave", "root")
    with pytest.raises(InvalidError, match="not valid"):
        keys.create("a b", "reader")


def test_expiry_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expires("90d", now) == now + timedelta(days=90)
    assert parse_expires("12h", now) == now + timedelta(hours=12)
    assert parse_expires("2w", now) == now + timedelta(weeks=2)
    assert parse_expires("never", now) is None
    assert parse_expires("2026-02-01", now) == datetime(2026, 2, 1, tzinfo=UTC)
    for bad in ("0d", "soon", "2025-01-01"):
        with pytest.raises(InvalidError):
            parse_expires(bad, now)


def test_key_changes_reach_every_project_and_the_cache(registry_url: str, tmp_path: Path) -> None:
    """A key revoked from another project's store (another process) is refused after the
    next registry check; a key limited to a project is refused in others."""
    with (
        open_store(registry_url, tmp_path, "shop") as shop,
        open_store(registry_url, tmp_path, "ads") as ads,
    ):
        key = shop.security.create_key("svc", "reader").key
        scoped = shop.security.create_key("shop_only", "reader", project="shop").key
        assert ads.security.authenticate(key).name == "svc"
        assert shop.security.authenticate(scoped).project == "shop"
        with pytest.raises(ForbiddenError, match="is for project 'shop', not 'ads'"):
            ads.security.authenticate(scoped)
        before = ads.registry.revision()
        principal = ads.security.authenticate(key)
        assert ads.security.authenticate(key) is principal  # cached
        shop.security.revoke_key("svc")
        assert ads.registry.revision() > before  # every project's revision moved
        ads.security.refresh()
        with pytest.raises(UnauthorizedError, match="revoked"):
            ads.security.authenticate(key)


def _demo_objects() -> list[object]:
    customer = Entity(name="customer", join_keys=["customer_id"])
    source = FileSource(name="src", path="data/x.parquet")
    fields = [Field(name="a", dtype="int64")]
    pii = FeatureView(
        name="pii_view", entities=["customer"], schema=fields, source="src", tags={"pii": "true"}
    )
    plain = FeatureView(name="plain_view", entities=["customer"], schema=fields, source="src")
    service = FeatureService(name="svc", features=["pii_view:a", "plain_view:*"])
    return [customer, source, pii, plain, service]


def test_permissions_stored_and_enforced(store: FeatureStore) -> None:
    store.apply(_demo_objects())
    security = store.security
    deny = Permission(
        name="no_pii",
        effect="deny",
        actions=["read_online", "read_offline"],
        roles=["reader"],
        kinds=["feature_view"],
        tags={"pii": "true"},
    )
    grant = Permission(name="bob_applies", actions=["apply"], principals=["bob"], names=["plain_*"])
    created = {"no_pii": "created", "bob_applies": "created"}
    assert security.apply_permissions([deny, grant]) == created
    assert security.apply_permissions([deny]) == {"no_pii": "unchanged"}
    changed = deny.model_copy(update={"description": "no PII for readers"})
    assert security.apply_permissions([changed]) == {"no_pii": "updated"}
    assert [p.name for p in security.policies.list()] == ["bob_applies", "no_pii"]
    bob = Principal(name="bob", roles=frozenset({"reader"}), authenticated=True)
    scoped = store.as_principal(bob)
    with pytest.raises(ForbiddenError) as err:
        scoped.get_online_features(feature_service="svc", entity_rows=[{"customer_id": 1}])
    assert "feature view 'pii_view'" in err.value.message
    assert "denied by permission 'no_pii'" in err.value.message
    assert err.value.details["resource"] == "feature_view:pii_view"
    plain = scoped.get_online_features(features=["plain_view:a"], entity_rows=[{"customer_id": 1}])
    assert plain.statuses is not None
    # An on-demand view computed from the denied view is denied too, naming that view.
    from quiver.features.on_demand import OnDemandFeatureView

    doubled = OnDemandFeatureView(
        name="doubled",
        sources=["pii_view"],
        schema=[Field(name="a2", dtype="int64", transformation="a * 2")],
    )
    store.apply([doubled])
    with pytest.raises(ForbiddenError, match="feature view 'pii_view'"):
        scoped.get_online_features(features=["doubled:a2"], entity_rows=[{"customer_id": 1}])
    on_demand_deny = Permission(
        name="no_doubled", effect="deny", actions=["read_online"], roles=["*"], names=["doub*"]
    )
    security.apply_permissions([on_demand_deny])
    admin = store.as_principal(Principal(name="root", roles=frozenset({"admin"})))
    with pytest.raises(ForbiddenError, match="on-demand feature view 'doubled'"):
        admin.get_online_features(features=["doubled:a2"], entity_rows=[{"customer_id": 1}])
    security.delete_permission("no_doubled")
    admin.get_online_features(features=["doubled:a2"], entity_rows=[{"customer_id": 1}])
    # The grant: bob may apply plain_view (role reader alone could not), not pii_view.
    view = next(o for o in _demo_objects() if getattr(o, "name", "") == "plain_view")
    scoped.apply([view.model_copy(update={"description": "by bob"})])  # type: ignore[attr-defined]
    assert store.history("plain_view")[-1].author == "bob"
    with pytest.raises(ForbiddenError, match="may not apply feature view 'pii_view'"):
        pii = next(o for o in _demo_objects() if getattr(o, "name", "") == "pii_view")
        scoped.apply([pii.model_copy(update={"description": "by bob"})])  # type: ignore[attr-defined]
    with pytest.raises(ForbiddenError, match="may not delete"):
        scoped.delete("feature_service", "svc")
    # The refusals of an SDK principal are in the audit log.
    refused = store.audit_log.query(principal="bob", outcome="forbidden")
    assert {r.resource for r in refused} >= {"feature_view:pii_view", "feature_service:svc"}
    security.delete_permission("no_pii")
    with pytest.raises(NotFoundError):
        security.delete_permission("no_pii")
    scoped.get_online_features(
        feature_service="svc", entity_rows=[{"customer_id": 1}], full_feature_names=True
    )


def test_audit_log_rows_and_filters(store: FeatureStore) -> None:
    log = store.audit_log
    start = datetime.now(UTC) - timedelta(seconds=1)
    store.apply(_demo_objects())
    store.security.create_key("eve", "admin")
    writer = AuditWriter(log)
    futures = [
        writer.submit(
            AuditEntry(
                project="shop",
                principal="eve",
                key_id="k1",
                action="push",
                outcome="ok" if i % 2 else "forbidden",
                resource=f"feature_view:v_{i}%",
                status=200,
                request_id=f"r{i}",
                client="10.0.0.1",
            )
        )
        for i in range(20)
    ]
    writer.flush()
    assert all(f.done() and f.exception() is None for f in futures)
    writer.close()
    rows = log.query(limit=1000)
    assert len(rows) == 22
    first = rows[-1]
    assert first.action == "apply" and first.channel == "sdk" and first.outcome == "ok"
    assert "feature_view:pii_view" in first.resource
    assert rows[-2].action == "create_key" and rows[-2].resource == "api_key:eve"
    assert len(log.query(principal="eve", limit=100)) == 20
    assert [r.resource for r in log.query(resource="v_1", limit=100)] == [
        f"feature_view:v_{i}%" for i in (19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 1)
    ]
    # % and _ are taken literally
    assert [r.resource for r in log.query(resource="v_1%")] == ["feature_view:v_1%"]
    assert len(log.query(outcome="forbidden", limit=100)) == 10
    assert len(log.query(action="push", limit=5)) == 5
    assert len(log.query(since=start)) == 22
    assert log.query(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    with pytest.raises(InvalidError):
        log.query(limit=0)
    other = open_store(store.registry.url, Path("."), "other")
    try:
        assert other.audit_log.query() == []  # per project
    finally:
        other.close()
