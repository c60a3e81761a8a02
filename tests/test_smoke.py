import gc

from fastapi.testclient import TestClient

from trofast.app import create_app
from trofast.kit.db import Database


def test_enrol_earn_spend(client: TestClient, pos: dict[str, str]) -> None:
    r = client.post("/v1/members", json={"email": "a@example.com"}, headers=pos)
    assert r.status_code == 201, r.text
    member = r.json()
    r = client.post(
        "/v1/activities",
        json={
            "type": "purchase",
            "external_id": "r1",
            "member_id": member["id"],
            "amount": 25000,
            "currency": "SEK",
        },
        headers=pos,
    )
    assert r.status_code == 201, r.text
    assert r.json()["points"] == 25
    r = client.post(
        f"/v1/members/{member['loyalty_number']}/spend",
        json={"points": 10, "reference": "o1"},
        headers=pos,
    )
    assert r.status_code == 201, r.text
    assert r.json()["available"] == 15
    r = client.get(f"/v1/members/{member['id']}/balance", headers=pos)
    assert r.json()["available"] == 15, r.text
    r = client.get(f"/v1/members/{member['id']}/ledger", headers=pos)
    assert [e["points"] for e in r.json()["items"]] == [-10, 25], r.text


def test_a_server_app_freezes_its_startup_heap(db: Database) -> None:
    """`trofast serve` builds its app with freeze_gc: what is alive at startup is kept out of
    the garbage collector's full collections (their pauses were the earn's p99)."""
    gc.unfreeze()
    try:
        with TestClient(create_app(db)) as plain:
            assert plain.get("/healthz").status_code == 200
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(db, freeze_gc=True)) as frozen:
            assert frozen.get("/healthz").status_code == 200
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # the test process builds many apps: leave nothing frozen
