"""Fixtures of the partner tests: a member's available points, a coalition program and
partner-bound keys. Every test runs on SQLite and on PostgreSQL (`db`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

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
