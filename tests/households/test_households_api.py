"""Households over HTTP: create, read with pooled points, invite, accept, decline, leave
(with the owner's succession), one household per member, program isolation, events.
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from trofast.kit.clock import FixedClock
from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]


def create(client: TestClient, headers: Headers, owner: Any, name: str = "Home") -> Json:
    r = client.post("/v1/households", headers=headers, json={"owner": owner, "name": name})
    assert r.status_code == 201, r.text
    body: Json = r.json()
    return body


def invite(client: TestClient, headers: Headers, household: Json, member: Any) -> Json:
    r = client.post(
        f"/v1/households/{household['id']}/invites", headers=headers, json={"member": member}
    )
    assert r.status_code == 201, r.text
    body: Json = r.json()
    return body


def accept(client: TestClient, headers: Headers, token: str) -> Json:
    r = client.post(f"/v1/households/invites/{token}/accept", headers=headers)
    assert r.status_code == 200, r.text
    body: Json = r.json()
    return body


def test_a_household_pools_its_members_points(
    client: TestClient,
    clock: FixedClock,
    pos: Headers,
    enrol: Callable[..., Json],
    give: Callable[[Json, int], None],
    events: Callable[[str], list[Json]],
) -> None:
    anna, bo = enrol(pos, first_name="Anna"), enrol(pos)
    give(anna, 120)
    give(bo, 30)
    home = create(client, pos, anna["loyalty_number"], "The Lindqvists")
    assert (home["name"], home["owner_id"], home["pooled_available"]) == (
        "The Lindqvists",
        anna["id"],
        120,
    )
    (only,) = home["members"]
    assert only | {"member_id": anna["id"], "role": "owner", "available": 120} == only
    assert only["first_name"] == "Anna"

    sent = invite(client, pos, home, bo["id"])
    assert sent["status"] == "pending" and len(sent["token"]) >= 40
    assert sent["member_id"] == bo["id"]
    clock.advance(timedelta(hours=1))
    joined = accept(client, pos, sent["token"])
    assert [(m["member_id"], m["role"]) for m in joined["members"]] == [
        (anna["id"], "owner"),
        (bo["id"], "member"),
    ]
    assert (joined["pooled_available"], joined["pooled_pending"]) == (150, 0)
    assert client.get(f"/v1/households/{home['id']}", headers=pos).json() == joined
    r = client.get(f"/v1/members/{bo['loyalty_number']}", headers=pos)
    assert r.json()["household_id"] == home["id"]
    assert client.get(f"/v1/members/{enrol(pos)['id']}", headers=pos).json()["household_id"] is None
    assert [
        (e["payload"]["member_id"], e["payload"]["role"]) for e in events("household.joined")
    ] == [
        (anna["id"], "owner"),
        (bo["id"], "member"),
    ]


def test_a_member_is_in_at_most_one_household(
    client: TestClient,
    pos: Headers,
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    anna, bo, cilla = enrol(pos), enrol(pos), enrol(pos)
    home = create(client, pos, anna["id"])
    cabin = create(client, pos, bo["id"])
    body = problem(
        client.post("/v1/households", headers=pos, json={"owner": anna["id"], "name": "Two"}),
        409,
        "already_in_household",
    )
    assert body["household_id"] == home["id"]
    problem(
        client.post(f"/v1/households/{home['id']}/invites", headers=pos, json={"member": bo["id"]}),
        409,
        "already_in_household",
    )
    # Invited to both; the second acceptance is refused.
    to_home = invite(client, pos, home, cilla["id"])
    to_cabin = invite(client, pos, cabin, cilla["id"])
    problem(
        client.post(
            f"/v1/households/{home['id']}/invites", headers=pos, json={"member": cilla["id"]}
        ),
        409,
        "invite_pending",
    )
    accept(client, pos, to_cabin["token"])
    problem(
        client.post(f"/v1/households/invites/{to_home['token']}/accept", headers=pos),
        409,
        "already_in_household",
    )
    home_now = client.get(f"/v1/households/{home['id']}", headers=pos).json()
    assert [m["member_id"] for m in home_now["members"]] == [anna["id"]]


def test_invitations_expire_and_are_answered_once(
    client: TestClient,
    clock: FixedClock,
    pos: Headers,
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    anna, bo, cilla = enrol(pos), enrol(pos), enrol(pos)
    home = create(client, pos, anna["id"])
    late = invite(client, pos, home, bo["id"])
    declined = invite(client, pos, home, cilla["id"])
    r = client.post(f"/v1/households/invites/{declined['token']}/decline", headers=pos)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "declined" and r.json()["token"] is None
    for action in ("accept", "decline"):
        body = problem(
            client.post(f"/v1/households/invites/{declined['token']}/{action}", headers=pos),
            409,
            "invite_not_pending",
        )
        assert body["invite_status"] == "declined"

    clock.advance(timedelta(days=14))
    problem(
        client.post(f"/v1/households/invites/{late['token']}/accept", headers=pos),
        409,
        "invite_expired",
    )
    # A fresh invitation works, and once accepted it cannot be used again.
    again = invite(client, pos, home, bo["id"])
    accept(client, pos, again["token"])
    problem(
        client.post(f"/v1/households/invites/{again['token']}/accept", headers=pos),
        409,
        "invite_not_pending",
    )
    problem(
        client.post("/v1/households/invites/no-such-token/accept", headers=pos),
        404,
        "invite_not_found",
    )


def test_leaving_hands_the_household_to_the_longest_standing_member(
    client: TestClient,
    clock: FixedClock,
    pos: Headers,
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
    events: Callable[[str], list[Json]],
) -> None:
    anna, bo, cilla, dan = enrol(pos), enrol(pos), enrol(pos), enrol(pos)
    home = create(client, pos, anna["id"])
    to_cilla = invite(client, pos, home, cilla["id"])
    to_bo = invite(client, pos, home, bo["id"])
    clock.advance(timedelta(hours=1))
    accept(client, pos, to_bo["token"])  # Bo answers first: longer-standing than Cilla
    clock.advance(timedelta(hours=1))
    accept(client, pos, to_cilla["token"])

    r = client.post(f"/v1/members/{anna['id']}/household/leave", headers=pos)
    assert r.status_code == 200, r.text
    assert r.json() == {"member_id": anna["id"], "household_id": home["id"], "owner_id": bo["id"]}
    now = client.get(f"/v1/households/{home['id']}", headers=pos).json()
    assert now["owner_id"] == bo["id"]
    assert [(m["member_id"], m["role"]) for m in now["members"]] == [
        (bo["id"], "owner"),
        (cilla["id"], "member"),
    ]
    assert client.get(f"/v1/members/{anna['id']}", headers=pos).json()["household_id"] is None
    problem(
        client.post(f"/v1/members/{anna['id']}/household/leave", headers=pos),
        409,
        "not_in_household",
    )

    # A member (not the owner) leaves: the owner stays.
    r = client.post(f"/v1/members/{cilla['loyalty_number']}/household/leave", headers=pos)
    assert r.json()["owner_id"] == bo["id"]
    # The last one leaves: nobody owns it, open invitations are revoked, nobody can join.
    pending = invite(client, pos, home, dan["id"])
    r = client.post(f"/v1/members/{bo['id']}/household/leave", headers=pos)
    assert r.json()["owner_id"] is None
    empty = client.get(f"/v1/households/{home['id']}", headers=pos).json()
    assert empty["members"] == [] and empty["pooled_available"] == 0
    body = problem(
        client.post(f"/v1/households/invites/{pending['token']}/accept", headers=pos),
        409,
        "invite_not_pending",
    )
    assert body["invite_status"] == "revoked"
    problem(
        client.post(
            f"/v1/households/{home['id']}/invites", headers=pos, json={"member": dan["id"]}
        ),
        409,
        "household_empty",
    )
    left = [(e["payload"]["member_id"], e["payload"]["owner_id"]) for e in events("household.left")]
    assert left == [(anna["id"], bo["id"]), (cilla["id"], bo["id"]), (bo["id"], None)]


def test_leaving_and_rejoining_raises_each_event(
    client: TestClient,
    clock: FixedClock,
    pos: Headers,
    enrol: Callable[..., Json],
    events: Callable[[str], list[Json]],
) -> None:
    """Two rounds of joining and leaving: each raises its own events."""
    anna, bo = enrol(pos), enrol(pos)
    home = create(client, pos, anna["id"])
    for _ in range(2):
        accept(client, pos, invite(client, pos, home, bo["id"])["token"])
        r = client.post(f"/v1/members/{bo['id']}/household/leave", headers=pos)
        assert r.status_code == 200, r.text
        clock.advance(timedelta(seconds=1))
    assert [e["payload"]["member_id"] for e in events("household.joined")] == [
        anna["id"],
        bo["id"],
        bo["id"],
    ]
    assert [e["payload"]["member_id"] for e in events("household.left")] == [bo["id"], bo["id"]]


def test_households_and_invitations_belong_to_their_program(
    client: TestClient,
    pos: Headers,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    anna, bo = enrol(pos), enrol(pos)
    home = create(client, pos, anna["id"])
    sent = invite(client, pos, home, bo["id"])
    elsewhere = key_for(make_program(), "pos")
    problem(
        client.get(f"/v1/households/{home['id']}", headers=elsewhere), 404, "household_not_found"
    )
    problem(
        client.post(f"/v1/households/invites/{sent['token']}/accept", headers=elsewhere),
        404,
        "invite_not_found",
    )
    problem(
        client.post(
            f"/v1/households/{home['id']}/invites", headers=elsewhere, json={"member": bo["id"]}
        ),
        404,
        "household_not_found",
    )
    problem(
        client.post("/v1/households", headers=elsewhere, json={"owner": bo["id"], "name": "x"}),
        404,
        "member_not_found",
    )
    # Reading needs the read scope, changing the pos scope.
    read = key_for(make_program(), "read")
    problem(
        client.post("/v1/households", headers=read, json={"owner": 1, "name": "x"}),
        403,
        "forbidden",
    )


def test_create_and_invite_take_an_idempotency_key(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    anna, bo = enrol(pos), enrol(pos)
    body = {"owner": anna["id"], "name": "Home"}
    first = client.post("/v1/households", headers=pos | {"Idempotency-Key": "h-1"}, json=body)
    again = client.post("/v1/households", headers=pos | {"Idempotency-Key": "h-1"}, json=body)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == first.json()
    url = f"/v1/households/{first.json()['id']}/invites"
    one = client.post(url, headers=pos | {"Idempotency-Key": "i-1"}, json={"member": bo["id"]})
    two = client.post(url, headers=pos | {"Idempotency-Key": "i-1"}, json={"member": bo["id"]})
    assert one.status_code == two.status_code == 201 and one.json() == two.json()
