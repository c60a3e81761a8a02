"""Returning a purchase whose points already expired takes nothing from other points."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion
from trofast.worker.jobs import run_due


def test_expired_points_are_written_off_not_taken_twice(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
) -> None:
    program = make_program(expiry={"kind": "after_months", "months": 1})
    pos = key_for(program, "pos")
    member = client.post("/v1/members", json={"email": "x@example.com"}, headers=pos).json()

    def buy(external_id: str, amount: int) -> None:
        body = {
            "type": "purchase",
            "external_id": external_id,
            "member_id": member["id"],
            "amount": amount,
            "currency": "SEK",
        }
        assert client.post("/v1/activities", json=body, headers=pos).status_code == 201

    def give_back(external_id: str, original: str, amount: int) -> dict[str, object]:
        body = {
            "type": "return",
            "external_id": external_id,
            "original_external_id": original,
            "amount": amount,
        }
        answer = client.post("/v1/activities", json=body, headers=pos)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    buy("old", 20000)  # 20 points, expiring in a month
    clock.advance(timedelta(days=40))
    run_due(db, clock, [program.program_id])
    buy("new", 10000)  # 10 fresh points
    first = give_back("r1", "old", 5000)  # a quarter: 5 points, all of them expired
    assert (first["points"], first["written_off"], first["uncollected"]) == (-5, 5, 0)
    rest = give_back("r2", "old", 15000)  # the rest: 15 more, also expired
    assert (rest["points"], rest["written_off"], rest["uncollected"]) == (-15, 15, 0)
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert (balance["available"], balance["debt"], balance["lifetime_expired"]) == (10, 0, 20)
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
