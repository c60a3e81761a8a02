"""Fixtures: every database test runs on SQLite (a file, WAL) and on a real PostgreSQL
server that this test run starts and throws away. Tests isolate themselves by creating
their own program: everything in Trofast is scoped by program."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import pgserver
from trofast import migrations
from trofast.access import service as access
from trofast.app import create_app
from trofast.kit.auth import Scope
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database, connect
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec

START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
_program_numbers = itertools.count(1)
_serial = itertools.count(1)
Headers = dict[str, str]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server; failing to start one fails the run, never skips."""
    with pgserver.throwaway_postgres() as url:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        yield pgserver.create_database(url, f"trofast_{worker}")


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'trofast.db'}"


@pytest.fixture(scope="session")
def _databases(postgres_url: str, sqlite_url: str) -> Iterator[dict[str, Database]]:
    opened: dict[str, Database] = {}
    for name, url in (("sqlite", sqlite_url), ("postgresql", postgres_url)):
        migrations.upgrade(url)
        opened[name] = connect(url, pool_size=24)
    yield opened
    for database in opened.values():
        database.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, _databases: dict[str, Database]) -> Database:
    return _databases[request.param]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def make_program(db: Database, clock: FixedClock) -> Callable[..., ProgramVersion]:
    """Apply a fresh program (a unique key) with the given document fields."""

    def make(**fields: Any) -> ProgramVersion:
        document: dict[str, Any] = {
            "key": f"t{os.getpid()}-{next(_program_numbers)}",
            "name": "Test café",
            "currency": "SEK",
            "timezone": "Europe/Stockholm",
            "earn": {"points": 1, "per_amount": 1000},
            **fields,
        }
        with db.write() as conn:
            return programs.apply(conn, ProgramSpec.model_validate(document), clock.now())

    return make


@pytest.fixture
def program(make_program: Callable[..., ProgramVersion]) -> ProgramVersion:
    return make_program()


@pytest.fixture
def client(db: Database, clock: FixedClock) -> TestClient:
    return TestClient(create_app(db, clock))


@pytest.fixture
def key_for(db: Database, clock: FixedClock) -> Callable[[ProgramVersion, str], dict[str, str]]:
    """Authorization headers for a new key of `program` with `scope`."""

    def make(program: ProgramVersion, scope: str) -> dict[str, str]:
        with db.write() as conn:
            token, _ = access.create_key(
                conn, program.program_id, Scope(scope), "test", clock.now()
            )
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def pos(program: ProgramVersion, key_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return key_for(program, "pos")


@pytest.fixture
def admin(program: ProgramVersion, key_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return key_for(program, "admin")


@pytest.fixture
def problem() -> Callable[..., dict[str, Any]]:
    """Assert `response` is an RFC 9457 problem with `status` and `code`; return its body."""

    def check(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body: dict[str, Any] = response.json()
        assert body["status"] == status and body["code"] == code, body
        assert body["type"].endswith(code) and body["title"] and body["detail"]
        return body

    return check


@pytest.fixture
def enrol(client: TestClient) -> Callable[..., dict[str, Any]]:
    """Enrol a member (a unique e-mail unless given) and return it."""

    def make(headers: Headers, **fields: Any) -> dict[str, Any]:
        if "email" not in fields and "phone" not in fields:
            fields["email"] = f"m{next(_serial)}@example.com"
        r = client.post("/v1/members", json=fields, headers=headers)
        assert r.status_code == 201, r.text
        member: dict[str, Any] = r.json()
        return member

    return make
