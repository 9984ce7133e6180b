"""Small pure pieces of quiver.monitoring: PSI, the lineage matching, the catalogue's rules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from quiver.monitoring.catalog import _rules, _summary
from quiver.monitoring.drift import psi
from quiver.monitoring.lineage import _uses, parse_target


def test_psi_of_equal_distributions_is_zero_and_grows_with_the_shift() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == 0.0
    small = psi([0.25] * 4, [0.3, 0.25, 0.25, 0.2])
    large = psi([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.1 < 0.2 < large
    # by hand: sum((a - e) * ln(a / e))
    expected = 0.05 * math.log(0.3 / 0.25) + (-0.05) * math.log(0.2 / 0.25)
    assert small == pytest.approx(expected)
    assert math.isfinite(psi([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]))  # empty bins are floored


def test_lineage_matching() -> None:
    refs = ["v:a", "v:*", "w:a", "v:b"]
    assert _uses(refs, "v", None) == ["a", "*", "b"]
    assert _uses(refs, "v", "a") == ["a"]
    assert _uses(["v:*"], "v", "z") == ["z"]
    assert _uses(["w:a"], "v", "a") == []
    assert parse_target("v:f") == ("v", "f")
    assert parse_target("v") == ("v", None)
    assert parse_target("v:*") == ("v", None)


def test_catalog_renders_validation_rules_when_a_field_has_them() -> None:
    plain = SimpleNamespace(name="x")
    assert _rules(plain) == ""
    ruled = SimpleNamespace(
        validation_rules=[{"min": 0}], allowed_values=["a", "b"], default_value=0
    )
    assert (
        _rules(ruled)
        == "validation_rules: [{'min': 0}]; allowed_values: ['a', 'b']; default_value: 0"
    )
    assert _summary({"null_rate": 0.25, "mean": 1.5, "min": 0, "max": 3, "distinct": 4}) == (
        "null 25.0%, mean 1.5, min 0, max 3, ~4 distinct"
    )
