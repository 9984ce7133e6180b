"""Permission evaluation: roles, policies, precedence (deny, then allow, then roles)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.errors import InvalidError, NotFoundError
from quiver.security.permissions import (
    ACTIONS,
    KINDS,
    ROLE_ACTIONS,
    ROLES,
    Permission,
    Resource,
    decide,
    load_permissions,
)
from quiver.security.principal import Principal


def _p(name: str = "alice", *roles: str) -> Principal:
    return Principal(name=name, roles=frozenset(roles or ("reader",)), authenticated=True)


VIEW = Resource("feature_view", "customer_stats", {"team": "growth"})
PII = Resource("feature_view", "pii_emails", {"pii": "true"})


def test_roles_include_each_other() -> None:
    assert ROLES == ("reader", "writer", "ml", "admin")
    assert ROLE_ACTIONS["reader"] == {"describe", "read_online", "read_offline"}
    assert ROLE_ACTIONS["reader"] < ROLE_ACTIONS["writer"] < ROLE_ACTIONS["ml"]
    assert ROLE_ACTIONS["writer"] - ROLE_ACTIONS["reader"] == {"write", "apply", "delete"}
    assert ROLE_ACTIONS["ml"] - ROLE_ACTIONS["writer"] == {"train", "promote", "predict"}
    assert ROLE_ACTIONS["admin"] == set(ACTIONS)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ACTIONS)
def test_role_defaults_without_policies(role: str, action: str) -> None:
    decision = decide(_p("x", role), action, VIEW, [])
    assert decision.allowed is (action in ROLE_ACTIONS[role])
    assert decision.permission is None
    if not decision.allowed:
        assert f"does not grant {action}" in decision.reason


def test_deny_by_tag_and_pattern() -> None:
    deny = Permission(
        name="no_pii", effect="deny", actions=["read_online"], roles=["reader"], tags={"pii": "*"}
    )
    assert not decide(_p(), "read_online", PII, [deny]).allowed
    assert decide(_p(), "read_online", VIEW, [deny]).allowed  # no pii tag
    assert decide(_p(), "read_offline", PII, [deny]).allowed  # another action
    assert decide(_p("bob", "writer"), "read_online", PII, [deny]).allowed  # another role
    by_name = Permission(
        name="no_emails", effect="deny", actions=["*"], principals=["al*"], names=["*_emails"]
    )
    decision = decide(_p(), "describe", PII, [by_name])
    assert not decision.allowed and decision.permission == "no_emails"
    assert "denied by permission 'no_emails'" in decision.reason
    assert decide(_p(), "describe", VIEW, [by_name]).allowed


def test_explicit_allow_grants_beyond_the_role() -> None:
    grant = Permission(
        name="growth_writes",
        actions=["write", "apply"],
        principals=["alice"],
        kinds=["feature_view"],
        tags={"team": "growth"},
    )
    assert decide(_p(), "write", VIEW, [grant]).allowed
    assert not decide(_p(), "write", PII, [grant]).allowed  # not tagged team=growth
    assert not decide(_p(), "delete", VIEW, [grant]).allowed  # not granted
    model = Resource("model", "customer_stats")
    assert not decide(_p(), "write", model, [grant]).allowed  # another kind


def test_deny_wins_over_allow_for_everyone_including_admins() -> None:
    allow = Permission(name="a", actions=["*"], principals=["*"])
    deny = Permission(name="d", effect="deny", actions=["delete"], roles=["*"], names=["cust*"])
    for policies in ([allow, deny], [deny, allow]):
        assert not decide(_p("root", "admin"), "delete", VIEW, policies).allowed
        assert decide(_p("root", "admin"), "apply", VIEW, policies).allowed


def test_kind_as_a_whole() -> None:
    """A list route asks about the kind: a narrow deny does not hide the whole kind, a deny of
    every object does; an allow of some object makes the kind reachable."""
    kind = Resource("feature_view")
    narrow = Permission(name="n", effect="deny", actions=["describe"], roles=["*"], names=["x*"])
    tagged = Permission(name="t", effect="deny", actions=["describe"], roles=["*"], tags={"a": "b"})
    every = Permission(name="e", effect="deny", actions=["describe"], roles=["*"], names=["*"])
    assert decide(_p(), "describe", kind, [narrow, tagged]).allowed
    assert not decide(_p(), "describe", kind, [every]).allowed
    some = Permission(name="s", actions=["apply"], principals=["alice"], names=["mine_*"])
    assert decide(_p(), "apply", kind, [some]).allowed
    assert not decide(_p(), "apply", kind, []).allowed
    assert kind.label() == "feature views" and Resource("entity").label() == "entities"


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="say who"):
        Permission(name="x", actions=["describe"])
    with pytest.raises(ValueError, match="at least one action"):
        Permission(name="x", actions=[], roles=["*"])
    with pytest.raises(ValueError):
        Permission(name="x", actions=["fly"], roles=["*"])
    with pytest.raises(ValueError):
        Permission(name="x", actions=["describe"], roles=["*"], kinds=["table"])
    with pytest.raises(ValueError):
        Permission(name="x y", actions=["describe"], roles=["*"])


def test_load_permissions(tmp_path: Path) -> None:
    file = tmp_path / "perms.yaml"
    file.write_text(
        "permissions:\n"
        "  - {name: a, effect: deny, actions: [read_online], roles: [reader],\n"
        "     tags: {pii: 'true'}}\n"
        "  - {name: b, actions: ['*'], principals: [ci-*], kinds: [feature_view]}\n"
    )
    policies = load_permissions(file)
    assert [p.name for p in policies] == ["a", "b"]
    assert policies[0].tags == {"pii": "true"}
    file.write_text("permissions:\n  - {name: a, actions: [read_online]}\n")
    with pytest.raises(InvalidError, match=r"permission 'a' is invalid: .*say who"):
        load_permissions(file)
    file.write_text("- {name: a, actions: [describe], roles: ['*']}\n" * 2)
    with pytest.raises(InvalidError, match="defined twice"):
        load_permissions(file)
    file.write_text("permissions: 3\n")
    with pytest.raises(InvalidError, match="list of policies"):
        load_permissions(file)
    with pytest.raises(NotFoundError):
        load_permissions(tmp_path / "missing.yaml")


# -- property: decide() against a brute-force oracle -------------------------------------------

_NAMES = ["alice", "bob", "ci-bot"]
_OBJECTS = ["customer_stats", "pii_emails", "orders"]
_PATTERNS = ["*", "customer_*", "pii_*", "orders", "x*"]
_TAGS = [{}, {"pii": "true"}, {"team": "growth"}, {"pii": "true", "team": "growth"}]

policies_st = st.lists(
    st.builds(
        Permission,
        name=st.sampled_from(["p1", "p2", "p3", "p4"]),
        effect=st.sampled_from(["allow", "deny"]),
        actions=st.lists(st.sampled_from([*ACTIONS, "*"]), min_size=1, max_size=3).map(tuple),
        principals=st.lists(st.sampled_from([*_NAMES, "*", "a*"]), max_size=2).map(tuple),
        roles=st.lists(st.sampled_from([*ROLES, "*"]), min_size=1, max_size=2).map(tuple),
        kinds=st.lists(st.sampled_from(KINDS), max_size=2).map(tuple),
        names=st.lists(st.sampled_from(_PATTERNS), max_size=2).map(tuple),
        tags=st.sampled_from([{}, {"pii": "true"}, {"team": "*"}]),
    ),
    max_size=5,
)


def _oracle(principal: Principal, action: str, res: Resource, policies: list[Permission]) -> bool:
    import fnmatch

    def matches(p: Permission) -> bool:
        who = any(fnmatch.fnmatchcase(principal.name, x) for x in p.principals) or any(
            fnmatch.fnmatchcase(r, x) for r in principal.roles for x in p.roles
        )
        what = "*" in p.actions or action in p.actions
        kind = not p.kinds or res.kind in p.kinds
        assert res.name is not None
        name = not p.names or any(fnmatch.fnmatchcase(res.name, x) for x in p.names)
        tags = all(k in res.tags and fnmatch.fnmatchcase(res.tags[k], v) for k, v in p.tags.items())
        return who and what and kind and name and tags

    matching = [p for p in policies if matches(p)]
    if any(p.effect == "deny" for p in matching):
        return False
    if matching:
        return True
    return any(action in ROLE_ACTIONS[r] for r in principal.roles)


@settings(max_examples=300, deadline=None)
@given(
    policies=policies_st,
    name=st.sampled_from(_NAMES),
    roles=st.sets(st.sampled_from(ROLES), min_size=1, max_size=2),
    action=st.sampled_from(ACTIONS),
    kind=st.sampled_from(KINDS),
    obj=st.sampled_from(_OBJECTS),
    tags=st.sampled_from(_TAGS),
)
def test_decide_matches_the_oracle(
    policies: list[Permission],
    name: str,
    roles: set[str],
    action: str,
    kind: str,
    obj: str,
    tags: dict[str, str],
) -> None:
    principal = Principal(name=name, roles=frozenset(roles))
    resource = Resource(kind, obj, tags)
    decision = decide(principal, action, resource, policies)
    assert decision.allowed is _oracle(principal, action, resource, policies)
    # Adding a matching deny always denies; adding a matching allow never turns a deny of a
    # matching deny policy into an allow.
    deny = Permission(name="zz", effect="deny", actions=[action], principals=[name])
    assert not decide(principal, action, resource, [*policies, deny]).allowed
    allow = Permission(name="zz", actions=[action], principals=[name])
    assert decide(principal, action, resource, [*policies, allow]).allowed is (
        not any(p.effect == "deny" and p.matches(principal, action, resource) for p in policies)
    )
