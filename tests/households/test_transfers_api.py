"""POST /v1/members/{ref}/transfers: the program's transfer policy, each refusal with its
stable code and nothing written, idempotent references, the event, and a race of
transfers from one sender that cannot overdraw it. SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from racing import MODES, race, racing_clients
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]
MakeProgram = Callable[..., ProgramVersion]
OPEN = {"enabled": True}


@pytest.fixture
def policy() -> Json:
    """The `transfers:` settings of the test's program (a test may override it)."""
    return OPEN


@pytest.fixture
def program(make_program: MakeProgram, policy: Json) -> ProgramVersion:
    return make_program(transfers=policy, expiry={"kind": "after_months", "months": 12})


def send(
    client: TestClient, headers: Headers, sender: Any, to: Any, points: int, reference: str
) -> httpx.Response:
    return client.post(
        f"/v1/members/{sender}/transfers",
        headers=headers,
        json={"to": to, "points": points, "reference": reference},
    )


def test_a_transfer_moves_points_and_raises_an_event(
    client: TestClient,
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    enrol: Callable[..., Json],
    give: Callable[[Json, int], None],
    available: Callable[[Json], int],
    events: Callable[[str], list[Json]],
) -> None:
    anna, bo = enrol(pos), enrol(pos)
    give(anna, 100)
    r = send(client, pos, anna["loyalty_number"], bo["loyalty_number"], 60, "gift-1")
    assert r.status_code == 201, r.text
    out = r.json()
    assert (
        out
        | {
            "from_member_id": anna["id"],
            "to_member_id": bo["id"],
            "points": 60,
            "reference": "gift-1",
            "available": 40,
            "replayed": False,
        }
        == out
    )
    assert (available(anna), available(bo)) == (40, 60)
    kinds = [
        e["kind"] for e in client.get(f"/v1/members/{bo['id']}/ledger", headers=pos).json()["items"]
    ]
    assert kinds == ["transfer_in"]
    sender_ledger = client.get(f"/v1/members/{anna['id']}/ledger", headers=pos).json()["items"]
    assert (sender_ledger[0]["kind"], sender_ledger[0]["points"]) == ("transfer_out", -60)
    # The points keep their expiry: the recipient's are listed as expiring with the sender's.
    expiring = client.get("/v1/expiring?within_days=365", headers=pos).json()["items"]
    by_member = {m["member_id"]: m for m in expiring}
    assert (
        by_member[bo["id"]]["earliest_expires_at"] == by_member[anna["id"]]["earliest_expires_at"]
    )
    ((event),) = events("points.transferred")
    assert event["payload"] == {
        "transaction_id": out["transaction_id"],
        "from_member_id": anna["id"],
        "to_member_id": bo["id"],
        "points": 60,
        "reference": "gift-1",
    }

    # The same reference and body replays; another body is a conflict.
    again = send(client, pos, anna["id"], bo["id"], 60, "gift-1")
    assert again.status_code == 201 and again.json()["replayed"] is True
    assert again.json()["transaction_id"] == out["transaction_id"]
    r = send(client, pos, anna["id"], bo["id"], 10, "gift-1")
    assert r.status_code == 409 and r.json()["code"] == "reference_reused"
    # An Idempotency-Key replays the stored answer.
    keyed = pos | {"Idempotency-Key": "t-1"}
    first = send(client, keyed, anna["id"], bo["id"], 5, "gift-2")
    second = send(client, keyed, anna["id"], bo["id"], 5, "gift-2")
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true" and second.json() == first.json()
    assert (available(anna), available(bo)) == (35, 65)
    assert len(events("points.transferred")) == 2
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


@pytest.mark.parametrize(
    "policy",
    [
        {
            "enabled": True,
            "household_only": True,
            "min_points": 10,
            "max_points_per_transfer": 50,
            "max_points_per_month": 80,
        }
    ],
)
def test_every_refusal_has_its_code_and_writes_nothing(
    client: TestClient,
    clock: FixedClock,
    program: ProgramVersion,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
    give: Callable[[Json, int], None],
    problem: Callable[..., Json],
    snapshot: Callable[..., Json],
) -> None:
    anna, bo, stranger = enrol(pos), enrol(pos), enrol(pos)
    give(anna, 200)
    give(bo, 5)
    r = client.post("/v1/households", headers=pos, json={"owner": anna["id"], "name": "Home"})
    home = r.json()
    token = client.post(
        f"/v1/households/{home['id']}/invites", headers=pos, json={"member": bo["id"]}
    ).json()["token"]
    assert client.post(f"/v1/households/invites/{token}/accept", headers=pos).status_code == 200

    def refused(status: int, code: str, sender: Json, to: Any, points: int) -> Json:
        before = snapshot(anna, bo, stranger)
        body = problem(send(client, pos, sender["id"], to, points, "ref-1"), status, code)
        assert snapshot(anna, bo, stranger) == before
        return body

    refused(422, "self_transfer", anna, anna["loyalty_number"], 10)
    refused(409, "not_same_household", anna, stranger["id"], 10)
    refused(409, "not_same_household", stranger, anna["id"], 10)
    body = refused(422, "transfer_too_small", anna, bo["id"], 9)
    assert body["min_points"] == 10
    refused(422, "transfer_too_large", anna, bo["id"], 51)
    refused(422, "insufficient_points", bo, anna["id"], 10)
    refused(404, "member_not_found", anna, 10**12, 10)

    # The monthly limit counts this calendar month in the program's zone (Stockholm).
    clock.set(datetime(2026, 1, 31, 12, tzinfo=UTC))
    assert send(client, pos, anna["id"], bo["id"], 50, "jan-1").status_code == 201
    assert send(client, pos, anna["id"], bo["id"], 30, "jan-2").status_code == 201
    body = refused(422, "monthly_transfer_limit", anna, bo["id"], 10)
    assert (body["sent_this_month"], body["remaining"]) == (80, 0)
    # Bo's own limit is untouched by what Anna sent.
    assert send(client, pos, bo["id"], anna["id"], 10, "bo-1").status_code == 201
    clock.set(datetime(2026, 1, 31, 23, 30, tzinfo=UTC))  # 00:30 on 1 February in Stockholm
    assert send(client, pos, anna["id"], bo["id"], 50, "feb-1").status_code == 201
    body = refused(422, "monthly_transfer_limit", anna, bo["id"], 31)
    assert body["remaining"] == 30

    r = client.patch(f"/v1/members/{bo['id']}", headers=admin, json={"status": "suspended"})
    assert r.status_code == 200, r.text
    refused(409, "member_suspended", anna, bo["id"], 10)
    refused(409, "member_suspended", bo, anna["id"], 10)


@pytest.mark.parametrize("policy", [{"enabled": False}])
def test_transfers_are_off_unless_the_program_allows_them(
    client: TestClient,
    pos: Headers,
    enrol: Callable[..., Json],
    give: Callable[[Json, int], None],
    problem: Callable[..., Json],
    snapshot: Callable[..., Json],
) -> None:
    anna, bo = enrol(pos), enrol(pos)
    give(anna, 100)
    before = snapshot(anna, bo)
    problem(send(client, pos, anna["id"], bo["id"], 10, "x"), 403, "transfers_disabled")
    assert snapshot(anna, bo) == before


# -- races ------------------------------------------------------------------------------------

THREADS = 12
pytestmark = pytest.mark.filterwarnings(
    "ignore::pydantic.warnings.UnsupportedFieldAttributeWarning"
)


@pytest.fixture(params=MODES)
def clients(
    request: pytest.FixtureRequest, db: Database, clock: FixedClock, client: TestClient
) -> Iterator[list[TestClient]]:
    with racing_clients(request.param, db, clock, client, THREADS) as racing:
        yield racing


@pytest.mark.parametrize("policy", [{"enabled": True, "max_points_per_month": 1000}])
def test_racing_transfers_cannot_overdraw_the_sender(
    clients: list[TestClient],
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    enrol: Callable[..., Json],
    give: Callable[[Json, int], None],
    available: Callable[[Json], int],
) -> None:
    sender = enrol(pos)
    recipients = [enrol(pos) for _ in range(THREADS)]
    for points in (100, 150, 250):
        give(sender, points)
    responses = race(
        clients,
        lambda c, i: send(c, pos, sender["id"], recipients[i]["id"], 100, f"race-{i}"),
    )
    outcomes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcomes == {(201, None): 5, (422, "insufficient_points"): THREADS - 5}, outcomes
    assert sorted(r.json()["available"] for r in responses if r.status_code == 201) == [
        0,
        100,
        200,
        300,
        400,
    ]
    assert available(sender) == 0
    assert sum(available(r) for r in recipients) == 500
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


@pytest.mark.parametrize("policy", [{"enabled": True, "max_points_per_month": 300}])
def test_racing_transfers_cannot_exceed_the_monthly_limit(
    clients: list[TestClient],
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    enrol: Callable[..., Json],
    give: Callable[[Json, int], None],
    available: Callable[[Json], int],
) -> None:
    sender, recipient = enrol(pos), enrol(pos)
    give(sender, 10_000)
    responses = race(
        clients,
        lambda c, i: send(c, pos, sender["id"], recipient["id"], 100, f"race-{i}"),
    )
    outcomes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert outcomes == {(201, None): 3, (422, "monthly_transfer_limit"): THREADS - 3}, outcomes
    assert (available(sender), available(recipient)) == (9_700, 300)
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
