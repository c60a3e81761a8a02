"""The rule part of the program document: every mistake is rejected with the path to it."""

from __future__ import annotations

from typing import Any

import pytest

from trofast.programs.spec import SpecError, parse_document, validate_data

BASE: dict[str, Any] = {
    "id": "base",
    "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000},
}
CARD = {"id": "coffee", "name": "Coffee", "stamps": 10, "reward_points": 100}


def document(*rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"key": "shop", "name": "Shop", "currency": "SEK", "rules": list(rules), **fields}


def errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        validate_data(data)
    return caught.value.errors


def double(rule_id: str, of: list[str], priority: int = 200, **fields: Any) -> dict[str, Any]:
    effect = {"kind": "multiplier", "percent": 200, "of": of}
    return {"id": rule_id, "priority": priority, "effect": effect, **fields}


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        (
            document({**BASE, "when": [{"field": "member.shoe_size", "op": "gt", "value": 42}]}),
            "rules.0.when.0",
            "unknown field 'member.shoe_size' (see docs/program-file.md)",
        ),
        (
            document(BASE, {**BASE, "id": "x", "lines": {"when": [{"field": "line.colour"}]}}),
            "rules.1.lines.when.0",
            "unknown field 'line.colour' (see docs/program-file.md)",
        ),
        (
            document({**BASE, "when": [{"field": "basket.total", "value": 1}]}),
            "rules.0.when.0.field",
            "String should match pattern '^(activity|line|member|tier|now)(\\.[a-z0-9_]+)+$'",
        ),
        (
            document({**BASE, "when": [{"field": "now.hour", "op": "between", "value": 14}]}),
            "rules.0.when.0",
            "'between' needs a [low, high] value",
        ),
        (
            document(double("double", ["base"], priority=50), BASE),
            "rules.0.effect.of",
            "'base' must run before 'double' (lower priority number)",
        ),
        (
            document(BASE, double("double", ["bas"])),
            "rules.1.effect.of",
            "no rule 'bas'",
        ),
        (
            document(BASE, double("a", ["base"], priority=100)),  # same priority: 'a' < 'base'
            "rules.1.effect.of",
            "'base' must run before 'a' (lower priority number)",
        ),
        (
            document(
                BASE,
                {
                    "id": "early",
                    "priority": 50,
                    "group": "g",
                    "effect": {"kind": "fixed", "points": 5},
                },
                double("late", ["base"], group="g"),
            ),
            "rules.2.effect.of",
            "'base' must run before every rule of group 'g' (lower priority number)",
        ),
        (
            document({"id": "s", "effect": {"kind": "stamp", "card": "tea"}}, stamp_cards=[CARD]),
            "rules.0.effect.card",
            "no stamp card 'tea'",
        ),
        (
            document(BASE, {**BASE, "priority": 1}, {**BASE, "id": "other"}),
            "rules.1.id",
            "'base' is used twice",
        ),
        (
            document(BASE, stamp_cards=[CARD, {**CARD, "name": "Again"}]),
            "stamp_cards.1.id",
            "'coffee' is used twice",
        ),
        (
            document(BASE, {"id": "w", "on": "workshop", "effect": {"kind": "fixed", "points": 5}}),
            "rules.1.on",
            "unknown event type 'workshop'; declare it in event_types",
        ),
        (
            document({**BASE, "active_from": "2026-02-01", "active_until": "2026-01-31"}),
            "rules.0",
            "active_from is after active_until",
        ),
        (
            document({**BASE, "bonus": 5}),
            "rules.0.bonus",
            "Extra inputs are not permitted",
        ),
        (
            document({**BASE, "limits": {"per_member": [{"period": "day"}]}}),
            "rules.0.limits.per_member.0",
            "give points and/or times",
        ),
        (
            document({**BASE, "effect": {"kind": "multiplier", "percent": 100, "of": ["x"]}}),
            "rules.0.effect.multiplier.percent",
            "Input should be greater than 100",
        ),
    ],
)
def test_rejected_with_path(data: dict[str, Any], path: str, reason: str) -> None:
    assert errors(data) == [(path, reason)]


def test_declared_custom_event_type_is_accepted() -> None:
    rule = {"id": "w", "on": "workshop", "effect": {"kind": "fixed", "points": 5}}
    spec = validate_data(document(rule, event_types=["workshop"]))
    assert spec.rules is not None and spec.rules[0].on == "workshop"
    assert errors(document(rule, event_types=["Workshop!"]))[0][0] == "event_types.0"


def test_yaml_document_errors_name_the_path() -> None:
    text = """
key: shop
name: Shop
currency: SEK
rules:
  - id: base
    effect: {kind: per_amount, points: 1, per_amount: 1000}
  - id: weekend
    priority: 200
    when: [{field: now.weekday, op: in, value: [6, 7]}]
    effect: {kind: multiplier, percent: 200, of: [base, missing]}
"""
    with pytest.raises(SpecError) as caught:
        parse_document(text)
    assert caught.value.errors == [("rules.1.effect.of", "no rule 'missing'")]
