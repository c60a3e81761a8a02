"""Helpers for the household and transfer tests (HTTP through TestClient, SQLite and
PostgreSQL): give members points and read events (`enrol` and `problem`: tests/conftest.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

Headers = dict[str, str]
Json = dict[str, Any]
_serial = itertools.count(1)


@pytest.fixture
def give(client: TestClient, admin: Headers) -> Callable[[Json, int], None]:
    """Give a member points (an admin adjustment: a lot of their own)."""

    def adjust(member: Json, points: int) -> None:
        r = client.post(
            f"/v1/members/{member['id']}/adjustments",
            headers=admin,
            json={"points": points, "reason": "test points", "reference": f"g{next(_serial)}"},
        )
        assert r.status_code == 201, r.text

    return adjust


@pytest.fixture
def available(client: TestClient, pos: Headers) -> Callable[[Json], int]:
    def read(member: Json) -> int:
        r = client.get(f"/v1/members/{member['id']}/balance", headers=pos)
        assert r.status_code == 200, r.text
        return int(r.json()["available"])

    return read


@pytest.fixture
def events(client: TestClient, pos: Headers) -> Callable[[str], list[Json]]:
    """The program's events of one topic, oldest first."""

    def read(topic: str) -> list[Json]:
        r = client.get("/v1/events", params={"topic": topic, "limit": 500}, headers=pos)
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["items"]))

    return read


@pytest.fixture
def snapshot(client: TestClient, pos: Headers) -> Callable[..., Json]:
    """Everything visible about some members and the program's events."""

    def read(*members: Json) -> Json:
        out: Json = {"events": client.get("/v1/events?limit=500", headers=pos).json()}
        for m in members:
            for path in ("", "/balance", "/ledger?limit=500"):
                r = client.get(f"/v1/members/{m['id']}{path}", headers=pos)
                assert r.status_code == 200, r.text
                out[f"{m['id']}{path}"] = r.json()
        return out

    return read
