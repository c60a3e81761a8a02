"""No double spending under concurrency (DESIGN rule 5): real threads, real transactions,
on PostgreSQL and on file-backed SQLite.

Two ways to race: threads sharing one app (one process, one engine), and threads that
each build their own app over their own engine (like separate server processes, so on
SQLite the writers really contend for the file lock)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from racing import MODES, race, racing_clients
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit

THREADS = 20
# FastAPI builds some request models on an app's first requests inside
# warnings.catch_warnings(), which is not thread-safe: fresh apps raced from many threads
# can leak pydantic's harmless UnsupportedFieldAttributeWarning.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pydantic.warnings.UnsupportedFieldAttributeWarning"
)
Headers = dict[str, str]


@pytest.fixture(params=MODES)
def clients(
    request: pytest.FixtureRequest, db: Database, clock: FixedClock, client: TestClient
) -> Iterator[list[TestClient]]:
    with racing_clients(request.param, db, clock, client, THREADS) as racing:
        yield racing


@pytest.fixture
def member_with_500(
    pos: Headers, enrol: Callable[..., Any], buy: Callable[..., Any]
) -> dict[str, Any]:
    member: dict[str, Any] = enrol(pos)
    for amount in (100_000, 150_000, 250_000):  # three lots: 100 + 150 + 250 points
        buy(pos, member, amount)
    return member


def test_twenty_spenders_of_one_balance(
    clients: list[TestClient],
    db: Database,
    program: Any,
    pos: Headers,
    member_with_500: dict[str, Any],
    available: Callable[..., int],
) -> None:
    url = f"/v1/members/{member_with_500['loyalty_number']}/spend"
    responses = race(
        clients,
        lambda c, i: c.post(url, headers=pos, json={"points": 100, "reference": f"order-{i}"}),
    )
    outcomes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcomes == {(201, None): 5, (422, "insufficient_points"): 15}, outcomes
    assert sorted(r.json()["available"] for r in responses if r.status_code == 201) == [
        0,
        100,
        200,
        300,
        400,
    ]
    assert available(pos, member_with_500["id"]) == 0
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_twenty_retries_of_one_spend(
    clients: list[TestClient],
    db: Database,
    program: Any,
    pos: Headers,
    member_with_500: dict[str, Any],
    available: Callable[..., int],
) -> None:
    """The same spend of the whole balance sent 20 times at once is spent once, and every
    other copy is answered as a replay: never a second debit, never "insufficient points"."""
    url = f"/v1/members/{member_with_500['id']}/spend"
    responses = race(
        clients, lambda c, i: c.post(url, headers=pos, json={"points": 500, "reference": "order-1"})
    )
    outcomes = Counter((r.status_code, r.json().get("replayed")) for r in responses)
    assert outcomes == {(201, False): 1, (201, True): 19}, [r.text for r in responses]
    assert {(r.json()["points"], r.json()["available"]) for r in responses} == {(-500, 0)}
    assert available(pos, member_with_500["id"]) == 0
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_twenty_copies_of_one_receipt(
    clients: list[TestClient],
    db: Database,
    program: Any,
    pos: Headers,
    enrol: Callable[..., Any],
    available: Callable[..., int],
) -> None:
    member = enrol(pos)
    body = {
        "type": "purchase",
        "external_id": "receipt-1",
        "amount": 25_000,
        "currency": "SEK",
        "member_id": member["id"],
    }
    responses = race(clients, lambda c, i: c.post("/v1/activities", headers=pos, json=body))
    fresh = [r for r in responses if r.status_code == 201 and not r.json()["replayed"]]
    assert len(fresh) == 1, [r.text for r in responses]
    for r in responses:
        assert (r.status_code == 201 and r.json()["points"] == 25) or (
            r.status_code == 409 and r.json()["code"] == "external_id_in_flight"
        ), r.text
    assert available(pos, member["id"]) == 25
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
