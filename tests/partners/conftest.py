"""Fixtures of the partner tests: the API test helpers, a coalition program and
partner-bound keys. Every test runs on SQLite and on PostgreSQL (`db`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from coalition import PARTNERS, REWARDS
from fastapi.testclient import TestClient

from trofast.access import service as access
from trofast.kit.auth import Scope
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]
_serial = itertools.count(1)


@pytest.fixture
def problem() -> Callable[..., Json]:
    """Assert `response` is an RFC 9457 problem with `status` and `code`; return its body."""

    def check(response: httpx.Response, status: int, code: str) -> Json:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body: Json = response.json()
        assert body["status"] == status and body["code"] == code, body
        return body

    return check


@pytest.fixture
def enrol(client: TestClient) -> Callable[..., Json]:
    def make(headers: Headers, **fields: Any) -> Json:
        fields.setdefault("email", f"partner-m{next(_serial)}@example.com")
        r = client.post("/v1/members", json=fields, headers=headers)
        assert r.status_code == 201, r.text
        member: Json = r.json()
        return member

    return make


@pytest.fixture
def available(client: TestClient) -> Callable[[Headers, Any], int]:
    def read(headers: Headers, ref: Any) -> int:
        r = client.get(f"/v1/members/{ref}/balance", headers=headers)
        assert r.status_code == 200, r.text
        return int(r.json()["available"])

    return read


@pytest.fixture
def coalition(make_program: Callable[..., ProgramVersion]) -> ProgramVersion:
    return make_program(partners=PARTNERS, rewards=REWARDS)


@pytest.fixture
def partner_key(db: Database, clock: FixedClock) -> Callable[[ProgramVersion, str], dict[str, str]]:
    """Authorization headers of a new partner key of `program` for `partner`."""

    def make(program: ProgramVersion, partner: str) -> dict[str, str]:
        with db.write() as conn:
            token, _ = access.create_key(
                conn, program.program_id, Scope.partner, "partner", clock.now(), partner=partner
            )
        return {"Authorization": f"Bearer {token}"}

    return make
