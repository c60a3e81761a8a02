"""The batch's bulk path writes the same rows, byte for byte, as activities sent one by one:
activities (body and stored answer as JSON text), ledger headers, lots, transfer legs,
account counters and rule counters; and answers the same."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from trofast.activities import service as activities
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.idempotency import request_hash
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion

PROGRAM: dict[str, Any] = {
    "vesting_days": 3,
    "expiry": {"kind": "after_months", "months": 24},
    "event_types": ["review"],
    "rules": [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {
            "id": "fika",
            "priority": 200,
            "lines": {"categories": ["bakery"]},
            "effect": {"kind": "multiplier", "percent": 300, "of": ["base"]},
            "limits": {"per_member": [{"period": "day", "points": 15}]},
        },
        {"id": "launch", "effect": {"kind": "fixed", "points": 7}, "limits": {"budget": 40}},
        {"id": "cash", "effect": {"kind": "cashback", "basis_points": 150}},
        {
            "id": "card",
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "stamp", "card": "coffee"},
        },
        {"id": "reviewed", "on": "review", "effect": {"kind": "fixed", "points": 5}},
    ],
    "stamp_cards": [{"id": "coffee", "name": "Kaffekort", "stamps": 4, "reward_points": 25}],
}


def _items(rng: random.Random, members: list[dict[str, Any]], now: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(50):
        member = members[n % len(members)]
        ref: dict[str, Any] = (
            {"loyalty_number": member["loyalty_number"]}
            if n % 3 == 0
            else {"member_id": member["id"]}
        )
        if n % 11 == 5:
            ref = {}  # anonymous
        if n % 9 == 4 and ref:
            out.append(
                {
                    "type": "event",
                    "external_id": f"e{n}",
                    "event_type": "review",
                    **ref,
                    "attributes": {"stars": 5, "text": "Gött fika ☕"},
                }
            )
            continue
        coffee, buns = rng.randint(0, 3), rng.randint(0, 2)
        lines: list[dict[str, Any]] = []
        if coffee:
            lines.append({"sku": "latte", "category": "coffee", "quantity": coffee,
                          "amount": 4200 * coffee, "labels": ["hot"]})  # fmt: skip
        if buns:
            lines.append({"sku": "kanelbulle", "category": "bakery", "quantity": buns,
                          "amount": 3500 * buns})  # fmt: skip
        item: dict[str, Any] = {
            "type": "purchase",
            "external_id": f"p{n}",
            **ref,
            "currency": "SEK",
            "store": "Södermalm" if n % 2 else None,
            "channel": "online" if n % 5 == 0 else "store",
        }
        if lines:
            item["lines"] = lines
            item["amount"] = sum(line["amount"] for line in lines)
        else:
            item["amount"] = rng.randint(0, 90_000)
        if n % 4:
            item["occurred_at"] = (now - timedelta(days=5) + timedelta(hours=n)).isoformat()
        out.append(item)
    return out


def _rows(conn: Connection, program_id: int, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Every row the activities wrote, with ids replaced by what they stand for."""
    member_of = {int(m["id"]): f"M{i}" for i, m in enumerate(members)}

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            for i, m in enumerate(members):
                value = value.replace(f'"{m["loyalty_number"]}"', f'"N{i}"')
            value = re.sub(
                r'"member_id": (\d+)', lambda m: f'"member_id": "{member_of[int(m[1])]}"', value
            )
        return value

    def query(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(text(sql), {"p": program_id}).all()]

    activity_of = {
        int(r[0]): str(r[1])
        for r in query("SELECT id, external_id FROM activities WHERE program_id = :p")
    }
    accounts = query(
        "SELECT id, member_id, kind, unit, credits_posted, debits_posted, credits_pending,"
        " debits_pending, debt, withheld FROM accounts WHERE program_id = :p"
    )
    account_of = {
        int(a[0]): (member_of.get(int(a[1])) if a[1] is not None else None, a[2], a[3])
        for a in accounts
    }

    def key(value: str) -> str:
        return re.sub(r"activity:(\d+)", lambda m: f"activity:{activity_of[int(m[1])]}", value)

    activity_rows = sorted(
        (r[0], r[1], member_of.get(r[2]) if r[2] is not None else None, *r[3:10],
         plain(r[10]), request_hash(json.loads(r[10])) == r[11], r[12], r[13], plain(r[14]),
         r[15])
        for r in query(
            "SELECT external_id, type, member_id, occurred_at, amount, currency, store, channel,"
            " event_type, original_id, CAST(body AS TEXT), request_hash, program_version,"
            " points, CAST(result AS TEXT), received_at FROM activities WHERE program_id = :p"
        )
    )  # fmt: skip
    txn_of: dict[int, str] = {}
    headers = []
    for r in query(
        "SELECT id, kind, idempotency_key, request_hash, member_id, activity_id, rule,"
        " program_version, actor, reference, reason, reverses_id, effective_at, created_at"
        " FROM ledger_transactions WHERE program_id = :p"
    ):
        txn_of[int(r[0])] = key(str(r[2]))
        headers.append(
            (
                r[1],
                key(str(r[2])),
                r[3],
                member_of.get(r[4]),
                activity_of.get(r[5]),
                r[6],
                r[7],
                str(r[8]).startswith("apikey:"),
                *r[9:],
            )
        )
    lot_of: dict[int, tuple[Any, ...]] = {}
    lots = []
    for r in query(
        "SELECT id, member_id, account_id, transaction_id, activity_id, rule, original,"
        " remaining, held, consumed, expired, reversed, pending, vests_at, expires_at,"
        " created_at FROM lots WHERE program_id = :p"
    ):
        lot_of[int(r[0])] = (txn_of[int(r[3])], r[5])
        lots.append(
            (member_of[r[1]], account_of[r[2]], txn_of[r[3]], activity_of.get(r[4]), *r[5:])
        )
    legs = sorted(
        (txn_of[r[0]], account_of[r[1]], account_of[r[2]], r[3], r[4], r[5],
         lot_of.get(r[6]) if r[6] is not None else None, r[7])
        for r in query(
            "SELECT transaction_id, debit_account_id, credit_account_id, amount, phase,"
            " pending_id, lot_id, created_at FROM transfers WHERE program_id = :p"
        )
    )  # fmt: skip
    counters = sorted(
        (member_of.get(r[0], "program"), r[1], r[2], r[3])
        for r in query(
            "SELECT member_id, key, points, times FROM rule_counters WHERE program_id = :p"
        )
    )
    return {
        "activities": activity_rows,
        "headers": sorted(headers, key=repr),
        "lots": sorted(lots, key=repr),
        "legs": sorted(legs, key=repr),
        "accounts": sorted((account_of[a[0]], *a[4:]) for a in accounts if a[1] is not None),
        "system": sorted((a[2], a[3], *a[4:]) for a in accounts if a[1] is None),
        "counters": counters,
    }


def test_bulk_writes_the_rows_single_earns_write(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fallback(*args: object) -> None:
        raise AssertionError("the batch left its bulk path")

    runs = []
    for mode in ("batch", "single"):
        program = make_program(**PROGRAM)
        pos = key_for(program, "pos")
        members = [
            client.post(
                "/v1/members", json={"email": f"r{i}@example.com", "first_name": "Åsa"}, headers=pos
            ).json()
            for i in range(4)
        ]
        items = _items(random.Random(11), members, clock.now())
        if mode == "batch":
            monkeypatch.setattr(activities, "ingest_item", no_fallback)
            reply = client.post("/v1/activities/batch", json={"activities": items}, headers=pos)
            assert reply.status_code == 200, reply.text
            assert {i["status"] for i in reply.json()["items"]} == {201}
            got = [item["result"] for item in reply.json()["items"]]
            monkeypatch.undo()
        else:
            got = []
            for i in items:
                answer = client.post("/v1/activities", json=i, headers=pos)
                assert answer.status_code == 201, answer.text
                got.append(answer.json())
        member_of = {m["id"]: f"M{i}" for i, m in enumerate(members)}
        answers = [{**a, "id": None, "member_id": member_of.get(a["member_id"])} for a in got]
        with db.read() as conn:
            assert audit(conn, program.program_id) == []
            runs.append((answers, _rows(conn, program.program_id, members)))
    (batch_answers, batch_rows), (single_answers, single_rows) = runs
    assert batch_answers == single_answers
    for table in batch_rows:
        for got, want in zip(batch_rows[table], single_rows[table], strict=True):
            assert got == want, table
    assert any(a["cashback"] for a in batch_answers) and any(
        a["balance"] and a["balance"]["pending"] for a in batch_answers
    )


def test_a_receipt_stored_meanwhile_sends_the_run_one_by_one(
    client: TestClient,
    pos: dict[str, str],
    db: Database,
    program: ProgramVersion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An external_id stored by another request after the batch looked (here: the look-up
    made blind) fails the run's multi-row insert (COPY on PostgreSQL) on the unique
    constraint: the run is rolled back to its savepoint and goes one by one, so the
    receipt is replayed and the others are accepted once."""
    member = client.post("/v1/members", json={"email": "race@example.com"}, headers=pos).json()
    items = [
        {"type": "purchase", "external_id": f"c{n}", "member_id": member["id"],
         "amount": 1000 * (n + 1), "currency": "SEK"}
        for n in range(30)
    ]  # fmt: skip
    first = client.post("/v1/activities", json=items[7], headers=pos)
    assert first.status_code == 201
    monkeypatch.setattr(activities.repository, "received_among", lambda *args: set())
    reply = client.post("/v1/activities/batch", json={"activities": items}, headers=pos)
    assert reply.status_code == 200, reply.text
    statuses = [item["status"] for item in reply.json()["items"]]
    assert statuses == [201] * 7 + [200] + [201] * 22
    assert reply.json()["items"][7]["result"] == {**first.json(), "replayed": True}
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == sum(range(1, 31))
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
