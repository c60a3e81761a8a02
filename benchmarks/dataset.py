"""The databases a benchmark runs on, and the data loaded into them first.

`postgres()` starts a throwaway PostgreSQL server (tests/pgserver.py) with its data on
disk and production durability; `sqlite_file()` makes a temporary SQLite file. `load()`
migrates the schema and adds the benchmark program, a `pos` API key, the members with
their points accounts and a history of earns.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import select

import rawsql
from machine import parent_pid
from serve import PROGRAM_KEY
from trofast import migrations
from trofast.access import service as access
from trofast.kit.auth import Scope
from trofast.kit.db import connect
from trofast.ledger.models import accounts
from trofast.members import loyalty_number
from trofast.members.models import members
from trofast.programs import service as programs
from trofast.programs.spec import ProgramSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import pgserver

PROGRAM: dict[str, Any] = {
    "key": PROGRAM_KEY,
    "name": "Benchmark café",
    "currency": "SEK",
    "timezone": "Europe/Stockholm",
    "earn": {"points": 1, "per_amount": 100},
    "expiry": {"kind": "after_months", "months": 24},
}
BATCH = 1_000
DURABLE_PG = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


@dataclass(frozen=True)
class Loaded:
    """A database with the benchmark program, its members and history."""

    url: str
    dialect: rawsql.Dialect
    token: str
    members: tuple[int, int]  # member ids are exactly this range
    postmaster: int | None  # PostgreSQL's main process, to count the database's CPU


@contextlib.contextmanager
def postgres(fast: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """A throwaway PostgreSQL server with its data on disk; with production durability
    (fsync, synchronous_commit, full_page_writes on) unless `fast` keeps the test settings."""
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())  # not /dev/shm: a real disk
    with pgserver.throwaway_postgres() as server_url:
        url = pgserver.create_database(server_url, "bench")
        with psycopg.connect(rawsql.libpq_url(url), autocommit=True) as conn:
            if not fast:
                for name, value in DURABLE_PG.items():
                    conn.execute(f"ALTER SYSTEM SET {name} = {value}")
                conn.execute("SELECT pg_reload_conf()")
                time.sleep(0.2)
            settings: dict[str, Any] = {}
            for name in ("server_version", *DURABLE_PG):
                row = conn.execute(f"SHOW {name}").fetchone()
                settings[name] = None if row is None else row[0]
        yield url, settings


@contextlib.contextmanager
def sqlite_file() -> Iterator[tuple[str, dict[str, Any]]]:
    """A temporary SQLite file; Trofast and the baselines both use WAL, synchronous=NORMAL."""
    with tempfile.TemporaryDirectory(prefix="trofast-bench-") as tmp:
        settings = {
            "server_version": sqlite3.sqlite_version,
            "journal_mode": "wal",
            "synchronous": "normal",
        }
        yield f"sqlite:///{tmp}/bench.db", settings


def load(url: str, member_count: int, history: int, rng: random.Random) -> Loaded:
    """Migrate; create the program, a pos key and the members; add history in raw batches."""
    dialect = rawsql.dialect_of(url)
    migrations.upgrade(url)
    token, ids = _program_and_members(url, member_count, rng)
    low, high = ids[0], ids[-1]
    if high - low + 1 != len(ids):
        raise RuntimeError("member ids are not one contiguous range")
    raw = rawsql.open_connection(url)
    try:
        target = rawsql.load_target(raw, dialect, PROGRAM_KEY)
        now = datetime.now(UTC)
        year = 365 * 86_400
        for start in range(0, history, BATCH):
            earns = [
                rawsql.EarnIn(
                    f"history-{i}", rng.randint(low, high), rng.randint(1_000, 100_000),
                    now - timedelta(seconds=rng.randint(60, year)),
                )
                for i in range(start, min(start + BATCH, history))
            ]  # fmt: skip
            rawsql.earn_batch(raw, dialect, target, earns, now)
    finally:
        raw.close()
    _settle(url, dialect)
    postmaster = _postmaster_pid(url) if dialect == "postgresql" else None
    return Loaded(url, dialect, token, (low, high), postmaster)


def _program_and_members(url: str, count: int, rng: random.Random) -> tuple[str, list[int]]:
    db = connect(url)
    now = datetime.now(UTC)
    numbers: set[str] = set()
    while len(numbers) < count:
        numbers.add(loyalty_number.generate(rng))
    try:
        with db.write() as conn:
            program = programs.apply(conn, ProgramSpec.model_validate(PROGRAM), now)
            pid = program.program_id
            token, _ = access.create_key(conn, pid, Scope.pos, "benchmark", now)
            conn.execute(
                members.insert(),
                [
                    {
                        "program_id": pid, "loyalty_number": number,
                        "email": f"member{i}@example.com", "marketing_consent": False,
                        "channel": "store", "status": "active", "enrolled_at": now,
                        "updated_at": now,
                    }
                    for i, number in enumerate(sorted(numbers))
                ],
            )  # fmt: skip
            ids = list(
                conn.execute(
                    select(members.c.id).where(members.c.program_id == pid).order_by(members.c.id)
                ).scalars()
            )
            conn.execute(
                accounts.insert(),
                [
                    {"program_id": pid, "member_id": member_id, "kind": "member",
                     "unit": "points", "debits_must_not_exceed_credits": True}
                    for member_id in ids
                ],
            )  # fmt: skip
    finally:
        db.dispose()
    return token, [int(i) for i in ids]


def _settle(url: str, dialect: rawsql.Dialect) -> None:
    """Start the measurements from a quiet state: statistics fresh, WAL flushed."""
    if dialect == "postgresql":
        with psycopg.connect(rawsql.libpq_url(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
    else:
        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lite.close()


def _postmaster_pid(url: str) -> int:
    """The PostgreSQL server's main process: the parent of a backend."""
    with psycopg.connect(rawsql.libpq_url(url)) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        if backend is None:
            raise RuntimeError("no backend pid")
        # While the connection is open: a closed backend's /proc entry is gone.
        return parent_pid(int(backend[0]))
