"""Condition clauses on values of every JSON shape: a clause never raises, whatever an
activity's attributes hold (an `in` over an object attribute used to be a TypeError, a 500)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec
from trofast.rules.conditions import compile_clause
from trofast.rules.document import Clause
from trofast.rules.engine import ActivityFacts, MemberSnapshot, evaluate

FIELD = "activity.attributes.x"
SHAPES: list[Any] = [None, 1, "a", True, 2.5, [], [1, 2], {}, {"a": 1}, [{"a": 1}], [[1], [2]]]


def holds(op: str, value: Any, found: Any) -> bool:
    return compile_clause(Clause(field=FIELD, op=op, value=value))({FIELD: found})


@pytest.mark.parametrize("found", SHAPES, ids=repr)
@pytest.mark.parametrize(
    "listed", [[1, "a"], [[1, 2]], [{"a": 1}], [{"a": 1}, 1, [1, 2]], []], ids=repr
)
def test_in_and_not_in_never_raise_and_are_opposites(found: Any, listed: list[Any]) -> None:
    inside = holds("in", listed, found)
    assert holds("not_in", listed, found) is (not inside)
    assert inside is any(found == v for v in listed)


def test_objects_and_lists_compare_by_equality() -> None:
    assert holds("in", [1, 2], {"a": 1}) is False
    assert holds("not_in", [1, 2], {"a": 1}) is True
    assert holds("in", [{"a": 1}], {"a": 1}) is True
    assert holds("not_in", [{"a": 1}], {"a": 2}) is True
    assert holds("in", [[1, 2], 3], [1, 2]) is True  # a list attribute equal to a listed list
    assert holds("in", [[1, 2]], [2, 1]) is False
    assert holds("in", ["x"], [{"b": [1]}]) is False  # a list holding an object
    assert holds("in", [[{"b": [1]}]], [{"b": [1]}]) is True
    assert holds("in", ["a", "b"], "a") is True  # the ordinary case is a set look-up


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "exists"])
@pytest.mark.parametrize("found", SHAPES, ids=repr)
def test_other_operators_never_raise(op: str, found: Any) -> None:
    holds(op, 1, found)
    holds("between", [1, 2], found)


def test_an_event_rule_over_an_object_attribute() -> None:
    spec = ProgramSpec.model_validate(
        {
            "key": "conditions",
            "name": "Conditions",
            "currency": "SEK",
            "timezone": "Europe/Stockholm",
            "rules": [
                {
                    "id": "review",
                    "on": "review",
                    "when": [{"field": FIELD, "op": "not_in", "value": ["spam", "bot"]}],
                    "effect": {"kind": "fixed", "points": 50},
                }
            ],
        }
    )
    member = MemberSnapshot(id=1, status="active")
    at = datetime(2026, 1, 15, 10, tzinfo=UTC)
    for value, points in [({"nested": True}, 50), (["spam"], 50), ("spam", 0), ("good", 50)]:
        facts = ActivityFacts("event", at, event_type="review", attributes={"x": value})
        assert evaluate(spec, facts, member).total_points == points, value


def test_an_object_attribute_is_no_server_error(
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
) -> None:
    program = make_program(
        rules=[
            {
                "id": "review",
                "on": "review",
                "when": [{"field": FIELD, "op": "in", "value": ["five", "four"]}],
                "effect": {"kind": "fixed", "points": 50},
            }
        ]
    )
    pos = key_for(program, "pos")
    member = client.post("/v1/members", json={"email": "c@example.com"}, headers=pos).json()
    for n, value in enumerate([{"stars": 5}, ["five"], "five"]):
        body = {
            "type": "event",
            "external_id": f"review-{n}",
            "member_id": member["id"],
            "event_type": "review",
            "attributes": {"x": value},
        }
        r = client.post("/v1/activities", json=body, headers=pos)
        assert r.status_code == 201, r.text
        assert r.json()["points"] == (50 if value == "five" else 0)
