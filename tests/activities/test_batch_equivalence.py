"""The batch's bulk path answers exactly as activities sent one by one do."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from trofast.activities import service as activities
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion

PROGRAM = {
    "rules": [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {
            "id": "fika",
            "priority": 200,
            "lines": {"categories": ["bakery"]},
            "effect": {"kind": "multiplier", "percent": 300, "of": ["base"]},
            "limits": {"per_member": [{"period": "day", "points": 15}]},
        },
        {
            "id": "launch",
            "effect": {"kind": "fixed", "points": 7},
            "limits": {"budget": 40},
        },
        {"id": "cash", "effect": {"kind": "cashback", "basis_points": 150}},
        {
            "id": "card",
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "stamp", "card": "coffee"},
        },
    ],
    "stamp_cards": [{"id": "coffee", "name": "Kaffekort", "stamps": 4, "reward_points": 25}],
}


def _purchases(
    rng: random.Random, members: list[int], start: FixedClock
) -> list[dict[str, object]]:
    out = []
    for n in range(60):
        coffee, buns = rng.randint(0, 3), rng.randint(0, 2)
        lines = []
        if coffee:
            lines.append(
                {"sku": "latte", "category": "coffee", "quantity": coffee, "amount": 4200 * coffee}
            )
        if buns:
            lines.append(
                {"sku": "bulle", "category": "bakery", "quantity": buns, "amount": 3500 * buns}
            )
        if not lines:
            lines.append({"sku": "juice", "category": "cold", "quantity": 1, "amount": 2900})
        at = start.now() - timedelta(days=3) + timedelta(hours=n)
        out.append(
            {
                "type": "purchase",
                "external_id": f"r{n}",
                "member_id": members[n % len(members)],
                "amount": sum(int(line["amount"]) for line in lines),  # type: ignore[call-overload]
                "currency": "SEK",
                "occurred_at": at.isoformat(),
                "lines": lines,
            }
        )
    return out


def test_bulk_and_single_paths_agree(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fallback(*args: object) -> None:
        raise AssertionError("the batch left its bulk path")

    answers = []
    balances = []
    for mode in ("batch", "single"):
        program = make_program(**PROGRAM)
        pos = key_for(program, "pos")
        members = [
            client.post("/v1/members", json={"email": f"m{i}@example.com"}, headers=pos).json()[
                "id"
            ]
            for i in range(3)
        ]
        items = _purchases(random.Random(7), members, clock)
        if mode == "batch":
            monkeypatch.setattr(activities, "ingest_item", no_fallback)
            reply = client.post("/v1/activities/batch", json={"activities": items}, headers=pos)
            got = [item["result"] for item in reply.json()["items"]]
            monkeypatch.undo()
        else:
            got = [client.post("/v1/activities", json=i, headers=pos).json() for i in items]
        answers.append([(a["points"], a["cashback"], a["balance"], a["notes"]) for a in got])
        balances.append(
            [client.get(f"/v1/members/{m}/balance", headers=pos).json() for m in members]
        )
        with db.read() as conn:
            assert audit(conn, program.program_id) == []
    assert answers[0] == answers[1]
    strip = [[{k: v for k, v in b.items() if k != "member_id"} for b in run] for run in balances]
    assert strip[0] == strip[1]
    assert sum(a[0] for a in answers[0]) > 0 and strip[0][0]["stamps"]["coffee"] >= 0
