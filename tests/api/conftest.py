"""Helpers for the HTTP API tests: send activities and snapshot a member's state (`enrol`
and `problem` are in tests/conftest.py). Every test here runs on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

Headers = dict[str, str]
_serial = itertools.count(1)


@pytest.fixture
def buy(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Send an accepted purchase (SEK, 1 point per 10.00 by default) and return the answer."""

    def send(headers: Headers, member: dict[str, Any] | None, amount: int, **extra: Any) -> Any:
        body: dict[str, Any] = {
            "type": "purchase",
            "external_id": f"p{next(_serial)}",
            "amount": amount,
            "currency": "SEK",
            **extra,
        }
        if member is not None:
            body["member_id"] = member["id"]
        r = client.post("/v1/activities", json=body, headers=headers)
        assert r.status_code == 201, r.text
        return r.json()

    return send


@pytest.fixture
def state(client: TestClient) -> Callable[[Headers, Any], dict[str, Any]]:
    """Everything visible about a member: the member, its balance and its whole ledger."""

    def read(headers: Headers, ref: Any) -> dict[str, Any]:
        out = {}
        for name, path in (("member", ""), ("balance", "/balance"), ("ledger", "/ledger")):
            r = client.get(
                f"/v1/members/{ref}{path}?limit=500"
                if name == "ledger"
                else f"/v1/members/{ref}{path}",
                headers=headers,
            )
            assert r.status_code == 200, r.text
            out[name] = r.json()
        return out

    return read


@pytest.fixture
def available(client: TestClient) -> Callable[[Headers, Any], int]:
    def read(headers: Headers, ref: Any) -> int:
        r = client.get(f"/v1/members/{ref}/balance", headers=headers)
        assert r.status_code == 200, r.text
        return int(r.json()["available"])

    return read


@pytest.fixture
def listed(client: TestClient) -> Callable[..., list[int]]:
    """The ids GET /v1/members answers (one page) for the given query parameters."""

    def ids(headers: Headers, **params: Any) -> list[int]:
        r = client.get("/v1/members", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["items"]]

    return ids
