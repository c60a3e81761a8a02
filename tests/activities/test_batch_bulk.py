"""The batch endpoint's bulk path: order, duplicates inside a batch, mixed items, replays."""

from fastapi.testclient import TestClient

from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion


def test_batch_mixed(
    client: TestClient, pos: dict[str, str], db: Database, program: ProgramVersion
) -> None:
    m = client.post("/v1/members", json={"email": "b@example.com"}, headers=pos).json()
    m2 = client.post("/v1/members", json={"email": "c@example.com"}, headers=pos).json()
    items = [
        {
            "type": "purchase",
            "external_id": f"b{i}",
            "member_id": m["id"] if i % 2 else m2["id"],
            "amount": 10000 + i,
            "currency": "SEK",
        }
        for i in range(10)
    ]
    items.append(
        {
            "type": "purchase",
            "external_id": "b1",
            "member_id": m["id"],
            "amount": 10001,
            "currency": "SEK",
        }
    )
    items.append(
        {
            "type": "purchase",
            "external_id": "b2",
            "member_id": m["id"],
            "amount": 1,
            "currency": "SEK",
        }
    )
    items.append(
        {
            "type": "purchase",
            "external_id": "bad",
            "member_id": 999999,
            "amount": 1,
            "currency": "SEK",
        }
    )
    items.append({"type": "purchase", "external_id": "neg", "amount": -1, "currency": "SEK"})
    items.append({"type": "return", "external_id": "ret1", "original_external_id": "b1"})
    items.append({"type": "purchase", "external_id": "anon", "amount": 5000, "currency": "SEK"})
    r = client.post("/v1/activities/batch", json={"activities": items}, headers=pos)
    assert r.status_code == 200, r.text
    body = r.json()
    st = [i["status"] for i in body["items"]]
    assert st == [201] * 10 + [200, 409, 404, 422, 201, 201], st
    assert body["items"][9]["result"]["balance"]["available"] == 50
    assert body["items"][14]["result"]["points"] == -10
    bal = client.get(f"/v1/members/{m['id']}/balance", headers=pos).json()
    assert bal["available"] == 40, bal
    r2 = client.post("/v1/activities/batch", json={"activities": items}, headers=pos)
    assert [i["status"] for i in r2.json()["items"]] == [200] * 11 + [409, 404, 422, 200, 200]
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
