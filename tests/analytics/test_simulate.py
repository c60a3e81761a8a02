"""What-if replay of stored history: per month, what was issued and what would have been."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from trofast.analytics.simulate import simulate
from trofast.cli import app
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec


def test_replay_under_a_doubled_rate(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
    tmp_path: Path,
) -> None:
    program = make_program(point_value=1000)  # 1 point per 10 SEK; a point is worth 0.10 SEK
    pos = key_for(program, "pos")
    member = client.post("/v1/members", json={"email": "s@example.com"}, headers=pos).json()
    clock.set(datetime(2026, 3, 20, 12, tzinfo=UTC))
    for n, (days, amount) in enumerate([(0, 12000), (5, 8000), (20, 30000)]):
        body = {
            "type": "purchase",
            "external_id": f"p{n}",
            "member_id": member["id"],
            "amount": amount,
            "currency": "SEK",
            "occurred_at": (clock.now() + timedelta(days=days)).isoformat(),
        }
        clock.set(clock.now() + timedelta(days=days))
        assert client.post("/v1/activities", json=body, headers=pos).status_code == 201
    back = {"type": "return", "external_id": "r0", "original_external_id": "p2", "amount": 15000}
    assert client.post("/v1/activities", json=back, headers=pos).json()["points"] == -15
    anonymous = {"type": "purchase", "external_id": "anon", "amount": 50000, "currency": "SEK"}
    client.post("/v1/activities", json=anonymous, headers=pos)

    doubled = ProgramSpec.model_validate(
        {**program.spec.model_dump(mode="json"), "earn": {"points": 2, "per_amount": 1000}}
    )
    with db.read() as conn:
        result = simulate(
            conn,
            program.program_id,
            doubled,
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        )
    months = {m.month: m for m in result.months}
    assert (months["2026-03"].actual_points, months["2026-03"].simulated_points) == (20, 40)
    # April: +30 earned, -15 returned; doubled: +60, and the return takes half of it back
    assert (months["2026-04"].actual_points, months["2026-04"].simulated_points) == (15, 30)
    assert months["2026-04"].simulated_liability == 70 and result.money(70) == 700
    assert result.activities == 5

    new_file = tmp_path / "doubled.yaml"
    new_file.write_text(
        "\n".join(
            f"{k}: {v}"
            for k, v in {
                "key": program.spec.key,
                "name": "Doubled",
                "currency": "SEK",
                "timezone": "Europe/Stockholm",
                "point_value": 1000,
            }.items()
        )
        + "\nearn: {points: 2, per_amount: 1000}\n"
    )
    out = CliRunner().invoke(
        app,
        [
            "simulate",
            "--program",
            str(new_file),
            "--from",
            "2026-03-01",
            "--to",
            "2026-04-30",
            "--db",
            db.url,
        ],
    )
    assert out.exit_code == 0, out.output
    assert "2026-03" in out.output and "+20" in out.output and "7.00 SEK" in out.output


def test_replay_reads_lines_and_event_attributes(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
) -> None:
    """A program whose rules read purchases' lines and events' attributes: the replay reads
    those bodies (on PostgreSQL through a server-side cursor) and gives what evaluate gives."""
    program = make_program()
    pos = key_for(program, "pos")
    member = client.post("/v1/members", json={"email": "l@example.com"}, headers=pos).json()
    clock.set(datetime(2026, 5, 4, 9, tzinfo=UTC))
    lines = [
        {"sku": "c1", "amount": 4000, "quantity": 2, "category": "coffee", "labels": ["eco"]},
        {"sku": "b1", "amount": 2500, "quantity": 1, "category": "bakery"},
    ]
    sent = [
        {"type": "purchase", "external_id": "p1", "amount": 6500, "currency": "SEK",
         "lines": lines},
        {"type": "purchase", "external_id": "p2", "amount": 2500, "currency": "SEK",
         "lines": lines[1:]},
        {"type": "event", "external_id": "e1", "event_type": "review",
         "attributes": {"stars": 5, "tags": {"nested": ["x"]}}},
        {"type": "event", "external_id": "e2", "event_type": "review", "attributes": {}},
        {"type": "return", "external_id": "r1", "original_external_id": "p1", "amount": 3250},
    ]  # fmt: skip
    for body in sent:
        if body["type"] != "return":  # a return is the purchase's member's
            body["member_id"] = member["id"]
        r = client.post("/v1/activities", json=body, headers=pos)
        assert r.status_code == 201, r.text
    proposed = ProgramSpec.model_validate(
        {
            **program.spec.model_dump(mode="json", exclude={"earn"}),
            "rules": [
                {"id": "coffee", "lines": {"categories": ["coffee"]},
                 "effect": {"kind": "per_unit", "points": 7}},
                {"id": "eco", "lines": {"labels": ["eco"]},
                 "effect": {"kind": "per_amount", "points": 1, "per_amount": 100}},
                {"id": "review", "on": "review",
                 "when": [{"field": "activity.attributes.tags", "op": "not_in", "value": ["x"]},
                          {"field": "activity.attributes.stars", "op": "exists"}],
                 "effect": {"kind": "fixed", "points": 30}},
            ],
        }
    )  # fmt: skip
    with db.read() as conn:
        result = simulate(
            conn,
            program.program_id,
            proposed,
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        )
    (may,) = result.months
    # p1: 2 coffees (14) + 40 SEK eco (40); p2: nothing; e1: 30; e2: no stars;
    # the return takes back half of p1's 54
    assert (may.month, may.activities, may.simulated_points) == ("2026-05", 5, 54 + 30 - 27)
