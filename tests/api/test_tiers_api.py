"""GET/PUT /v1/members/{ref}/tier and the tier history, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs.service import ProgramVersion

TIERS = [
    {"id": "member", "name": {"en": "Member", "sv": "Medlem"}},
    {
        "id": "silver",
        "name": {"en": "Silver", "sv": "Silver"},
        "threshold": {"spend": 500_000},
        "earn_multiplier_percent": 125,
        "perks": ["free_shipping"],
    },
    {
        "id": "gold",
        "name": {"en": "Gold", "sv": "Guld"},
        "threshold": {"spend": 1_500_000},
        "earn_multiplier_percent": 150,
        "perks": ["free_shipping", "vip_service"],
        "welcome_points": 500,
    },
]


def test_progress_manual_floor_and_history(
    client: TestClient,
    db: Database,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., dict[str, str]],
    enrol: Callable[..., dict[str, Any]],
    buy: Callable[..., Any],
    problem: Callable[..., dict[str, Any]],
) -> None:
    program = make_program(tiers=TIERS, locales=["sv", "en"])
    pos, admin, read = (key_for(program, s) for s in ("pos", "admin", "read"))
    m = enrol(pos)
    buy(pos, m, 376_000)
    r = client.get(f"/v1/members/{m['id']}/tier", headers=read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tier"] == "member" and body["name"] == "Medlem"
    assert body["secured_until"] is None and body["floor"] is None
    assert body["metrics"] == {"spend": 376_000}
    assert (body["window_from"], body["window_until"]) == ("2026-01-01", "2026-12-31")
    assert body["next"] == {
        "tier": "silver",
        "name": "Silver",
        "combine": "all",
        "needed": [{"metric": "spend", "needed": 124_000, "by": "2026-12-31"}],
    }
    buy(pos, m, 124_000)
    body = client.get(f"/v1/members/{m['loyalty_number']}/tier?locale=en", headers=read).json()
    assert body["tier"] == "silver" and body["secured_until"] == "2027-12-31"
    assert body["earn_multiplier_percent"] == 125 and body["perks"] == ["free_shipping"]
    assert body["next"]["name"] == "Gold" and body["next"]["needed"][0]["needed"] == 1_000_000

    r = client.put(
        f"/v1/members/{m['id']}/tier", json={"tier": "gold", "until": "2026-06-30"}, headers=admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["tier"] == "gold" and r.json()["floor"] == {
        "tier": "gold",
        "until": "2026-06-30",
    }
    assert r.json()["next"] is None
    history = client.get(f"/v1/members/{m['id']}/tier/history", headers=read).json()["items"]
    assert [(h["from_tier"], h["to_tier"], h["reason"]) for h in history] == [
        ("silver", "gold", "manual"),
        ("member", "silver", "upgrade"),
    ]
    assert history[0]["actor"]
    balance = client.get(f"/v1/members/{m['id']}/balance", headers=read).json()
    assert balance["available"] == 500 + 500  # purchase points plus Gold's welcome points

    problem(
        client.put(
            f"/v1/members/{m['id']}/tier",
            json={"tier": "platinum", "until": "2026-06-30"},
            headers=admin,
        ),
        422,
        "unknown_tier",
    )
    problem(
        client.put(
            f"/v1/members/{m['id']}/tier",
            json={"tier": "gold", "until": "2026-01-14"},
            headers=admin,
        ),
        422,
        "until_in_past",
    )
    r = client.put(
        f"/v1/members/{m['id']}/tier", json={"tier": "gold", "until": "2026-06-30"}, headers=pos
    )
    assert r.status_code == 403
    problem(client.get("/v1/members/999999999/tier", headers=read), 404, "member_not_found")


def test_program_without_tiers(
    client: TestClient,
    program: ProgramVersion,
    key_for: Callable[..., dict[str, str]],
    enrol: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    admin = key_for(program, "admin")
    m = enrol(admin)
    problem(client.get(f"/v1/members/{m['id']}/tier", headers=admin), 409, "tiers_not_enabled")
    problem(
        client.put(
            f"/v1/members/{m['id']}/tier",
            json={"tier": "gold", "until": "2026-06-30"},
            headers=admin,
        ),
        409,
        "tiers_not_enabled",
    )
