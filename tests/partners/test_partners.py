"""Partners and coalition: partner keys, partner earning and returns, partner vouchers,
the settlement report and the ledger audit, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from coalition import PARTNERS, REWARDS
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from trofast.access import service as access
from trofast.cli import app
from trofast.kit.auth import Scope
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.ledger.audit import audit, system_balances
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import SpecError, validate_data
from trofast.worker.runner import Worker

Headers = dict[str, str]
Json = dict[str, Any]
runner = CliRunner()


def _sound(db: Database, program: ProgramVersion) -> dict[str, int]:
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
        return system_balances(conn, program.program_id)


def _buy(
    client: TestClient, key: Headers, member: Json, amount: int, ext: str, **extra: Any
) -> Any:
    body = {
        "external_id": ext,
        "loyalty_number": member["loyalty_number"],
        "amount": amount,
        "currency": "SEK",
        **extra,
    }
    return client.post("/v1/partner/activities", json=body, headers=key)


def test_partner_earning_vouchers_settlement_and_audit(
    db: Database,
    client: TestClient,
    coalition: ProgramVersion,
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
    available: Callable[..., int],
    problem: Callable[..., Json],
) -> None:
    pos, admin = key_for(coalition, "pos"), key_for(coalition, "admin")
    hotel, cinema = partner_key(coalition, "hotel"), partner_key(coalition, "cinema")
    member = enrol(pos, first_name="Anna", last_name="Berg")

    r = client.get(f"/v1/partner/members/{member['loyalty_number']}", headers=hotel)
    assert r.status_code == 200, r.text
    assert r.json() == {"loyalty_number": member["loyalty_number"], "name": "Anna Berg"}

    # 2,500 SEK at the hotel (1 point per 10 SEK), 300 SEK at the cinema (2 per 10 SEK).
    r = _buy(client, hotel, member, 250_000, "R-1")
    assert r.status_code == 201, r.text
    earned = r.json()
    assert earned["points"] == 250 and earned["partner"] == "hotel" and not earned["replayed"]
    assert set(earned) >= {"loyalty_number", "external_id"} and "member_id" not in earned
    assert _buy(client, cinema, member, 30_000, "R-1").json()["points"] == 60
    assert available(pos, member["id"]) == 310

    again = _buy(client, hotel, member, 250_000, "R-1")
    assert again.status_code == 200 and again.json()["replayed"] and again.json()["points"] == 250
    problem(_buy(client, hotel, member, 1, "R-1"), 409, "external_id_reused")
    problem(
        client.post(
            "/v1/partner/activities",
            json={
                "external_id": "x",
                "loyalty_number": member["loyalty_number"],
                "amount": 1,
                "currency": "EUR",
            },
            headers=hotel,
        ),
        422,
        "wrong_currency",
    )
    assert available(pos, member["id"]) == 310

    # Each partner sees only its own activities.
    listed = client.get("/v1/partner/activities", headers=hotel).json()["items"]
    assert [(a["partner"], a["external_id"], a["points"]) for a in listed] == [
        ("hotel", "R-1", 250)
    ]

    # The member redeems the hotel's reward at the program; the hotel accepts the voucher.
    r = client.post(
        f"/v1/members/{member['id']}/redemptions",
        headers=pos,
        json={"reward": "hotel-night", "reference": "night-1"},
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    basket = {"basket": {"amount": 150_000}}
    problem(
        client.post(f"/v1/partner/vouchers/{code}/validate", json=basket, headers=cinema),
        404,
        "voucher_not_found",
    )
    r = client.post(f"/v1/partner/vouchers/{code}/validate", json=basket, headers=hotel)
    assert r.status_code == 200, r.text
    assert r.json()["valid"] and "member_id" not in r.json()["voucher"]
    use = {"purchase_external_id": "H-77"}
    r = client.post(f"/v1/partner/vouchers/{code}/consume", json=use, headers=hotel)
    assert r.status_code == 200, r.text
    assert r.json()["voucher"]["status"] == "used"
    r = client.post(f"/v1/partner/vouchers/{code}/consume", json=use, headers=hotel)
    assert r.status_code == 200 and r.json()["voucher"]["replayed"]
    problem(
        client.post(
            f"/v1/partner/vouchers/{code}/consume",
            json={"purchase_external_id": "H-78"},
            headers=hotel,
        ),
        409,
        "voucher_used",
    )

    r = client.get("/v1/reports/settlement?month=2026-01", headers=admin)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["currency"] == "SEK"
    lines = {line["partner"]: line for line in report["partners"]}
    assert lines["hotel"] == {
        "partner": "hotel",
        "name": "Hotell Nord",
        "points_issued": 250,
        "issued_value": 125,  # 250 points at 0.50 öre
        "points_redeemed": 300,
        "redeemed_value": 120,  # 300 points at 0.40 öre
        "net": 5,
    }
    assert (lines["cinema"]["points_issued"], lines["cinema"]["issued_value"]) == (60, 0)
    assert lines["cinema"]["points_redeemed"] == 0
    assert (
        client.get("/v1/reports/settlement?month=2026-02", headers=admin).json()["partners"][0][
            "points_issued"
        ]
        == 0
    )
    problem(client.get("/v1/reports/settlement?month=2026-13", headers=admin), 422, "invalid_month")

    balances = _sound(db, coalition)
    assert balances["partner_issuance:hotel"] == -250
    assert balances["partner_issuance:cinema"] == -60
    assert balances["partner_redemption:hotel"] == 300


def test_partner_returns_give_the_points_back_to_the_partner(
    db: Database,
    client: TestClient,
    coalition: ProgramVersion,
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
    available: Callable[..., int],
    problem: Callable[..., Json],
) -> None:
    pos, admin = key_for(coalition, "pos"), key_for(coalition, "admin")
    hotel = partner_key(coalition, "hotel")
    member = enrol(pos)
    assert _buy(client, hotel, member, 100_000, "B-1").json()["points"] == 100
    r = _buy(client, hotel, member, 40_000, "B-1R", type="return", original_external_id="B-1")
    assert r.status_code == 201, r.text
    assert r.json()["points"] == 40 and r.json()["original_external_id"] == "B-1"
    assert available(pos, member["id"]) == 60
    problem(
        _buy(client, hotel, member, 70_000, "B-2R", type="return", original_external_id="B-1"),
        422,
        "return_too_large",
    )
    problem(
        _buy(client, hotel, member, 1, "B-3R", type="return", original_external_id="nope"),
        404,
        "partner_purchase_not_found",
    )
    r = _buy(client, hotel, member, 60_000, "B-4R", type="return", original_external_id="B-1")
    assert r.json()["points"] == 60
    assert available(pos, member["id"]) == 0
    line = client.get("/v1/reports/settlement?month=2026-01", headers=admin).json()["partners"][0]
    assert (line["partner"], line["points_issued"], line["issued_value"]) == ("hotel", 0, 0)
    assert _sound(db, coalition)["partner_issuance:hotel"] == 0


def test_a_partner_key_may_do_nothing_else(
    client: TestClient,
    coalition: ProgramVersion,
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    pos = key_for(coalition, "pos")
    hotel, cinema = partner_key(coalition, "hotel"), partner_key(coalition, "cinema")
    member = enrol(pos, first_name="Bo")
    ref = member["id"]
    _buy(client, cinema, member, 10_000, "C-1")
    for method, path in (
        ("GET", "/v1/members"),
        ("GET", f"/v1/members/{ref}"),
        ("GET", f"/v1/members/{member['loyalty_number']}"),
        ("GET", f"/v1/members/{ref}/balance"),
        ("GET", f"/v1/members/{ref}/ledger"),
        ("GET", f"/v1/members/{ref}/vouchers"),
        ("GET", f"/v1/members/{ref}/tier"),
        ("GET", "/v1/rewards"),
        ("GET", "/v1/program"),
        ("GET", "/v1/reports/settlement?month=2026-01"),
        ("POST", "/v1/members"),
        ("POST", "/v1/activities"),
        ("POST", f"/v1/members/{ref}/redemptions"),
        ("POST", "/v1/vouchers/TF-AAAA-BBBB-CCCC/validate"),
    ):
        r = client.request(method, path, headers=hotel, json={})
        assert r.status_code in (403, 404, 405), (path, r.status_code)
        if r.status_code != 405:
            problem(r, 403, "forbidden")
    # Its own list never shows another partner's activities.
    assert client.get("/v1/partner/activities", headers=hotel).json()["items"] == []
    # A partner addresses members by loyalty number only, and sees the number and name.
    problem(client.get(f"/v1/partner/members/{ref}", headers=hotel), 404, "member_not_found")
    r = client.get(f"/v1/partner/members/{member['loyalty_number']}", headers=hotel)
    assert r.json() == {"loyalty_number": member["loyalty_number"], "name": "Bo"}
    # And no other scope may use the partner endpoints.
    for scope in ("read", "pos", "admin"):
        headers = key_for(coalition, scope)
        problem(client.get("/v1/partner/activities", headers=headers), 403, "forbidden")
        problem(_buy(client, headers, member, 100, f"x-{scope}"), 403, "forbidden")


def test_a_partner_removed_from_the_program_is_refused(
    make_program: Callable[..., ProgramVersion],
    client: TestClient,
    partner_key: Callable[..., Headers],
    key_for: Callable[..., Headers],
    problem: Callable[..., Json],
) -> None:
    program = make_program(partners=PARTNERS[1:])
    key = partner_key(program, "hotel")
    problem(client.get("/v1/partner/activities", headers=key), 403, "partner_unknown")


def test_settlement_months_are_the_programs_and_vesting_points_still_count(
    db: Database,
    clock: FixedClock,
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    program = make_program(partners=PARTNERS, rewards=REWARDS, vesting_days=14)
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    hotel = partner_key(program, "hotel")
    member = enrol(pos)
    # 23:30 UTC on 31 January is 00:30 on 1 February in Stockholm.
    clock.set(datetime(2026, 1, 31, 23, 30, tzinfo=UTC))
    assert _buy(client, hotel, member, 20_000, "V-1").json()["points"] == 20
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["pending"] == 20 and balance["available"] == 0

    def issued(month: str) -> int:
        r = client.get(f"/v1/reports/settlement?month={month}", headers=admin)
        return int(r.json()["partners"][0]["points_issued"])

    assert (issued("2026-01"), issued("2026-02")) == (0, 20)
    _sound(db, program)
    clock.advance(timedelta(days=15))
    Worker(db, clock, 1.0).run_once()
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 20
    assert _sound(db, program)["partner_issuance:hotel"] == -20


def test_partner_document_checks() -> None:
    base = {"key": "coal", "name": "C", "currency": "SEK"}
    validate_data({**base, "partners": PARTNERS, "rewards": REWARDS})
    with pytest.raises(SpecError) as unknown:
        validate_data({**base, "partners": PARTNERS[1:], "rewards": REWARDS})
    assert ("rewards.0.partner", "no partner 'hotel'") in unknown.value.errors
    with pytest.raises(SpecError) as twice:
        validate_data({**base, "partners": [PARTNERS[0], PARTNERS[0]]})
    assert twice.value.errors[0][0] == "partners.1.id"


def test_partner_keys_are_bound_to_a_partner(
    db: Database, clock: FixedClock, coalition: ProgramVersion
) -> None:
    with db.write() as conn:
        with pytest.raises(Problem):
            access.create_key(conn, coalition.program_id, Scope.partner, "x", clock.now())
        with pytest.raises(Problem):
            access.create_key(
                conn, coalition.program_id, Scope.pos, "x", clock.now(), partner="hotel"
            )


def test_cli_partner_keys_and_settlement_report(db: Database, tmp_path: Path) -> None:
    key = f"cli-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "p.yaml"
    path.write_text(
        f"key: {key}\nname: CLI\ncurrency: SEK\n"
        "partners:\n  - {id: hotel, name: Hotell Nord, point_price: 50}\n"
    )
    assert runner.invoke(app, ["program", "apply", str(path), "--db", db.url]).exit_code == 0
    create = ["apikey", "create", "--program", key, "--scope", "partner", "--db", db.url]
    assert runner.invoke(app, create).exit_code == 1
    assert runner.invoke(app, [*create, "--partner", "spa"]).exit_code == 1
    made = runner.invoke(app, [*create, "--partner", "hotel"])
    assert made.exit_code == 0, made.output
    assert made.output.strip().splitlines()[-1].startswith("tf_")
    report = runner.invoke(
        app, ["report", "settlement", "--month", "2026-01", "--program", key, "--db", db.url]
    )
    assert report.exit_code == 0, report.output
    assert "hotel (Hotell Nord): issued 0 points" in report.output
    bad = runner.invoke(
        app, ["report", "settlement", "--month", "January", "--program", key, "--db", db.url]
    )
    assert bad.exit_code == 1


def test_a_receipt_raced_from_many_threads_earns_once(
    db: Database,
    client: TestClient,
    coalition: ProgramVersion,
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
    available: Callable[..., int],
) -> None:
    pos, hotel = key_for(coalition, "pos"), partner_key(coalition, "hotel")
    member = enrol(pos)
    barrier = threading.Barrier(8)

    def send(_: int) -> int:
        barrier.wait()
        return int(_buy(client, hotel, member, 50_000, "RACE-1").status_code)

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(send, range(8)))
    assert codes == [200] * 7 + [201]
    assert available(pos, member["id"]) == 50
    assert _sound(db, coalition)["partner_issuance:hotel"] == -50


def test_a_price_change_never_revalues_a_past_month(
    db: Database,
    clock: FixedClock,
    client: TestClient,
    coalition: ProgramVersion,
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    """Each flow is valued at the prices of the version in force when it happened; a return
    gives the points back at the price they were issued at."""
    pos, admin = key_for(coalition, "pos"), key_for(coalition, "admin")
    hotel = partner_key(coalition, "hotel")
    member = enrol(pos)

    def night(reference: str, purchase: str) -> None:
        r = client.post(
            f"/v1/members/{member['id']}/redemptions",
            headers=pos,
            json={"reward": "hotel-night", "reference": reference},
        )
        assert r.status_code == 201, r.text
        use = {"purchase_external_id": purchase}
        r = client.post(f"/v1/partner/vouchers/{r.json()['code']}/consume", json=use, headers=hotel)
        assert r.status_code == 200, r.text

    def report(month: str) -> tuple[int, ...]:
        r = client.get(f"/v1/reports/settlement?month={month}", headers=admin)
        line = next(x for x in r.json()["partners"] if x["partner"] == "hotel")
        keys = ("points_issued", "issued_value", "points_redeemed", "redeemed_value", "net")
        return tuple(int(line[k]) for k in keys)

    # January at 0.50 öre a point issued and 0.40 öre a point redeemed: 100 + 400 points
    # issued = 250 öre; a night (300 points) redeemed at the hotel = 120 öre.
    assert _buy(client, hotel, member, 100_000, "J-1").json()["points"] == 100
    assert _buy(client, hotel, member, 400_000, "J-2").json()["points"] == 400
    night("n-1", "H-1")
    january = (500, 250, 300, 120, 130)
    assert report("2026-01") == january

    # 1 February: the hotel's prices go up to 0.80 and 0.60 öre (a new program version).
    clock.set(datetime(2026, 2, 1, 9, tzinfo=UTC))
    dearer = [{**PARTNERS[0], "point_price": 80, "redemption_price": 60}, PARTNERS[1]]
    spec = coalition.spec.model_copy(update={"partners": validate_data(
        {**coalition.spec.model_dump(mode="json"), "partners": dearer}).partners})  # fmt: skip
    with db.write() as conn:
        assert programs.apply(conn, spec, clock.now()).version == 2
    assert report("2026-01") == january  # unchanged

    # February: 100 + 300 issued at 0.80 (320 öre), J-1 returned: its 100 points go back at
    # January's 0.50 (-50 öre); a night redeemed at 0.60 (180 öre).
    assert _buy(client, hotel, member, 100_000, "F-1").json()["points"] == 100
    assert _buy(client, hotel, member, 300_000, "F-2").json()["points"] == 300
    back = _buy(client, hotel, member, 100_000, "J-1R", type="return", original_external_id="J-1")
    assert back.json()["points"] == 100
    night("n-2", "H-2")
    assert report("2026-02") == (300, 270, 300, 180, 90)
    assert report("2026-01") == january
    _sound(db, coalition)


def test_a_partner_voucher_is_used_only_at_its_partner(
    db: Database,
    client: TestClient,
    coalition: ProgramVersion,
    key_for: Callable[..., Headers],
    partner_key: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    """The program owes a partner only for a reward the partner delivers: the program's own
    till refuses the voucher (it stays usable at the partner) and settles nothing."""
    pos, admin = key_for(coalition, "pos"), key_for(coalition, "admin")
    hotel = partner_key(coalition, "hotel")
    member = enrol(pos)
    assert _buy(client, hotel, member, 300_000, "P-1").json()["points"] == 300
    r = client.post(
        f"/v1/members/{member['id']}/redemptions",
        headers=pos,
        json={"reward": "hotel-night", "reference": "night"},
    )
    code = r.json()["code"]
    basket = {"basket": {"amount": 10_000}}
    r = client.post(f"/v1/vouchers/{code}/validate", json=basket, headers=pos)
    assert (r.json()["valid"], r.json()["reason"]) == (False, "partner_voucher")
    use = {"purchase_external_id": "till-1"}
    problem(
        client.post(f"/v1/vouchers/{code}/consume", json=use, headers=pos), 409, "partner_voucher"
    )

    def owed() -> tuple[int, int]:
        line = client.get("/v1/reports/settlement?month=2026-01", headers=admin).json()["partners"][
            0
        ]
        return line["points_redeemed"], line["redeemed_value"]

    assert owed() == (0, 0)
    r = client.post(f"/v1/partner/vouchers/{code}/consume", json=use, headers=hotel)
    assert (r.status_code, r.json()["voucher"]["status"]) == (200, "used")
    assert owed() == (300, 120)  # 300 points at 0.40 öre
    _sound(db, coalition)
