"""API keys: authentication (401), scopes (403) and tenant isolation between programs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.access import service as access
from trofast.kit.auth import Scope
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database

Headers = dict[str, str]
SCOPES = ("read", "pos", "admin")


@pytest.fixture
def revoked_key(db: Database, clock: FixedClock, program: Any, client: TestClient) -> Headers:
    """A key that worked (and so sits in the auth cache) and was then revoked."""
    with db.write() as conn:
        token, key_id = access.create_key(conn, program.program_id, Scope.admin, "t", clock.now())
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/program", headers=headers).status_code == 200
    with db.write() as conn:
        assert access.revoke_key(conn, program.program_id, key_id, clock.now())
    return headers


# (method, path, body, scope needed); `{ref}` is an enrolled member, `{n}` makes bodies unique.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/v1/program", None, "read"),
    ("GET", "/v1/members", None, "read"),
    ("GET", "/v1/members/{ref}", None, "read"),
    ("GET", "/v1/members/{ref}/balance", None, "read"),
    ("GET", "/v1/members/{ref}/ledger", None, "read"),
    ("GET", "/v1/reports/kpis", None, "read"),
    ("GET", "/v1/reports/cohorts", None, "read"),
    ("GET", "/v1/reports/rfm", None, "read"),
    ("GET", "/v1/reports/rfm/loyal", None, "read"),
    ("POST", "/v1/members", {"email": "new{n}@example.com"}, "pos"),
    ("PATCH", "/v1/members/{ref}", {"first_name": "Name{n}"}, "pos"),
    (
        "POST",
        "/v1/activities",
        {"type": "purchase", "external_id": "r{n}", "amount": 1000, "currency": "SEK"},
        "pos",
    ),
    (
        "POST",
        "/v1/activities/batch",
        {
            "activities": [
                {"type": "purchase", "external_id": "b{n}", "amount": 1000, "currency": "SEK"}
            ]
        },
        "pos",
    ),
    ("POST", "/v1/members/{ref}/spend", {"points": 1, "reference": "s{n}"}, "pos"),
    ("PATCH", "/v1/members/{ref}", {"status": "active"}, "admin"),
    (
        "POST",
        "/v1/members/{ref}/adjustments",
        {"points": 5, "reason": "goodwill", "reference": "a{n}"},
        "admin",
    ),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer nonsense",
        "Bearer tf__x",
        "Bearer tf_000000000000_unknownsecret",
        "WRONG_SECRET",
        "REVOKED",
    ],
)
def test_missing_malformed_or_revoked_key_is_401_on_every_endpoint(
    client: TestClient,
    admin: Headers,
    revoked_key: Headers,
    problem: Callable[..., Any],
    authorization: str | None,
) -> None:
    if authorization == "WRONG_SECRET":  # a real prefix with a wrong secret
        authorization = admin["Authorization"][:-4] + "AAAA"
    elif authorization == "REVOKED":
        authorization = revoked_key["Authorization"]
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, _, _ in ENDPOINTS:
        # Query and body are invalid on purpose: authentication comes before validation.
        r = client.request(
            method, path.format(ref=1), headers=headers, content=b"{not json", params={"limit": "x"}
        )
        problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"


def _fill(value: Any, **names: Any) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, **names) for v in value]
    return value


@pytest.mark.parametrize(
    ("method", "path", "body", "needed"),
    ENDPOINTS,
    ids=[f"{m} {p} {s}" for m, p, _, s in ENDPOINTS],
)
def test_scopes_read_below_pos_below_admin(
    client: TestClient,
    program: Any,
    key_for: Callable[..., Headers],
    enrol: Callable[..., Any],
    available: Callable[..., int],
    problem: Callable[..., Any],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    needed: str,
) -> None:
    admin = key_for(program, "admin")
    member = enrol(admin)
    client.post(
        f"/v1/members/{member['id']}/adjustments",
        headers=admin,
        json={"points": 100, "reason": "seed", "reference": "seed"},
    )
    before = client.get(f"/v1/members/{member['id']}", headers=admin).json()
    for n, scope in enumerate(SCOPES):
        r = client.request(
            method,
            _fill(path, ref=member["loyalty_number"]),
            json=_fill(body, n=n),
            headers=key_for(program, scope),
        )
        if SCOPES.index(scope) >= SCOPES.index(needed):
            assert r.status_code in (200, 201), (scope, r.text)
        else:
            problem(r, 403, "forbidden")
            # A refused request changes nothing.
            assert client.get(f"/v1/members/{member['id']}", headers=admin).json() == before
            assert available(admin, member["id"]) == 100


def test_pos_cannot_suspend_or_adjust(
    client: TestClient,
    program: Any,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Any],
    state: Callable[..., Any],
    problem: Callable[..., Any],
) -> None:
    member = enrol(pos)
    before = state(admin, member["id"])
    problem(
        client.patch(
            f"/v1/members/{member['id']}",
            headers=pos,
            json={"status": "suspended", "first_name": "X"},
        ),
        403,
        "forbidden",
    )
    problem(
        client.post(
            f"/v1/members/{member['id']}/adjustments",
            headers=pos,
            json={"points": 500, "reason": "please", "reference": "x"},
        ),
        403,
        "forbidden",
    )
    assert state(admin, member["id"]) == before


def test_tenant_isolation(
    client: TestClient,
    make_program: Callable[..., Any],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Any],
    buy: Callable[..., Any],
    state: Callable[..., Any],
    listed: Callable[..., list[int]],
    problem: Callable[..., Any],
) -> None:
    """Program B's admin key can neither see nor touch anything of program A."""
    prog_a, prog_b = make_program(country="SE"), make_program(country="SE")
    a, b = key_for(prog_a, "admin"), key_for(prog_b, "admin")
    alice = enrol(a, email="alice@example.com", phone="+46701234567", external_id="crm-1")
    buy(a, alice, 25000, external_id="receipt-a")
    keyed_body = {
        "type": "purchase",
        "external_id": "receipt-k",
        "amount": 5000,
        "currency": "SEK",
        "member_id": alice["id"],
    }
    keyed = client.post("/v1/activities", headers={**a, "Idempotency-Key": "k"}, json=keyed_body)
    assert keyed.status_code == 201
    bob = enrol(b, email="bob@example.com")
    before = state(a, alice["id"])
    assert before["balance"]["available"] == 30

    not_found = 0
    for ref in (alice["id"], alice["loyalty_number"]):
        for method, path, body in [
            ("GET", "", None),
            ("PATCH", "", {"first_name": "Mallory"}),
            ("PATCH", "", {"status": "suspended"}),
            ("PATCH", "", {"email": "mallory@example.com"}),
            ("GET", "/balance", None),
            ("GET", "/ledger", None),
            ("POST", "/spend", {"points": 5, "reference": "steal"}),
            ("POST", "/adjustments", {"points": -30, "reason": "steal", "reference": "x"}),
            ("POST", "/adjustments", {"points": 1000, "reason": "gift", "reference": "y"}),
        ]:
            r = client.request(method, f"/v1/members/{ref}{path}", json=body, headers=b)
            problem(r, 404, "member_not_found")
            not_found += 1
    assert not_found == 18

    # Activities that point at A's member or A's purchase.
    foreign = [
        {
            "type": "purchase",
            "external_id": "x1",
            "amount": 9000,
            "currency": "SEK",
            "member_id": alice["id"],
        },
        {
            "type": "purchase",
            "external_id": "x2",
            "amount": 9000,
            "currency": "SEK",
            "loyalty_number": alice["loyalty_number"],
        },
        {"type": "event", "external_id": "x3", "event_type": "visit", "member_id": alice["id"]},
        {
            "type": "event",
            "external_id": "x4",
            "event_type": "visit",
            "loyalty_number": alice["loyalty_number"],
        },
        {"type": "return", "external_id": "x5", "original_external_id": "receipt-a"},
        {
            "type": "return",
            "external_id": "x6",
            "original_external_id": "receipt-a",
            "amount": 1000,
        },
    ]
    codes = ["member_not_found"] * 4 + ["purchase_not_found"] * 2
    for body, code in zip(foreign, codes, strict=True):
        problem(client.post("/v1/activities", json=body, headers=b), 404, code)
    r = client.post("/v1/activities/batch", json={"activities": foreign}, headers=b)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 0
    assert [(i["status"], i["problem"]["code"]) for i in r.json()["items"]] == [
        (404, code) for code in codes
    ]

    # Lists and searches in B never show A's member (nor A's lists B's).
    assert listed(a) == [alice["id"]]
    for params in (
        {},
        {"q": "alice@example.com"},
        {"email": "alice@example.com"},
        {"phone": "070-123 45 67"},
        {"q": "070-123 45 67"},
        {"q": alice["loyalty_number"]},
        {"loyalty_number": alice["loyalty_number"]},
        {"q": "crm-1"},
    ):
        assert listed(b, **params) == ([] if params else [bob["id"]]), params

    # B's program is B's; external ids and Idempotency-Keys are per program.
    r = client.get("/v1/program", headers=b)
    assert r.json()["document"]["key"] == prog_b.spec.key != prog_a.spec.key
    r = client.post(
        "/v1/activities",
        headers=b,
        json={
            "type": "purchase",
            "external_id": "receipt-a",
            "amount": 99000,
            "currency": "SEK",
            "member_id": bob["id"],
        },
    )
    assert r.status_code == 201 and not r.json()["replayed"] and r.json()["points"] == 99
    r = client.post(
        "/v1/activities",
        headers={**b, "Idempotency-Key": "k"},
        json={
            "type": "purchase",
            "external_id": "receipt-other",
            "amount": 1000,
            "currency": "SEK",
        },
    )
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert r.json()["external_id"] == "receipt-other"

    # Nothing of A changed: member, balance, ledger, its Idempotency-Key answer, its purchase.
    assert state(a, alice["id"]) == before
    again = client.post("/v1/activities", headers={**a, "Idempotency-Key": "k"}, json=keyed_body)
    assert again.json() == keyed.json() and again.headers["idempotent-replayed"] == "true"
    r = client.post(
        "/v1/activities",
        headers=a,
        json={"type": "return", "external_id": "x5", "original_external_id": "receipt-a"},
    )
    assert r.status_code == 201 and r.json()["points"] == -25, r.text
