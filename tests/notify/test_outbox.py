"""The outbox: `raise_event` writes in the caller's transaction, once per key, and
GET /v1/events lists a program's events newest first. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.notify.models import outbox
from trofast.notify.outbox import raise_event
from trofast.programs.service import ProgramVersion

MakeProgram = Callable[..., ProgramVersion]


def count(db: Database, program_id: int) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.program_id == program_id)
            ).scalar_one()
        )


def test_the_same_key_twice_is_a_no_op(
    db: Database, clock: FixedClock, make_program: MakeProgram
) -> None:
    first, second = make_program(), make_program()
    with db.write() as conn:
        assert raise_event(conn, first.program_id, "t.one", "k1", {"n": 1}, clock.now())
        assert not raise_event(conn, first.program_id, "t.one", "k1", {"n": 2}, clock.now())
    with db.write() as conn:
        assert not raise_event(conn, first.program_id, "t.other", "k1", {}, clock.now())
        # Keys are per program.
        assert raise_event(conn, second.program_id, "t.one", "k1", {"n": 3}, clock.now())
    assert (count(db, first.program_id), count(db, second.program_id)) == (1, 1)
    with db.read() as conn:
        row = conn.execute(select(outbox).where(outbox.c.program_id == first.program_id)).one()
    assert (row.topic, row.payload, row.attempts, row.delivered_at) == ("t.one", {"n": 1}, 0, None)
    assert row.created_at == row.available_at == clock.now()


def test_an_event_rolls_back_with_its_transaction(
    db: Database, clock: FixedClock, make_program: MakeProgram
) -> None:
    program = make_program()
    with pytest.raises(RuntimeError), db.write() as conn:
        raise_event(conn, program.program_id, "t.one", "k1", {}, clock.now())
        raise RuntimeError("the change failed")
    assert count(db, program.program_id) == 0
    with db.write() as conn:  # the key was not used up
        assert raise_event(conn, program.program_id, "t.one", "k1", {}, clock.now())


def test_bad_topics_and_keys_are_bugs(
    db: Database, clock: FixedClock, make_program: MakeProgram
) -> None:
    program = make_program()
    with db.write() as conn:
        for topic, key in (("", "k"), ("x" * 61, "k"), ("t", ""), ("t", "k" * 201)):
            with pytest.raises(ValueError):
                raise_event(conn, program.program_id, topic, key, {}, clock.now())


def test_events_are_listed_newest_first_by_topic_and_program(
    db: Database,
    clock: FixedClock,
    client: TestClient,
    make_program: MakeProgram,
    key_for: Callable[..., dict[str, str]],
) -> None:
    program, other = make_program(), make_program()
    with db.write() as conn:
        for n in range(5):
            topic = "a.even" if n % 2 == 0 else "a.odd"
            raise_event(conn, program.program_id, topic, f"k{n}", {"n": n}, clock.now())
        raise_event(conn, other.program_id, "a.even", "k9", {"n": 9}, clock.now())
    read = key_for(program, "read")

    def page(**params: Any) -> dict[str, Any]:
        r = client.get("/v1/events", params=params, headers=read)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    everything = page()
    assert [e["payload"]["n"] for e in everything["items"]] == [4, 3, 2, 1, 0]
    assert everything["next_cursor"] is None
    assert everything["items"][0]["key"] == "k4" and everything["items"][0]["delivered_at"] is None
    assert [e["payload"]["n"] for e in page(topic="a.even")["items"]] == [4, 2, 0]
    first = page(limit=2)
    second = page(limit=2, cursor=first["next_cursor"])
    third = page(limit=2, cursor=second["next_cursor"])
    seen = [e["payload"]["n"] for p in (first, second, third) for e in p["items"]]
    assert seen == [4, 3, 2, 1, 0] and third["next_cursor"] is None
    assert page(topic="a.none")["items"] == []

    r = client.get("/v1/events", params={"cursor": "nonsense"}, headers=read)
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    assert client.get("/v1/events").status_code == 401
    r = client.get("/v1/events", headers=key_for(other, "read"))
    assert [e["payload"]["n"] for e in r.json()["items"]] == [9]
