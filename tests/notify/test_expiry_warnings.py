"""Expiry warnings: GET /v1/expiring lists members with points expiring soon, and the
worker raises one `points.expiring` event per member, expiry day and window, once.
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.notify.models import outbox
from trofast.programs.service import ProgramVersion
from trofast.worker import jobs

MakeProgram = Callable[..., ProgramVersion]
START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def events(db: Database, program: ProgramVersion) -> list[tuple[str, dict[str, Any]]]:
    with db.read() as conn:
        rows = conn.execute(
            select(outbox.c.key, outbox.c.payload)
            .where(outbox.c.program_id == program.program_id, outbox.c.topic == "points.expiring")
            .order_by(outbox.c.id)
        ).all()
    return [(r.key, r.payload) for r in rows]


def test_members_with_points_expiring_soon_are_listed(
    client: TestClient,
    make_program: MakeProgram,
    key_for: Callable[..., dict[str, str]],
    member_of: Callable[[ProgramVersion], int],
    grant: Callable[..., None],
) -> None:
    program, other = make_program(), make_program()
    anna, bo, cilla, dan = (member_of(program) for _ in range(4))
    grant(program, anna, 30, START + timedelta(days=10))
    grant(program, anna, 20, START + timedelta(days=25))
    grant(program, anna, 99, START + timedelta(days=45))  # outside 30 days
    grant(program, bo, 5, START + timedelta(days=30))  # exactly 30 days: inside
    grant(program, cilla, 7, START + timedelta(days=31))
    grant(program, dan, 8, START + timedelta(days=400))
    stranger = member_of(other)
    grant(other, stranger, 50, START + timedelta(days=3))
    read = key_for(program, "read")

    def listed(**params: Any) -> dict[str, Any]:
        r = client.get("/v1/expiring", params=params, headers=read)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    page = listed()
    assert page["within_days"] == 30 and page["next_cursor"] is None
    assert [(m["member_id"], m["points_expiring"]) for m in page["items"]] == [(anna, 50), (bo, 5)]
    first = page["items"][0]
    assert datetime.fromisoformat(first["earliest_expires_at"]) == START + timedelta(days=10)
    assert len(first["loyalty_number"]) == 12
    wide = listed(within_days=60)
    assert [(m["member_id"], m["points_expiring"]) for m in wide["items"]] == [
        (anna, 149),
        (bo, 5),
        (cilla, 7),
    ]
    assert [m["member_id"] for m in listed(within_days=9)["items"]] == []
    one = listed(within_days=60, limit=1)
    two = listed(within_days=60, limit=1, cursor=one["next_cursor"])
    three = listed(within_days=60, limit=1, cursor=two["next_cursor"])
    assert [p["items"][0]["member_id"] for p in (one, two, three)] == [anna, bo, cilla]
    assert three["next_cursor"] is None
    for bad in (0, 366):
        r = client.get("/v1/expiring", params={"within_days": bad}, headers=read)
        assert r.status_code == 422 and r.json()["code"] == "validation_error"


def test_spent_and_expired_points_are_not_listed(
    db: Database,
    client: TestClient,
    clock: FixedClock,
    make_program: MakeProgram,
    key_for: Callable[..., dict[str, str]],
    member_of: Callable[[ProgramVersion], int],
    grant: Callable[..., None],
) -> None:
    program = make_program()
    anna = member_of(program)
    grant(program, anna, 30, START + timedelta(days=2))
    grant(program, anna, 40, START + timedelta(days=20))
    pos = key_for(program, "pos")
    r = client.post(
        f"/v1/members/{anna}/spend", headers=pos, json={"points": 35, "reference": "o1"}
    )
    assert r.status_code == 201, r.text
    (item,) = client.get("/v1/expiring", headers=pos).json()["items"]
    assert item["points_expiring"] == 35
    assert datetime.fromisoformat(item["earliest_expires_at"]) == START + timedelta(days=20)
    clock.set(START + timedelta(days=20))  # the lot's expiry moment: no longer "expiring"
    assert client.get("/v1/expiring", headers=pos).json()["items"] == []


def test_the_job_warns_once_per_member_day_and_window(
    db: Database,
    clock: FixedClock,
    make_program: MakeProgram,
    member_of: Callable[[ProgramVersion], int],
    grant: Callable[..., None],
) -> None:
    program = make_program(expiry_warning_days=[7, 30])
    anna, bo = member_of(program), member_of(program)
    # Two lots on one local day (Stockholm): one warning with their sum.
    day = datetime(2026, 2, 10, 22, 59, tzinfo=UTC)  # 23:59 in Stockholm, 10 February
    grant(program, anna, 30, day)
    grant(program, anna, 20, day - timedelta(hours=5))
    grant(program, anna, 15, day + timedelta(minutes=2))  # 00:01 on 11 February: another day
    grant(program, bo, 9, datetime(2026, 5, 1, tzinfo=UTC))  # far off: no warning yet

    report = jobs.run_due(db, clock, [program.program_id])
    assert report.expiry_warnings == 2
    member_keys = [(key, payload["points"]) for key, payload in events(db, program)]
    assert member_keys == [
        (f"expiring:{anna}:2026-02-10:30", 50),
        (f"expiring:{anna}:2026-02-11:30", 15),
    ]
    _, payload = events(db, program)[0]
    assert payload == {
        "member_id": anna,
        "loyalty_number": payload["loyalty_number"],
        "points": 50,
        "expires_on": "2026-02-10",
        "expires_at": (day - timedelta(hours=5)).isoformat(),
        "window_days": 30,
    }
    # Running again changes nothing.
    assert jobs.run_due(db, clock, [program.program_id]).expiry_warnings == 0
    assert len(events(db, program)) == 2

    # A week before: the 7-day warning, once.
    clock.set(datetime(2026, 2, 4, 12, tzinfo=UTC))
    assert jobs.warn_expiring(db, clock, [program.program_id]) == 2
    assert jobs.warn_expiring(db, clock, [program.program_id]) == 0
    assert [key for key, _ in events(db, program)][2:] == [
        f"expiring:{anna}:2026-02-10:7",
        f"expiring:{anna}:2026-02-11:7",
    ]


def test_points_earned_inside_a_window_get_only_the_tightest_warning(
    db: Database,
    clock: FixedClock,
    make_program: MakeProgram,
    member_of: Callable[[ProgramVersion], int],
    grant: Callable[..., None],
) -> None:
    program = make_program(expiry_warning_days=[30, 7])
    anna = member_of(program)
    grant(program, anna, 10, START + timedelta(days=5))
    assert jobs.warn_expiring(db, clock, [program.program_id]) == 1
    ((key, payload),) = events(db, program)
    assert key == f"expiring:{anna}:2026-01-20:7" and payload["window_days"] == 7


def test_programs_without_windows_and_other_programs_are_left_alone(
    db: Database,
    clock: FixedClock,
    make_program: MakeProgram,
    member_of: Callable[[ProgramVersion], int],
    grant: Callable[..., None],
) -> None:
    quiet, other = make_program(expiry_warning_days=[]), make_program()
    grant(quiet, member_of(quiet), 10, START + timedelta(days=5))
    grant(other, member_of(other), 10, START + timedelta(days=5))
    assert jobs.warn_expiring(db, clock, [quiet.program_id]) == 0
    assert events(db, quiet) == [] and events(db, other) == []
