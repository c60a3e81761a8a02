"""The earn written in raw SQL, with no Trofast code: the naive baselines of PERFORMANCE.md.

Both baselines write the real tables (created by Trofast's migrations) and the same rows that
an earn through the API writes: the activity, a ledger transaction header, a lot, one
transfer leg (issuance -> member, as our schema has) and the member account's counters,
updated under a row lock. Only the DB-API driver is used (psycopg 3 or sqlite3).

- `earn_one`: one earn per transaction, 8 round trips (BEGIN, lock, 5 writes, COMMIT).
- `earn_batch`: many earns per transaction with `executemany`, ids assigned up front.
- `naive_app`: a minimal FastAPI app whose plain-`def` endpoint runs `earn_one` over a pool.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import psycopg
from psycopg.types.json import Json
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

Dialect = Literal["postgresql", "sqlite"]
ACTOR = "bench:raw"


class Cursor(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...
    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class DBAPIConnection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """What the raw writes need to know about the program they earn in."""

    program_id: int
    program_version: int
    issuance_account_id: int
    points: int
    per_amount: int
    expiry_years: int
    currency: str


@dataclass(frozen=True)
class EarnIn:
    external_id: str
    member_id: int
    amount: int
    occurred_at: datetime | None = None


def dialect_of(url: str) -> Dialect:
    return "sqlite" if make_url(url).get_backend_name() == "sqlite" else "postgresql"


def open_connection(url: str) -> DBAPIConnection:
    """A plain driver connection with the settings Trofast uses (SQLite: WAL, NORMAL, FKs)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(
            parsed.database or "", isolation_level=None, check_same_thread=False, timeout=30
        )
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            conn.execute(f"PRAGMA {pragma}")
        return conn
    return psycopg.connect(libpq_url(url))


def libpq_url(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (what libpq understands)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def load_target(conn: DBAPIConnection, dialect: Dialect, program_key: str) -> Target:
    """The program's ids and earn rate, read once (a real app would cache them too)."""
    cur = conn.cursor()
    cur.execute(
        _sql(
            dialect,
            "SELECT p.id, p.current_version, v.document, a.id FROM programs p"
            " JOIN program_versions v ON v.program_id = p.id AND v.version = p.current_version"
            " JOIN accounts a ON a.program_id = p.id AND a.member_id IS NULL"
            " AND a.kind = 'issuance' WHERE p.key = %(key)s",
        ),
        {"key": program_key},
    )
    program_id, version, document, issuance = cur.fetchone()
    conn.rollback()
    if isinstance(document, str):
        document = json.loads(document)
    expiry = document.get("expiry", {})
    months = int(expiry.get("months", 0)) if expiry.get("kind") == "after_months" else 0
    if months % 12:
        raise ValueError("the raw baseline supports expiry after whole years only")
    return Target(
        program_id=int(program_id),
        program_version=int(version),
        issuance_account_id=int(issuance),
        points=int(document["earn"]["points"]),
        per_amount=int(document["earn"]["per_amount"]),
        expiry_years=months // 12,
        currency=str(document["currency"]),
    )


# --------------------------------------------------------------------------------------------
# SQL. Written with %(name)s parameters (psycopg); `_sql` turns them into :name for sqlite3.
# --------------------------------------------------------------------------------------------

_LOCK_ONE = (
    "SELECT id FROM accounts WHERE program_id = %(program_id)s AND member_id = %(member_id)s"
    " AND kind = 'member' AND unit = 'points'"
)
_ACTIVITY_COLUMNS = (
    "program_id, external_id, type, member_id, occurred_at, amount, currency, channel, body,"
    " request_hash, program_version, points, result, received_at"
)
_ACTIVITY_VALUES = (
    "%(program_id)s, %(external_id)s, 'purchase', %(member_id)s, %(occurred_at)s, %(amount)s,"
    " %(currency)s, 'store', %(body)s, %(request_hash)s, %(program_version)s, %(points)s,"
    " %(result)s, %(now)s"
)
_TX_COLUMNS = (
    "program_id, kind, idempotency_key, member_id, activity_id, rule, program_version, actor,"
    " effective_at, created_at"
)
_TX_VALUES = (
    "%(program_id)s, 'earn', %(idempotency_key)s, %(member_id)s, %(activity_id)s, 'base',"
    " %(program_version)s, %(actor)s, %(occurred_at)s, %(now)s"
)
_LOT_COLUMNS = (
    "program_id, member_id, account_id, transaction_id, activity_id, rule, original, remaining,"
    " held, consumed, expired, reversed, pending, vests_at, expires_at, created_at"
)
_LOT_VALUES = (
    "%(program_id)s, %(member_id)s, %(account_id)s, %(transaction_id)s, %(activity_id)s, 'base',"
    " %(points)s, %(points)s, 0, 0, 0, 0, %(false)s, NULL, %(expires_at)s, %(now)s"
)
_TRANSFER_COLUMNS = (
    "program_id, transaction_id, debit_account_id, credit_account_id, amount, phase, lot_id,"
    " created_at"
)
_TRANSFER_VALUES = (
    "%(program_id)s, %(transaction_id)s, %(issuance)s, %(account_id)s, %(points)s, 'single',"
    " %(lot_id)s, %(now)s"
)
_COUNTERS = "credits_posted, debits_posted, credits_pending, debits_pending, debt"
_UPDATE_ACCOUNT = (
    "UPDATE accounts SET credits_posted = credits_posted + %(points)s WHERE id = %(account_id)s"
)


def _sql(dialect: Dialect, text: str) -> str:
    return text if dialect == "postgresql" else re.sub(r"%\((\w+)\)s", r":\1", text)


@dataclass(frozen=True)
class _Statements:
    lock_one: str
    activity: str
    activity_returning: str
    tx: str
    tx_returning: str
    lot: str
    lot_returning: str
    transfer: str
    update: str
    update_returning: str

    @classmethod
    def of(cls, dialect: Dialect) -> _Statements:
        def sql(text: str) -> str:
            return _sql(dialect, text)

        lock = " FOR UPDATE" if dialect == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE
        return cls(
            lock_one=sql(_LOCK_ONE + lock),
            activity=sql(f"INSERT INTO activities (id, {_ACTIVITY_COLUMNS})"
                         f" VALUES (%(activity_id)s, {_ACTIVITY_VALUES})"),
            activity_returning=sql(f"INSERT INTO activities ({_ACTIVITY_COLUMNS})"
                                   f" VALUES ({_ACTIVITY_VALUES}) RETURNING id"),
            tx=sql(f"INSERT INTO ledger_transactions (id, {_TX_COLUMNS})"
                   f" VALUES (%(transaction_id)s, {_TX_VALUES})"),
            tx_returning=sql(f"INSERT INTO ledger_transactions ({_TX_COLUMNS})"
                             f" VALUES ({_TX_VALUES}) RETURNING id"),
            lot=sql(f"INSERT INTO lots (id, {_LOT_COLUMNS}) VALUES (%(lot_id)s, {_LOT_VALUES})"),
            lot_returning=sql(f"INSERT INTO lots ({_LOT_COLUMNS}) VALUES ({_LOT_VALUES})"
                              " RETURNING id"),
            transfer=sql(f"INSERT INTO transfers ({_TRANSFER_COLUMNS})"
                         f" VALUES ({_TRANSFER_VALUES})"),
            update=sql(_UPDATE_ACCOUNT),
            update_returning=sql(f"{_UPDATE_ACCOUNT} RETURNING {_COUNTERS}"),
        )  # fmt: skip


_STATEMENTS = {dialect: _Statements.of(dialect) for dialect in ("postgresql", "sqlite")}


def _plus_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _params(dialect: Dialect, target: Target, earn: EarnIn, now: datetime) -> dict[str, Any]:
    """The values of one earn (those shared by all five writes)."""
    occurred_at = earn.occurred_at or now
    body = {
        "type": "purchase",
        "external_id": earn.external_id,
        "member_id": earn.member_id,
        "amount": earn.amount,
        "currency": target.currency,
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    points = earn.amount // target.per_amount * target.points
    expires_at = _plus_years(occurred_at, target.expiry_years) if target.expiry_years else None
    result = {"external_id": earn.external_id, "points": points}
    if dialect == "postgresql":
        return {
            "program_id": target.program_id,
            "program_version": target.program_version,
            "issuance": target.issuance_account_id,
            "external_id": earn.external_id,
            "member_id": earn.member_id,
            "amount": earn.amount,
            "currency": target.currency,
            "occurred_at": occurred_at,
            "body": Json(body),
            "request_hash": digest,
            "points": points,
            "result": Json(result),
            "now": now,
            "actor": ACTOR,
            "false": False,
            "expires_at": expires_at,
        }
    return {
        "program_id": target.program_id,
        "program_version": target.program_version,
        "issuance": target.issuance_account_id,
        "external_id": earn.external_id,
        "member_id": earn.member_id,
        "amount": earn.amount,
        "currency": target.currency,
        "occurred_at": _sqlite_time(occurred_at),
        "body": json.dumps(body),
        "request_hash": digest,
        "points": points,
        "result": json.dumps(result),
        "now": _sqlite_time(now),
        "actor": ACTOR,
        "false": 0,
        "expires_at": None if expires_at is None else _sqlite_time(expires_at),
    }


def _sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores a UTC timestamp in SQLite (so Trofast reads these rows back)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@contextmanager
def _transaction(conn: DBAPIConnection, dialect: Dialect) -> Iterator[Cursor]:
    cur = conn.cursor()
    if dialect == "sqlite":
        cur.execute("BEGIN IMMEDIATE")  # psycopg begins implicitly
    try:
        yield cur
    except BaseException:
        conn.rollback()
        raise
    conn.commit()


def earn_one(
    conn: DBAPIConnection, dialect: Dialect, target: Target, earn: EarnIn, now: datetime
) -> dict[str, Any]:
    """One earn in its own transaction: lock the account row, five writes, commit."""
    sql = _STATEMENTS[dialect]
    p = _params(dialect, target, earn, now)
    with _transaction(conn, dialect) as cur:
        cur.execute(sql.lock_one, p)
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"member {earn.member_id} has no account")
        p["account_id"] = row[0]
        cur.execute(sql.activity_returning, p)
        p["activity_id"] = cur.fetchone()[0]
        p["idempotency_key"] = f"activity:{p['activity_id']}"  # as Trofast keys an earn
        cur.execute(sql.tx_returning, p)
        p["transaction_id"] = cur.fetchone()[0]
        cur.execute(sql.lot_returning, p)
        p["lot_id"] = cur.fetchone()[0]
        cur.execute(sql.transfer, p)
        cur.execute(sql.update_returning, p)
        posted, debited, pending, debit_pending, debt = cur.fetchone()
    return {
        "id": p["activity_id"],
        "external_id": earn.external_id,
        "member_id": earn.member_id,
        "points": p["points"],
        "balance": {"available": posted - debited - debit_pending - debt, "pending": pending},
    }


def earn_batch(
    conn: DBAPIConnection,
    dialect: Dialect,
    target: Target,
    earns: Sequence[EarnIn],
    now: datetime,
) -> int:
    """Many earns in one transaction: lock the accounts, assign ids, executemany each table."""
    sql = _STATEMENTS[dialect]
    rows = [_params(dialect, target, earn, now) for earn in earns]
    with _transaction(conn, dialect) as cur:
        accounts = _lock_accounts(cur, dialect, target.program_id, {e.member_id for e in earns})
        ids = {
            table: _next_ids(cur, dialect, table, len(rows))
            for table in ("activities", "ledger_transactions", "lots")
        }
        for i, row in enumerate(rows):
            row["account_id"] = accounts[row["member_id"]]
            row["activity_id"] = ids["activities"][i]
            row["idempotency_key"] = f"activity:{row['activity_id']}"
            row["transaction_id"] = ids["ledger_transactions"][i]
            row["lot_id"] = ids["lots"][i]
        cur.executemany(sql.activity, rows)
        cur.executemany(sql.tx, rows)
        cur.executemany(sql.lot, rows)
        cur.executemany(sql.transfer, rows)
        cur.executemany(sql.update, rows)
    return len(rows)


def _lock_accounts(
    cur: Cursor, dialect: Dialect, program_id: int, member_ids: set[int]
) -> dict[int, int]:
    ordered = sorted(member_ids)
    if dialect == "postgresql":
        cur.execute(
            "SELECT member_id, id FROM accounts WHERE program_id = %s AND kind = 'member'"
            " AND unit = 'points' AND member_id = ANY(%s) ORDER BY id FOR UPDATE",
            (program_id, ordered),
        )
    else:
        marks = ",".join("?" * len(ordered))
        cur.execute(
            "SELECT member_id, id FROM accounts WHERE program_id = ? AND kind = 'member'"
            f" AND unit = 'points' AND member_id IN ({marks})",
            (program_id, *ordered),
        )
    found = {int(member): int(account) for member, account in cur.fetchall()}
    if len(found) != len(ordered):
        raise LookupError("some members have no account")
    return found


def _next_ids(cur: Cursor, dialect: Dialect, table: str, count: int) -> list[int]:
    """`count` fresh ids for `table`: from its sequence, or (SQLite, under the write lock)
    after its largest id."""
    if dialect == "postgresql":
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table, count),
        )
        return [int(row[0]) for row in cur.fetchall()]
    cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
    start = int(cur.fetchone()[0]) + 1
    return list(range(start, start + count))


# --------------------------------------------------------------------------------------------
# The naive HTTP endpoint
# --------------------------------------------------------------------------------------------


class Purchase(BaseModel):
    """The naive endpoint's body: only what it writes."""

    type: Literal["purchase"]
    external_id: str
    member_id: int
    amount: int
    currency: str


def naive_app(url: str, program_key: str, pool_size: int = 16) -> Any:
    """A minimal FastAPI app: `POST /v1/activities` runs `earn_one` in a plain `def` endpoint
    over a connection pool (SQLite: one writer connection, as Trofast has). No API key check,
    no rules, no idempotency: the floor that PERFORMANCE.md measured."""
    from fastapi import FastAPI

    dialect = dialect_of(url)
    size = pool_size if dialect == "postgresql" else 1
    pool = QueuePool(
        lambda: open_connection(url),  # type: ignore[arg-type,return-value]
        pool_size=size,
        max_overflow=size if dialect == "postgresql" else 0,
        timeout=60,
    )
    with _pooled(pool) as conn:
        target = load_target(conn, dialect, program_key)

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/activities", status_code=201)
    def earn(purchase: Purchase) -> dict[str, Any]:
        with _pooled(pool) as conn:
            return earn_one(
                conn,
                dialect,
                target,
                EarnIn(purchase.external_id, purchase.member_id, purchase.amount),
                datetime.now(UTC),
            )

    return app


@contextmanager
def _pooled(pool: QueuePool) -> Iterator[DBAPIConnection]:
    conn = pool.connect()
    try:
        yield conn  # type: ignore[misc]
    finally:
        conn.close()
