"""/v1/activities: purchases, returns, custom events, idempotency, errors that write nothing,
and batches. The test program earns 1 point per full 10.00 SEK (amount 1000)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from trofast.activities.models import activities
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.models import ledger_transactions
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec

Headers = dict[str, str]
Json = dict[str, Any]


@pytest.fixture
def member(pos: Headers, enrol: Callable[..., Json]) -> Json:
    return enrol(pos)


def purchase(
    member: Json | None, external_id: str = "r1", amount: int = 25000, **extra: Any
) -> Json:
    body: Json = {
        "type": "purchase",
        "external_id": external_id,
        "amount": amount,
        "currency": "SEK",
        **extra,
    }
    if member is not None:
        body["member_id"] = member["id"]
    return body


def ret(original: str, external_id: str, **extra: Any) -> Json:
    return {"type": "return", "external_id": external_id, "original_external_id": original, **extra}


ME: Json = {"id": -1}  # stands for the test's member in parameters

LINES = [
    {"sku": "coffee", "category": "drinks", "quantity": 2, "amount": 9000},
    {"sku": "bun", "category": "bakery", "quantity": 3, "amount": 6000},
    {"sku": "mug", "quantity": 1, "amount": 10000},
]


def test_purchase_with_lines_earns_and_reports_balance(
    client: TestClient, pos: Headers, member: Json, state: Callable[..., Json]
) -> None:
    body = purchase(member, amount=25000, store="Söder", channel="online", lines=LINES)
    r = client.post("/v1/activities", json=body, headers=pos)
    assert r.status_code == 201, r.text
    out = r.json()
    expected = {"external_id": "r1", "type": "purchase", "member_id": member["id"], "points": 25}
    assert {k: out[k] for k in expected} == expected and out["replayed"] is False
    assert out["balance"] == {"available": 25, "pending": 0}
    assert [e["rule"] for e in out["effects"]] == ["base"] and out["effects"][0]["points"] == 25
    seen = state(pos, member["loyalty_number"])
    assert seen["balance"]["available"] == seen["balance"]["lifetime_earned"] == 25
    assert [(e["points"], e["activity_external_id"]) for e in seen["ledger"]["items"]] == [
        (25, "r1")
    ]


def test_purchase_by_loyalty_number_and_event(
    client: TestClient, pos: Headers, member: Json
) -> None:
    r = client.post(
        "/v1/activities",
        headers=pos,
        json={**purchase(None, amount=4999), "loyalty_number": member["loyalty_number"]},
    )
    assert r.status_code == 201 and r.json()["member_id"] == member["id"], r.text
    assert r.json()["points"] == 4  # rounded down
    r = client.post(
        "/v1/activities",
        headers=pos,
        json={
            "type": "event",
            "external_id": "e1",
            "event_type": "review.posted",
            "loyalty_number": member["loyalty_number"],
            "attributes": {"stars": 5},
        },
    )
    assert r.status_code == 201, r.text
    assert (r.json()["type"], r.json()["member_id"], r.json()["points"]) == (
        "event",
        member["id"],
        0,
    )
    assert r.json()["balance"] == {"available": 4, "pending": 0}


def test_anonymous_purchase_is_accepted_without_points(client: TestClient, pos: Headers) -> None:
    r = client.post("/v1/activities", json=purchase(None, lines=LINES), headers=pos)
    assert r.status_code == 201, r.text
    assert (r.json()["member_id"], r.json()["points"], r.json()["balance"]) == (None, 0, None)
    # ...and can be returned, still without points.
    r = client.post("/v1/activities", json=ret("r1", "x1", amount=5000), headers=pos)
    assert r.status_code == 201 and r.json()["points"] == 0, r.text


@pytest.mark.parametrize(
    ("returns", "taken_back"),
    [
        ([{}], [-25]),  # the whole purchase
        ([{"amount": 10000}], [-10]),
        ([{"lines": [{"sku": "mug", "quantity": 1, "amount": 10000}]}], [-10]),
        (
            [
                {
                    "lines": [{"sku": "bun", "quantity": 1, "amount": 2000}],
                    "amount": 2000,
                    "currency": "SEK",
                }
            ],
            [-2],
        ),
        # several partial returns, rounding on the way, never more than the 25 earned
        (
            [{"amount": 2500}, {"amount": 2500}, {"amount": 2500}, {"amount": 17500}],
            [-3, -2, -3, -17],
        ),
        ([{"amount": 999}] * 5 + [{}], [-1, -1, -1, -1, -1, -20]),
        (
            [
                {"lines": [{"sku": "coffee", "quantity": 1, "amount": 4500}]},
                {"lines": [{"sku": "coffee", "quantity": 1, "amount": 4500}]},
                {"amount": 16000},
            ],
            [-5, -4, -16],
        ),
    ],
)
def test_returns(
    client: TestClient,
    pos: Headers,
    member: Json,
    available: Callable[..., int],
    returns: list[Json],
    taken_back: list[int],
) -> None:
    assert (
        client.post("/v1/activities", json=purchase(member, lines=LINES), headers=pos).status_code
        == 201
    )
    for n, (extra, points) in enumerate(zip(returns, taken_back, strict=True)):
        r = client.post("/v1/activities", json=ret("r1", f"x{n}", **extra), headers=pos)
        assert r.status_code == 201, r.text
        assert r.json()["points"] == points and r.json()["type"] == "return"
    assert available(pos, member["id"]) == 25 + sum(taken_back) >= 0


def test_nothing_more_to_return(
    client: TestClient,
    pos: Headers,
    member: Json,
    problem: Callable[..., Any],
    available: Callable[..., int],
) -> None:
    client.post("/v1/activities", json=purchase(member, lines=LINES), headers=pos)
    assert client.post("/v1/activities", json=ret("r1", "x1"), headers=pos).json()["points"] == -25
    problem(
        client.post("/v1/activities", json=ret("r1", "x2"), headers=pos), 422, "nothing_to_return"
    )
    problem(
        client.post("/v1/activities", json=ret("r1", "x2", amount=1), headers=pos),
        422,
        "return_exceeds_purchase",
    )
    assert available(pos, member["id"]) == 0


def test_return_of_spent_points_is_uncollected(
    client: TestClient, pos: Headers, member: Json, available: Callable[..., int]
) -> None:
    client.post("/v1/activities", json=purchase(member), headers=pos)
    client.post(
        f"/v1/members/{member['id']}/spend", json={"points": 20, "reference": "o"}, headers=pos
    )
    r = client.post("/v1/activities", json=ret("r1", "x1"), headers=pos)
    assert r.status_code == 201, r.text
    # The return claims all 25 points; 20 were spent already and stay uncollected.
    assert (r.json()["points"], r.json()["uncollected"]) == (-25, 20)
    assert r.json()["balance"] == {"available": 0, "pending": 0}
    assert available(pos, member["id"]) == 0


def test_same_external_id_replays_or_conflicts(
    client: TestClient,
    pos: Headers,
    member: Json,
    state: Callable[..., Json],
    problem: Callable[..., Any],
) -> None:
    body = purchase(member, lines=LINES)
    first = client.post("/v1/activities", json=body, headers=pos).json()
    before = state(pos, member["id"])
    # The same body, with its fields in another order and a default spelled out, replays.
    again = client.post(
        "/v1/activities", headers=pos, json={"channel": "store", **dict(reversed(body.items()))}
    )
    assert again.status_code in (200, 201), again.text
    assert again.json() == {**first, "replayed": True}
    for changed in ({"amount": 26000, "lines": []}, {"store": "elsewhere"}, {"member_id": None}):
        problem(
            client.post("/v1/activities", json={**body, **changed}, headers=pos),
            409,
            "external_id_reused",
        )
    event = {"type": "event", "external_id": "r1", "event_type": "visit", "member_id": member["id"]}
    problem(client.post("/v1/activities", json=event, headers=pos), 409, "external_id_reused")
    problem(
        client.post("/v1/activities", json=ret("r1", "r1"), headers=pos), 409, "external_id_reused"
    )
    assert state(pos, member["id"]) == before


def test_an_earn_follows_a_version_applied_since_the_last_read(
    db: Database,
    client: TestClient,
    pos: Headers,
    member: Json,
    program: ProgramVersion,
    clock: FixedClock,
) -> None:
    """The earn reads the program's version with the member's lock, starting from the
    version last read: a version applied since (here behind its back, as another process
    would) makes it start over under that version, in the same transaction."""
    first = client.post("/v1/activities", json=purchase(member, "v1"), headers=pos).json()
    assert (first["program_version"], first["points"]) == (program.version, 25)
    document = program.spec.model_dump(mode="json")
    with db.write() as conn:
        doubled = {**document, "earn": {"points": 2, "per_amount": 1000}}
        applied = programs.apply(conn, ProgramSpec.model_validate(doubled), clock.now())
        assert programs.last_current(conn, program.program_id).version == program.version
    second = client.post("/v1/activities", json=purchase(member, "v2"), headers=pos)
    assert second.status_code == 201, second.text
    out = second.json()
    assert (out["program_version"], out["points"]) == (applied.version, 50)
    assert out["balance"] == {"available": 75, "pending": 0}
    with db.read() as conn:
        stored = conn.execute(
            select(activities.c.program_version, ledger_transactions.c.program_version)
            .join(ledger_transactions, ledger_transactions.c.activity_id == activities.c.id)
            .where(activities.c.program_id == program.program_id)
            .order_by(activities.c.id)
        ).all()
        assert programs.last_current(conn, program.program_id).version == applied.version
    assert [tuple(row) for row in stored] == [(program.version,) * 2, (applied.version,) * 2]
    # Without a member there is no lock to read it with: the version is read first.
    with db.write() as conn:
        programs.apply(conn, ProgramSpec.model_validate(document), clock.now())
    anonymous = client.post("/v1/activities", json=purchase(None, "v3"), headers=pos).json()
    assert anonymous["program_version"] == applied.version + 1


def test_idempotency_key(
    client: TestClient,
    pos: Headers,
    member: Json,
    state: Callable[..., Json],
    problem: Callable[..., Any],
) -> None:
    keyed = {**pos, "Idempotency-Key": "till-7:0001"}
    first = client.post("/v1/activities", json=purchase(member), headers=keyed)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    before = state(pos, member["id"])
    again = client.post("/v1/activities", json=purchase(member), headers=keyed)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    problem(
        client.post("/v1/activities", json=purchase(member, "r2"), headers=keyed),
        409,
        "idempotency_key_reused",
    )
    problem(
        client.post("/v1/activities", json=purchase(member, amount=1), headers=keyed),
        409,
        "idempotency_key_reused",
    )
    problem(
        client.post(
            "/v1/activities", json=purchase(member, "r3"), headers={**pos, "Idempotency-Key": ""}
        ),
        400,
        "invalid_idempotency_key",
    )
    assert state(pos, member["id"]) == before
    # The refused receipt was not written: it goes through later.
    r = client.post("/v1/activities", json=purchase(member, "r2"), headers=pos)
    assert r.status_code == 201 and not r.json()["replayed"] and r.json()["points"] == 25


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (purchase(ME, currency="EUR"), 422, "currency_mismatch"),
        (purchase(ME, currency="sek"), 422, "validation_error"),
        (purchase(ME, amount=-100), 422, "validation_error"),
        (purchase(ME, lines=[{"sku": "a", "amount": -5}]), 422, "validation_error"),
        (
            purchase(ME, lines=[{"sku": "a", "quantity": 0, "amount": 25000}]),
            422,
            "validation_error",
        ),
        (purchase(ME, amount=1000, lines=LINES), 422, "validation_error"),  # lines != amount
        (purchase(ME, occurred_at="2030-01-01T00:00:00Z"), 422, "occurred_in_future"),
        (purchase(ME, occurred_at="2026-01-01T00:00:00"), 422, "validation_error"),  # naive
        (purchase(None, member_id=99999999), 404, "member_not_found"),
        (purchase(None, loyalty_number="000000000000"), 404, "member_not_found"),
        (purchase(None, member_id=2**63), 422, "validation_error"),
        (purchase(ME, occurred_at="0001-01-01T00:00:00+14:00"), 422, "validation_error"),
        (purchase(ME, occurred_at="9999-12-31T23:00:00-05:00"), 422, "validation_error"),
        ({**purchase(None), "member_id": 1, "loyalty_number": "1"}, 422, "validation_error"),
        (purchase(ME, external_id=""), 422, "validation_error"),
        ({"type": "refund", "external_id": "x"}, 422, "validation_error"),
        ({"type": "event", "external_id": "x", "event_type": "visit"}, 422, "validation_error"),
        (ret("unknown", "x"), 404, "purchase_not_found"),
        (ret("ret-0", "x"), 404, "purchase_not_found"),  # a return is no purchase
        (ret("p-0", "x", amount=25001), 422, "return_exceeds_purchase"),
        (ret("p-0", "x", amount=0), 422, "validation_error"),
        (ret("p-0", "x", amount=-1), 422, "validation_error"),
        (ret("p-0", "x", currency="EUR"), 422, "currency_mismatch"),
        (
            ret("p-0", "x", lines=[{"sku": "mug", "quantity": 2, "amount": 20000}]),
            422,
            "return_exceeds_purchase",
        ),
        (
            ret("p-0", "x", lines=[{"sku": "tea", "quantity": 1, "amount": 100}]),
            422,
            "return_exceeds_purchase",
        ),
        (
            ret("p-0", "x", lines=[{"sku": "mug", "amount": 10000}], amount=5),
            422,
            "validation_error",
        ),
    ],
)
def test_bad_activity_is_a_problem_and_writes_nothing(
    client: TestClient,
    pos: Headers,
    member: Json,
    state: Callable[..., Json],
    problem: Callable[..., Any],
    body: Json,
    status: int,
    code: str,
) -> None:
    for setup in (purchase(member, "p-0", lines=LINES), ret("p-0", "ret-0", amount=1000)):
        assert client.post("/v1/activities", json=setup, headers=pos).status_code == 201
    if body.get("member_id") == ME["id"]:
        body = {**body, "member_id": member["id"]}
    before = state(pos, member["id"])
    for headers in (pos, {**pos, "Idempotency-Key": "k1"}):
        problem(client.post("/v1/activities", json=body, headers=headers), status, code)
    assert state(pos, member["id"]) == before
    # Neither the external id nor the Idempotency-Key was used up.
    r = client.post(
        "/v1/activities",
        json=purchase(member, "x", amount=3000),
        headers={**pos, "Idempotency-Key": "k1"},
    )
    assert r.status_code == 201 and r.json()["points"] == 3 and not r.json()["replayed"], r.text


def test_batch_answers_per_item(
    client: TestClient,
    pos: Headers,
    member: Json,
    available: Callable[..., int],
) -> None:
    client.post("/v1/activities", json=purchase(member, "old"), headers=pos)
    items = [
        purchase(member, "b1", 10000),  # 201, +10
        purchase(member, "b2", 5000, currency="EUR"),  # 422 currency_mismatch
        purchase(member, "b3", -1),  # 422 validation_error
        purchase(None, "b4", 7000, member_id=99999999),  # 404 member_not_found
        purchase(None, "b5", 7000),  # 201 anonymous
        purchase(member, "old"),  # 200 replayed
        purchase(member, "old", 1),  # 409 external_id_reused
        purchase(member, "b1", 10000),  # 200 replay within batch
        ret("old", "b6", amount=30000),  # 422 exceeds
        ret("old", "b7", amount=5000),  # 201, -5
        ret("nope", "b8"),  # 404 purchase_not_found
        {
            "type": "event",
            "external_id": "b9",
            "event_type": "visit",
            "member_id": member["id"],
        },  # 201, 0
        {"not": "an activity"},  # 422
    ]
    r = client.post("/v1/activities/batch", json={"activities": items}, headers=pos)
    assert r.status_code == 200, r.text
    out = r.json()
    got = [
        (
            i["index"],
            i["status"],
            (i["problem"] or {}).get("code"),
            (i["result"] or {}).get("points"),
        )
        for i in out["items"]
    ]
    assert got == [
        (0, 201, None, 10),
        (1, 422, "currency_mismatch", None),
        (2, 422, "validation_error", None),
        (3, 404, "member_not_found", None),
        (4, 201, None, 0),
        (5, 200, None, 25),
        (6, 409, "external_id_reused", None),
        (7, 200, None, 10),
        (8, 422, "return_exceeds_purchase", None),
        (9, 201, None, -5),
        (10, 404, "purchase_not_found", None),
        (11, 201, None, 0),
        (12, 422, "validation_error", None),
    ]
    assert (out["accepted"], out["rejected"]) == (6, 7)
    assert out["items"][0]["result"]["balance"] == {"available": 35, "pending": 0}
    assert out["items"][9]["result"]["balance"] == {"available": 30, "pending": 0}
    assert all(i["problem"]["detail"] for i in out["items"] if i["problem"])
    assert available(pos, member["id"]) == 30
    # The rejected items wrote nothing: their external ids are still free.
    for external_id in ("b2", "b3", "b4", "b6", "b8"):
        r = client.post("/v1/activities", json=purchase(member, external_id, 1000), headers=pos)
        assert r.status_code == 201 and not r.json()["replayed"], r.text
    assert available(pos, member["id"]) == 35


def test_batch_limits(
    client: TestClient,
    pos: Headers,
    member: Json,
    problem: Callable[..., Any],
    available: Callable[..., int],
) -> None:
    too_many = [purchase(member, f"t{n}", 1000) for n in range(1001)]
    problem(
        client.post("/v1/activities/batch", json={"activities": too_many}, headers=pos),
        422,
        "validation_error",
    )
    problem(
        client.post("/v1/activities/batch", json={"activities": []}, headers=pos),
        422,
        "validation_error",
    )
    assert available(pos, member["id"]) == 0
    r = client.post("/v1/activities/batch", json={"activities": too_many[:1000]}, headers=pos)
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (1000, 0)
    assert r.json()["items"][-1]["result"]["balance"]["available"] == 1000
    assert available(pos, member["id"]) == 1000
