"""What-if replay of stored history: per month, what was issued and what would have been."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from trofast.analytics.simulate import parallel, simulate
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


TWO_TIERS = {
    "tiers": [
        {"id": "member", "name": "Member"},
        {"id": "silver", "name": "Silver", "threshold": {"purchases": 3}},
    ],
    "tier_qualification": {"metrics": ["purchases"]},
}


def test_members_by_tier_under_a_lower_threshold(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
    tmp_path: Path,
) -> None:
    """Silver at 3 purchases really; proposed at 2: per month end, members by tier under
    each, the real ones from the tier history (members without a row: the entry tier)."""
    program = make_program(**TWO_TIERS)
    pos = key_for(program, "pos")
    clock.set(datetime(2026, 2, 10, 12, tzinfo=UTC))
    a, b, c, _d = (
        client.post("/v1/members", json={"email": f"{n}@example.com"}, headers=pos).json()["id"]
        for n in "abcd"
    )
    buys = [  # (member, day): a 4 in March; b 2 in March, 1 in April; c 1 in April, 1 in May
        (a, datetime(2026, 3, 2, 12, tzinfo=UTC)),
        (a, datetime(2026, 3, 3, 12, tzinfo=UTC)),
        (b, datetime(2026, 3, 4, 12, tzinfo=UTC)),
        (a, datetime(2026, 3, 5, 12, tzinfo=UTC)),
        (b, datetime(2026, 3, 6, 12, tzinfo=UTC)),
        (a, datetime(2026, 3, 7, 12, tzinfo=UTC)),
        (b, datetime(2026, 4, 8, 12, tzinfo=UTC)),
        (c, datetime(2026, 4, 9, 12, tzinfo=UTC)),
        (c, datetime(2026, 5, 10, 12, tzinfo=UTC)),
    ]
    for n, (member_id, at) in enumerate(buys):
        clock.set(at)
        body = {"type": "purchase", "external_id": f"t{n}", "member_id": member_id,
                "amount": 10000, "currency": "SEK", "occurred_at": at.isoformat()}  # fmt: skip
        assert client.post("/v1/activities", json=body, headers=pos).status_code == 201

    silver = {**TWO_TIERS["tiers"][1], "threshold": {"purchases": 2}}
    lower = {**program.spec.model_dump(mode="json"), "tiers": [TWO_TIERS["tiers"][0], silver]}
    with db.read() as conn:
        same = simulate(
            conn, program.program_id, program.spec,
            datetime(2026, 3, 1, tzinfo=program.spec.zone),
            datetime(2026, 6, 1, tzinfo=program.spec.zone),
        )  # fmt: skip
        result = simulate(
            conn, program.program_id, ProgramSpec.model_validate(lower),
            datetime(2026, 3, 1, tzinfo=program.spec.zone),
            datetime(2026, 6, 1, tzinfo=program.spec.zone),
        )  # fmt: skip
    # The program as it is: the replay gives what really happened.
    for month in same.months:
        assert month.simulated_tiers == month.actual_tiers, month.month
    assert result.tiers == ["member", "silver"]
    months = {m.month: m for m in result.months}
    assert list(months) == ["2026-03", "2026-04", "2026-05"]
    assert months["2026-03"].actual_tiers == {"silver": 1, "member": 3}
    assert months["2026-03"].simulated_tiers == {"silver": 2, "member": 2}
    assert months["2026-04"].actual_tiers == {"silver": 2, "member": 2}
    assert months["2026-04"].simulated_tiers == {"silver": 2, "member": 2}
    assert months["2026-05"].actual_tiers == {"silver": 2, "member": 2}
    assert months["2026-05"].simulated_tiers == {"silver": 3, "member": 1}
    assert months["2026-05"].tier_difference == {"silver": 1, "member": -1}
    assert result.activities == 9 and result.history_activities == 0

    new_file = tmp_path / "lower.yaml"
    new_file.write_text(ProgramSpec.model_validate(lower).model_dump_json())
    out = CliRunner().invoke(
        app,
        ["simulate", "--program", str(new_file), "--from", "2026-03-01", "--to", "2026-05-31",
         "--db", db.url],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    may = next(line for line in out.output.splitlines() if "2026-05" in line and "(+1)" in line)
    assert [cell.strip() for cell in may.split("│")[1:5]] == [
        "2026-05", "3 (+1)", "1 (-1)", "silver 2 / member 2"
    ]  # fmt: skip


def test_tier_replay_downgrades_at_period_end_after_grace() -> None:
    """Silver reached in June 2025 is secured through 2026; with no purchase in 2026 the
    review on 1 January 2027 starts 10 grace days, then the member moves down one step."""
    from trofast.analytics.tiers import TierReplay, month_boundaries

    spec = ProgramSpec.model_validate(
        {"key": "xx", "name": "X", "currency": "SEK", "timezone": "Europe/Stockholm",
         "earn": {"points": 1, "per_amount": 1000},
         "tiers": TWO_TIERS["tiers"],
         "tier_qualification": {"metrics": ["purchases"], "grace_days": 10}}
    )  # fmt: skip
    changes: list[tuple[int, str]] = []
    replay = TierReplay(
        spec, {1: datetime(2025, 1, 1, tzinfo=UTC)}, lambda m, t: changes.append((m, t))
    )
    for day in (3, 4, 5):
        at = datetime(2025, 6, day, tzinfo=UTC)
        replay.before(1, at)
        replay.add(1, at, "purchase", 1000, None, 1)
    assert changes == [(1, "silver")]
    zone = spec.zone
    ends = month_boundaries(
        zone, datetime(2026, 11, 1, tzinfo=zone), datetime(2027, 3, 1, tzinfo=zone)
    )
    counts = [replay.counts(end) for end in ends]
    # Nov, Dec 2026: secured; Jan 2027: reviewed on 2026 (nothing), grace until 11 January,
    # then down one step
    assert [c["silver"] for c in counts] == [1, 1, 0, 0]
    assert changes == [(1, "silver"), (1, "member")]


VOUCHER_REWARDS = [
    {"id": "tote", "type": "custom", "name": "Tote bag", "cost": 0},
    {"id": "sample", "type": "free_product", "name": "Sample", "cost": 0, "sku": "SMP"},
]
BASE_RULE = {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}}


def test_vouchers_granted_per_month_real_and_proposed(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
    tmp_path: Path,
) -> None:
    """The real program grants a tote bag for a basket of 500 SEK; the proposal for 650 SEK,
    and a sample every second visit. A voucher a return cancelled still counts as granted."""
    big_basket = {"id": "big-basket", "effect": {"kind": "reward", "reward": "tote"}}
    program = make_program(
        rules=[BASE_RULE, {**big_basket, "min_amount": 50000}], rewards=VOUCHER_REWARDS
    )
    pos = key_for(program, "pos")
    member = client.post("/v1/members", json={"email": "v@example.com"}, headers=pos).json()
    for n, (day, amount) in enumerate([(3, 60000), (10, 30000), (20, 70000), (35, 55000)]):
        clock.set(datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(days=day))
        body = {
            "type": "purchase",
            "external_id": f"v{n}",
            "member_id": member["id"],
            "amount": amount,
            "currency": "SEK",
        }
        assert client.post("/v1/activities", json=body, headers=pos).status_code == 201
    back = {"type": "return", "external_id": "v3-back", "original_external_id": "v3"}
    returned = client.post("/v1/activities", json=back, headers=pos).json()
    assert [e["reward"] for e in returned["effects"]] == [None, "tote"]  # cancelled

    document = program.spec.model_dump(mode="json")
    proposed = ProgramSpec.model_validate(
        {
            **document,
            "rules": [
                BASE_RULE,
                {**big_basket, "min_amount": 65000},
                {"id": "visits", "effect": {"kind": "stamp", "card": "two", "per": "activity"}},
            ],
            "stamp_cards": [{"id": "two", "name": "Two visits", "stamps": 2, "reward": "sample"}],
        }
    )
    points_only = ProgramSpec.model_validate({**document, "rules": [BASE_RULE]})
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    with db.read() as conn:
        result = simulate(conn, program.program_id, proposed, *window)
        plain = simulate(conn, program.program_id, points_only, *window)
    months = {m.month: m for m in result.months}
    assert (months["2026-03"].actual_vouchers, months["2026-03"].simulated_vouchers) == (
        {"tote": 2},
        {"tote": 1, "sample": 1},
    )
    assert (months["2026-04"].actual_vouchers, months["2026-04"].simulated_vouchers) == (
        {"tote": 1},
        {"sample": 1},
    )
    assert [(m.actual_points, m.simulated_points) for m in result.months] == [(160, 160), (0, 0)]
    assert [(m.simulated_points, m.simulated_vouchers) for m in plain.months] == [
        (160, {}),
        (0, {}),
    ]
    assert [m.actual_vouchers for m in plain.months] == [{"tote": 2}, {"tote": 1}]

    new_file = tmp_path / "proposed.json"
    new_file.write_text(proposed.model_dump_json())
    window_args = ["--from", "2026-03-01", "--to", "2026-04-30", "--db", db.url]
    out = CliRunner().invoke(app, ["simulate", "--program", str(new_file), *window_args])
    assert out.exit_code == 0, out.output
    assert "Vouchers granted by the rules" in out.output and "sample" in out.output


def test_stored_bodies_decode_the_same_whatever_their_shape() -> None:
    """The replay decodes a stored body straight into engine.Line structs; a body in another
    shape than the API stores (quantity left out, an amount as text, a dict from
    PostgreSQL's driver) gives the same lines and attributes the lenient way."""
    from trofast.analytics.simulate import decode_body
    from trofast.rules.engine import Line

    stored = (
        '{"type": "purchase", "amount": 6500, "lines": [{"sku": "c1", "quantity": 2,'
        ' "amount": 4000, "category": "coffee", "labels": ["eco"]},'
        ' {"sku": "b1", "quantity": 1, "amount": 2500}], "attributes": {"stars": 5}}'
    )
    odd = '{"lines": [{"sku": "c1", "quantity": "2", "amount": "4000", "category": "coffee",'
    odd += ' "labels": ["eco"]}, {"sku": "b1", "amount": 2500}], "attributes": {"stars": 5}}'
    expected = (Line("c1", 2, 4000, "coffee", ("eco",)), Line("b1", 1, 2500))
    for body in (stored, stored.encode(), odd, json.loads(odd)):
        decoded = decode_body(body)
        assert (decoded.lines, decoded.attributes) == (expected, {"stars": 5})
    assert (decode_body(None).lines, decode_body(None).attributes) == ((), {})


def test_a_replay_shared_between_processes_finds_the_same(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
    tmp_path: Path,
) -> None:
    """Members shared between three worker processes (by id modulo 3): every month's
    figures, members by tier included, are those of the replay in one process; a program
    with a rule budget (shared by all members) is replayed in one process. The CLI's
    `--workers` prints the same tables."""
    program = make_program(**TWO_TIERS)
    pos = key_for(program, "pos")
    clock.set(datetime(2026, 2, 10, 12, tzinfo=UTC))
    members = [
        client.post("/v1/members", json={"email": f"w{n}@example.com"}, headers=pos).json()["id"]
        for n in range(7)
    ]
    coffee = {"sku": "c1", "amount": 4000, "quantity": 2, "category": "coffee"}
    bun = {"sku": "b1", "amount": 2500, "quantity": 1, "category": "bakery"}
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)
    for n in range(40):
        at += timedelta(hours=19)
        clock.set(at)
        lines = [coffee, bun] if n % 3 else [bun]
        body = {"type": "purchase", "external_id": f"w{n}", "currency": "SEK",
                "amount": sum(line["amount"] for line in lines), "lines": lines,
                "occurred_at": at.isoformat()}  # fmt: skip
        if n % 9:  # every ninth anonymous
            body["member_id"] = members[n % 7]
        assert client.post("/v1/activities", json=body, headers=pos).status_code == 201
        if n % 5 == 1:
            back = {"type": "return", "external_id": f"r{n}", "original_external_id": f"w{n}",
                    "amount": 2500, "occurred_at": at.isoformat()}  # fmt: skip
            assert client.post("/v1/activities", json=back, headers=pos).status_code == 201
    proposed = {
        **program.spec.model_dump(mode="json", exclude={"earn"}),
        "rules": [
            {"id": "base", "effect": {"kind": "per_amount", "points": 3, "per_amount": 1000}},
            {"id": "coffee", "lines": {"categories": ["coffee"]},
             "effect": {"kind": "per_unit", "points": 7},
             "limits": {"per_member": [{"period": "week", "points": 30}]}},
        ],
    }  # fmt: skip
    budgeted = {**proposed, "rules": [{**proposed["rules"][1], "limits": {"budget": 100}}]}
    window = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    for document, shared in ((proposed, True), (budgeted, False)):
        spec = ProgramSpec.model_validate(document)
        assert parallel(spec) is shared
        with db.read() as conn:
            alone = simulate(conn, program.program_id, spec, *window)
            rows: list[int] = []
            together = simulate(
                conn, program.program_id, spec, *window, progress=rows.append, workers=3
            )
        assert [m.month for m in alone.months][:2] == ["2026-03", "2026-04"]
        assert alone.months == together.months, (alone.months, together.months)
        assert alone.activities == together.activities == 40 + 8
        assert alone.months[0].simulated_tiers  # tiers were replayed and counted
        if shared:  # each process told how many rows it replayed
            assert sum(rows) == 48 and len(rows) == 3

    new_file = tmp_path / "proposed.json"
    new_file.write_text(json.dumps(proposed))
    command = ["simulate", "--program", str(new_file), "--from", "2026-03-01",
               "--to", "2026-05-31", "--db", db.url, "--workers"]  # fmt: skip
    printed = [CliRunner().invoke(app, [*command, workers]) for workers in ("1", "2")]
    assert [out.exit_code for out in printed] == [0, 0], printed[1].output
    # the same tables, and the same count of activities (their time and speed aside)
    tables = [re.sub(r" in [\d.]+ s \([\d,]+/s\).*", "", out.output, flags=re.S) for out in printed]
    assert "2026-04" in tables[0] and "48 activities" in tables[0] and tables[0] == tables[1]


def test_an_erased_members_history_is_replayed_as_it_happened(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
) -> None:
    """Erasure (docs/privacy.md) keeps a member's activities; their replay under the same
    version gives the points they really earned, not nothing for an `erased` status."""
    program = make_program()
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    member = client.post("/v1/members", json={"email": "e@example.com"}, headers=pos).json()
    clock.set(datetime(2026, 4, 2, 12, tzinfo=UTC))
    body = {"type": "purchase", "external_id": "e1", "member_id": member["id"],
            "amount": 25000, "currency": "SEK"}  # fmt: skip
    assert client.post("/v1/activities", json=body, headers=pos).status_code == 201
    erased = client.post(
        f"/v1/members/{member['id']}/erase", json={"reason": "GDPR art. 17"}, headers=admin
    )
    assert erased.status_code == 200, erased.text
    with db.read() as conn:
        result = simulate(
            conn,
            program.program_id,
            program.spec,
            datetime(2026, 4, 1, tzinfo=UTC),
            datetime(2026, 5, 1, tzinfo=UTC),
        )
    (april,) = result.months
    assert april.actual_points == april.simulated_points == 25
