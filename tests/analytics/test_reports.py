"""The reports: key figures per month (`GET /v1/reports/kpis`, `trofast report kpis`) and
cohorts (`GET /v1/reports/cohorts`, `trofast report cohorts`): exact figures of a small
history across the program's month boundaries, defaults, bad periods, keys of another
program, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from trofast.cli import app
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs.service import ProgramVersion
from trofast.worker.jobs import run_due

Headers = dict[str, str]
Json = dict[str, Any]
runner = CliRunner()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _history(
    client: TestClient, clock: FixedClock, pos: Headers, admin: Headers, enrol: Callable[..., Json]
) -> None:
    """Five members, a quarter of purchases, a return, a visit, a spend and an adjustment
    (Europe/Stockholm). Each is sent when it happens, but for one receipt sent late."""
    members: dict[str, Json] = {}
    for name, enrolled, channel in (
        ("a", "2026-01-10 09:00", "store"),
        ("b", "2026-01-10 09:00", "online"),
        ("e", "2026-01-31 23:30", "store"),  # 00:30 on 1 February in Stockholm
        ("c", "2026-02-05 09:00", "store"),
        ("d", "2026-03-02 09:00", "app"),
    ):
        clock.set(_at(enrolled))
        members[name] = enrol(pos, channel=channel)

    def send(ext: str, who: str | None, at: str, sent: str | None = None, **body: Any) -> None:
        clock.set(_at(sent or at) + timedelta(minutes=5))
        body = {"external_id": ext, "occurred_at": _at(at).isoformat(), **body}
        if who is not None:
            body["member_id"] = members[who]["id"]
        r = client.post("/v1/activities", json=body, headers=pos)
        assert r.status_code == 201, r.text

    def buy(ext: str, who: str | None, at: str, amount: int, sent: str | None = None) -> None:
        send(ext, who, at, sent, type="purchase", amount=amount, currency="SEK")

    buy("a-jan", "a", "2026-01-12 10:00", 10_000)
    buy("anon-jan", None, "2026-01-20 10:00", 7_000)
    buy("b-feb", "b", "2026-01-31 23:30", 5_000)  # February in Stockholm
    buy("a-feb", "a", "2026-02-03 10:00", 20_000)
    buy("c-feb-1", "c", "2026-02-10 10:00", 30_000)
    buy("c-feb-2", "c", "2026-02-20 10:00", 10_000)
    buy("anon-feb", None, "2026-02-14 10:00", 3_001)
    # a receipt from before d enrolled, sent in March: its points are March's in the ledger
    buy("d-before", "d", "2026-02-27 10:00", 2_000, sent="2026-03-03 10:00")
    send("a-ret", None, "2026-02-25 10:00", type="return", original_external_id="a-jan")
    send("b-visit", "b", "2026-03-04 10:00", type="event", event_type="visit")
    clock.set(_at("2026-03-05 10:00"))
    spend = {"points": 25, "reference": "s1"}
    r = client.post(f"/v1/members/{members['c']['id']}/spend", json=spend, headers=pos)
    assert r.status_code in (200, 201), r.text
    goodwill = {"points": 7, "reason": "goodwill", "reference": "g1"}
    r = client.post(f"/v1/members/{members['b']['id']}/adjustments", json=goodwill, headers=admin)
    assert r.status_code in (200, 201), r.text
    clock.set(_at("2026-03-10 12:00"))


def test_figures_per_month_in_the_programs_time_zone(
    client: TestClient,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    program = make_program(point_value=50)  # half an öre a point
    _history(client, clock, key_for(program, "pos"), key_for(program, "admin"), enrol)
    r = client.get("/v1/reports/kpis?from=2026-01&to=2026-03", headers=key_for(program, "read"))
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["currency"], report["timezone"]) == ("SEK", "Europe/Stockholm")
    january, february, march = report["months"]
    assert january == {
        "month": "2026-01",
        "members": 2,
        "enrolments": 2,
        "enrolments_by_channel": {"online": 1, "store": 1},
        "active_members": 1,
        "active_members_pct": 50.0,
        "buying_members": 1,
        "repeat_customers": 0,
        "repeat_customers_pct": 0.0,
        "purchases": 2,
        "member_purchases": 1,
        "revenue": 17_000,
        "member_revenue": 10_000,
        "returned": 0,
        "average_purchase": 8_500,
        "average_member_purchase": 10_000,
        "average_non_member_purchase": 7_000,
        "points_earned": 10,
        "points_issued": 10,
        "points_redeemed": 0,
        "points_expired": 0,
        "points_adjusted": 0,
        "liability_points": 10,
        "liability_value": 5,
        "redemption_rate_pct": 0.0,
        "breakage_pct": 0.0,
    }
    assert february == {
        "month": "2026-02",
        "members": 4,  # e enrolled at 00:30 on 1 February, local time
        "enrolments": 2,
        "enrolments_by_channel": {"store": 2},
        "active_members": 3,  # d bought, but was no member yet
        "active_members_pct": 75.0,
        "buying_members": 4,
        "repeat_customers": 1,  # a bought in January; b, c and d bought first now
        "repeat_customers_pct": 25.0,
        "purchases": 6,
        "member_purchases": 5,
        "revenue": 70_001,
        "member_revenue": 67_000,
        "returned": 10_000,
        "average_purchase": 11_667,  # 11,666.83
        "average_member_purchase": 13_400,
        "average_non_member_purchase": 3_001,
        "points_earned": 5 + 20 + 30 + 10 + 2 - 10,
        "points_issued": 5 + 20 + 30 + 10 - 10,  # d's 2 points were posted in March
        "points_redeemed": 0,
        "points_expired": 0,
        "points_adjusted": 0,
        "liability_points": 65,
        "liability_value": 32,  # 32.5 öre, rounded down
        "redemption_rate_pct": 0.0,
        "breakage_pct": 0.0,
    }
    assert march == {
        "month": "2026-03",
        "members": 5,
        "enrolments": 1,
        "enrolments_by_channel": {"app": 1},
        "active_members": 1,  # a visit
        "active_members_pct": 20.0,
        "buying_members": 0,
        "repeat_customers": 0,
        "repeat_customers_pct": None,
        "purchases": 0,
        "member_purchases": 0,
        "revenue": 0,
        "member_revenue": 0,
        "returned": 0,
        "average_purchase": None,
        "average_member_purchase": None,
        "average_non_member_purchase": None,
        "points_earned": 0,
        "points_issued": 2,
        "points_redeemed": 25,
        "points_expired": 0,
        "points_adjusted": 7,
        "liability_points": 65 + 2 - 25 + 7,
        "liability_value": 24,
        "redemption_rate_pct": 37.3,  # 25 of the 67 issued
        "breakage_pct": 0.0,
    }
    # By default the twelve months that end with this one (the clock: March 2026).
    default = client.get("/v1/reports/kpis", headers=key_for(program, "read")).json()["months"]
    assert [m["month"] for m in default] == [f"2025-{n:02d}" for n in range(4, 13)] + [
        "2026-01",
        "2026-02",
        "2026-03",
    ]
    assert default[-3:] == report["months"]


def test_expired_points_are_breakage(
    db: Database,
    client: TestClient,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    program = make_program(expiry={"kind": "after_months", "months": 1})
    pos = key_for(program, "pos")
    member = enrol(pos)  # 15 January 2026
    purchase = {"type": "purchase", "external_id": "p1", "amount": 30_000, "currency": "SEK"}
    assert client.post("/v1/activities", json={**purchase, "member_id": member["id"]},
                       headers=pos).status_code == 201  # fmt: skip
    spend = {"points": 10, "reference": "s1"}
    assert client.post(f"/v1/members/{member['id']}/spend", json=spend, headers=pos).is_success
    clock.set(_at("2026-02-20 12:00"))
    assert run_due(db, clock).expired == 1
    r = client.get("/v1/reports/kpis?from=2026-01&to=2026-02", headers=pos)
    ledger = [
        {k: m[k] for k in m if k.startswith(("points_", "liability_points", "redemption", "break"))}
        for m in r.json()["months"]
    ]
    assert ledger == [
        {
            "points_earned": 30,
            "points_issued": 30,
            "points_redeemed": 10,
            "points_expired": 0,
            "points_adjusted": 0,
            "liability_points": 20,
            "redemption_rate_pct": 33.3,
            "breakage_pct": 0.0,
        },
        {
            "points_earned": 0,
            "points_issued": 0,
            "points_redeemed": 0,
            "points_expired": 20,
            "points_adjusted": 0,
            "liability_points": 0,
            "redemption_rate_pct": 33.3,
            "breakage_pct": 66.7,
        },
    ]


def test_bad_periods_are_refused_and_other_programs_see_nothing(
    client: TestClient,
    clock: FixedClock,
    program: ProgramVersion,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    _history(client, clock, key_for(program, "pos"), key_for(program, "admin"), enrol)
    read = key_for(program, "read")
    for query, code in (
        ("from=2026-13", "invalid_month"),
        ("to=March", "invalid_month"),
        ("from=2026-03&to=2026-01", "invalid_period"),
        ("from=2016-03&to=2026-03", "invalid_period"),  # 121 months
    ):
        problem(client.get(f"/v1/reports/kpis?{query}", headers=read), 422, code)
    assert len(client.get("/v1/reports/kpis?from=2016-04&to=2026-03", headers=read).json()[
        "months"
    ]) == 120  # fmt: skip
    problem(client.get("/v1/reports/kpis"), 401, "unauthorized")
    other = make_program(timezone="UTC")
    months = client.get(
        "/v1/reports/kpis?from=2026-01&to=2026-03", headers=key_for(other, "admin")
    ).json()["months"]
    assert [(m["members"], m["purchases"], m["points_earned"]) for m in months] == [(0, 0, 0)] * 3


def test_cli_prints_the_report_as_a_table_and_as_json(
    db: Database,
    client: TestClient,
    clock: FixedClock,
    program: ProgramVersion,
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    _history(client, clock, key_for(program, "pos"), key_for(program, "admin"), enrol)
    period = ["--from", "2026-01", "--to", "2026-03"]
    args = ["report", "kpis", "--program", program.spec.key, *period, "--db", db.url]
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    api = client.get("/v1/reports/kpis?from=2026-01&to=2026-03", headers=key_for(program, "read"))
    assert json.loads(out.output) == api.json()
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    february = next(line for line in table.output.splitlines() if "2026-02" in line)
    assert [cell.strip() for cell in february.strip("│ ").split("│")] == [
        "2026-02", "4", "2", "75.0", "4", "25.0", "6", "116.67", "134.00", "30.01", "57", "0",
        "0", "0.00", "0.0",
    ]  # fmt: skip
    bad = runner.invoke(app, ["report", "kpis", "--program", program.spec.key, "--from", "x",
                              "--db", db.url])  # fmt: skip
    assert bad.exit_code == 1 and "is not a month" in bad.output


def test_cohorts_follow_each_enrolment_month_to_this_one(
    db: Database,
    client: TestClient,
    clock: FixedClock,
    program: ProgramVersion,
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    _history(client, clock, key_for(program, "pos"), key_for(program, "admin"), enrol)
    read = key_for(program, "read")
    r = client.get("/v1/reports/cohorts?from=2026-01&to=2026-03", headers=read)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["as_of"] == "2026-03"
    assert [
        (c["cohort"], c["members"], c["buying_pct"], c["value_per_member"])
        for c in report["cohorts"]
    ] == [
        # a and b: a bought in January, both in February; a returned January's receipt
        ("2026-01", 2, [50.0, 100.0, 0.0], [5_000, 12_500, 12_500]),
        # e (00:30 on 1 February, local time) and c, who bought twice
        ("2026-02", 2, [50.0, 0.0], [20_000, 20_000]),
        # d's receipt from before it enrolled counts in its enrolment month
        ("2026-03", 1, [100.0], [2_000]),
    ]
    default = client.get("/v1/reports/cohorts", headers=read).json()["cohorts"]
    assert [c["cohort"] for c in default][-3:] == ["2026-01", "2026-02", "2026-03"]
    assert default[-3:] == report["cohorts"] and len(default) == 12
    problem(client.get("/v1/reports/cohorts?to=2026-13", headers=read), 422, "invalid_month")
    other = key_for(program, "read")  # (any key of the program)
    assert client.get("/v1/reports/cohorts?from=2026-02&to=2026-02", headers=other).json()[
        "cohorts"
    ] == [{"cohort": "2026-02", "members": 2, "buying_pct": [50.0, 0.0],
           "value_per_member": [20_000, 20_000]}]  # fmt: skip
    args = ["report", "cohorts", "--program", program.spec.key, "--from", "2026-01", "--to",
            "2026-03", "--db", db.url]  # fmt: skip
    out = runner.invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    # the command follows the cohorts to today's month: the API's months come first
    for printed, answered in zip(json.loads(out.output)["cohorts"], report["cohorts"], strict=True):
        followed = len(answered["buying_pct"])
        assert printed["buying_pct"][:followed] == answered["buying_pct"]
        assert printed["value_per_member"][:followed] == answered["value_per_member"]
        assert printed["value_per_member"][followed:] == [answered["value_per_member"][-1]] * (
            len(printed["value_per_member"]) - followed
        )
    table = runner.invoke(app, [*args, "--value"])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if "2026-01" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:5] == [
        "2026-01", "2", "50.00", "125.00", "125.00",
    ]  # fmt: skip


def test_rfm_scores_by_quintiles_and_segments(
    db: Database,
    client: TestClient,
    clock: FixedClock,
    program: ProgramVersion,
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    pos, read = key_for(program, "pos"), key_for(program, "read")
    clock.set(_at("2024-12-01 09:00"))
    people = {name: enrol(pos) for name in ("m1", "m2", "m3", "m4", "m5", "m6", "m7")}
    now = _at("2026-03-10 12:00")
    clock.set(now)
    days_ago = {  # each purchase 100.00 SEK, an hour more than so many days ago
        "m1": [1, 3, 6, 9, 12, 15],
        "m2": [5, 20, 40, 60],
        "m3": [200, 220, 240],
        "m4": [10],
        "m5": [300],
        "m7": [400],  # before the 365 days: scored, with nothing in the window
    }  # m6 never bought
    for name, days in days_ago.items():
        for n, ago in enumerate(days):
            at = now - timedelta(days=ago, hours=1)
            body = {"type": "purchase", "external_id": f"{name}-{n}", "amount": 10_000,
                    "currency": "SEK", "member_id": people[name]["id"],
                    "occurred_at": at.isoformat()}  # fmt: skip
            assert client.post("/v1/activities", json=body, headers=pos).status_code == 201
    report = client.get("/v1/reports/rfm", headers=read).json()
    # six scored members: the cut points are the 2nd to 5th smallest values
    assert report["cut_points"] == {
        "recency_days": [300, 200, 10, 5],
        "frequency": [1, 1, 3, 4],
        "monetary": [10_000, 10_000, 30_000, 40_000],
    }
    assert report["never_bought"] == 1 and report["window_days"] == 365
    segments = {s["segment"]: s for s in report["segments"]}
    assert list(segments) == ["champions", "loyal", "promising", "at_risk", "hibernating"]
    assert [
        (s["members"], s["pct"], s["avg_recency_days"], s["avg_frequency"], s["avg_monetary"])
        for s in segments.values()
    ] == [
        (2, 33.3, 3.0, 5.0, 50_000),  # m1 (R5 F5), m2 (R5 F5)
        (2, 33.3, 105.0, 2.0, 20_000),  # m3 (R3 F4), m4 (R4 F3: one purchase ties the cut)
        (0, 0.0, None, None, None),
        (1, 16.7, 300.0, 1.0, 10_000),  # m5 (R2 F3)
        (1, 16.7, 400.0, 0.0, 0),  # m7 (R1 F1)
    ]
    page = client.get("/v1/reports/rfm/loyal?limit=1", headers=read).json()
    (first,) = page["items"]
    assert (first["member_id"], first["r"], first["f"], first["m"]) == (people["m3"]["id"], 3, 4, 4)
    assert (first["recency_days"], first["frequency"], first["monetary"]) == (200, 3, 30_000)
    rest = client.get(f"/v1/reports/rfm/loyal?cursor={page['next_cursor']}", headers=read).json()
    assert [m["member_id"] for m in rest["items"]] == [people["m4"]["id"]]
    assert rest["next_cursor"] is None
    problem(client.get("/v1/reports/rfm/vip", headers=read), 422, "unknown_segment")
    problem(client.get("/v1/reports/rfm/loyal?cursor=xyz", headers=read), 400, "invalid_cursor")
    out = runner.invoke(app, ["report", "rfm", "--program", program.spec.key, "--db", db.url])
    assert out.exit_code == 0, out.output
    assert "champions" in out.output and "Members without a purchase (not scored): 1" in out.output
    base = ["report", "rfm", "--program", program.spec.key, "--db", db.url]
    listed = runner.invoke(app, [*base, "--segment", "champions", "--json"])
    assert listed.exit_code == 0, listed.output
    # (the command scores as of today, so only what holds on any day after the history)
    assert {json.loads(line)["member_id"] for line in listed.output.splitlines()} <= {
        people[name]["id"] for name in days_ago
    }
    assert runner.invoke(app, [*base, "--segment", "vip"]).exit_code == 1
