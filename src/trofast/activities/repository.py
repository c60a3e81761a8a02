"""SQL for activities."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Dialect, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from trofast.activities.models import activities, rule_counters
from trofast.kit.orm import (
    AnyRow,
    DriverStatement,
    bind_json,
    bind_time,
    driver_rows,
    insert_driver_rows,
    insert_returning_ids,
    next_ids,
    read_date,
    read_json,
    read_time,
)
from trofast.ledger.models import accounts, lots
from trofast.members.models import members
from trofast.programs.models import programs


def find(conn: Connection, program_id: int, external_id: str) -> AnyRow | None:
    return conn.execute(
        select(activities).where(
            activities.c.program_id == program_id, activities.c.external_id == external_id
        )
    ).first()


def find_many(conn: Connection, program_id: int, external_ids: set[str]) -> dict[str, AnyRow]:
    if not external_ids:
        return {}
    rows = conn.execute(
        select(activities).where(
            activities.c.program_id == program_id, activities.c.external_id.in_(external_ids)
        )
    ).all()
    return {str(r.external_id): r for r in rows}


def received_among(conn: Connection, program_id: int, external_ids: set[str]) -> set[str]:
    """Which of `external_ids` the program has received already (one query on the driver;
    `find_many` then reads the rows of those, usually none)."""
    if not external_ids:
        return set()
    refs = list(external_ids)
    sql = "SELECT external_id FROM activities WHERE program_id = "
    if conn.dialect.name == "postgresql":
        rows = driver_rows(conn, sql + "%s AND external_id = ANY(%s)", (program_id, refs))
    else:
        marks = ", ".join("?" * len(refs))
        rows = driver_rows(conn, sql + f"? AND external_id IN ({marks})", [program_id, *refs])
    return {str(row[0]) for row in rows}


def insert_many(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert several activities in one multi-row statement; their ids in order."""
    return insert_returning_ids(conn, activities, rows)


#: The columns the batch writes (any other is left to its default: NULL).
ACTIVITY_COLUMNS = (
    "program_id",
    "external_id",
    "type",
    "member_id",
    "occurred_at",
    "amount",
    "currency",
    "store",
    "channel",
    "event_type",
    "original_id",
    "body",
    "request_hash",
    "program_version",
    "points",
    "result",
    "received_at",
)


def insert_driver_many(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert activity rows holding every column of `ACTIVITY_COLUMNS`, their values
    already as the driver takes them (`bind_time`, `bind_json`), in one `executemany` with
    ids assigned up front; the ids in order (each row gets its "id")."""
    ids = next_ids(conn, activities, len(rows))
    for row, activity_id in zip(rows, ids, strict=True):
        row["id"] = activity_id
    insert_driver_rows(conn, activities, ("id", *ACTIVITY_COLUMNS), rows)
    return ids


def insert_new(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert unless the external_id exists (then None): no failed statement, no savepoint."""
    stmt = _INSERT_NEW[conn.dialect.name == "postgresql"]
    row = stmt.execute(conn, _insert_params(conn.dialect, values, _INSERT_COLUMNS)).fetchone()
    return None if row is None else int(row[0])


def _insert_params(dialect: Dialect, values: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`values` as the driver takes them, under `names` (`_INSERT_COLUMNS`' order)."""
    given: list[Any] = [values.get(name) for name in _INSERT_COLUMNS]
    params = dict(zip(names, given, strict=True))
    for i in _TIME_COLUMNS:
        params[names[i]] = bind_time(given[i], dialect)
    for i in _JSON_COLUMNS:
        params[names[i]] = bind_json(given[i])
    return params


def new_row(dialect: Dialect, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """`insert_new`'s statement for another statement to run first (the ledger's earn):
    its SQL, binds named `row_*`, and their values."""
    return _NEW_ROW_SQL, _insert_params(dialect, values, _ROW_BINDS)


_INSERT_COLUMNS = [c.name for c in activities.c if c.name != "id"]
_TIME_COLUMNS = [_INSERT_COLUMNS.index(name) for name in ("occurred_at", "received_at")]
_JSON_COLUMNS = [_INSERT_COLUMNS.index(name) for name in ("body", "result")]
_ROW_BINDS = [f"row_{name}" for name in _INSERT_COLUMNS]
_NEW_ROW_SQL = (
    f"INSERT INTO activities ({', '.join(_INSERT_COLUMNS)})"
    f" VALUES ({', '.join(':' + name for name in _ROW_BINDS)})"
    " ON CONFLICT (program_id, external_id) DO NOTHING RETURNING id"
)
_INSERT_NEW = {
    is_pg: DriverStatement(
        dialect.insert(activities)
        .on_conflict_do_nothing(index_elements=["program_id", "external_id"])
        .returning(activities.c.id),
        _INSERT_COLUMNS,
    )
    for is_pg, dialect in ((True, postgresql), (False, sqlite))
}


class EarningMember(NamedTuple):
    """A member as the earn path reads it: what the rules see, the points account and its
    counters (the same fields as `members.repository.get_with_account`)."""

    id: int
    loyalty_number: str
    status: str
    birth_date: date | None
    enrolled_at: datetime
    channel: str
    tags: list[str]
    account_id: int
    credits_posted: int
    debits_posted: int
    credits_pending: int
    debits_pending: int
    debt: int
    withheld: int


def _earning_member(by: Any) -> DriverStatement:
    return DriverStatement(
        select(
            members.c.id,
            members.c.loyalty_number,
            members.c.status,
            members.c.birth_date,
            members.c.enrolled_at,
            members.c.channel,
            members.c.tags,
            accounts.c.id,
            accounts.c.credits_posted,
            accounts.c.debits_posted,
            accounts.c.credits_pending,
            accounts.c.debits_pending,
            accounts.c.debt,
            accounts.c.withheld,
            select(programs.c.current_version)
            .where(programs.c.id == bindparam("program_id"))
            .scalar_subquery(),
        )
        .join(
            accounts,
            (accounts.c.program_id == members.c.program_id)
            & (accounts.c.member_id == members.c.id)
            & (accounts.c.kind == "member")
            & (accounts.c.unit == "points"),
        )
        .where(members.c.program_id == bindparam("program_id"), by == bindparam("ref"))
        .with_for_update(of=accounts)
    )


_EARNING_MEMBER = {
    True: _earning_member(members.c.id),
    False: _earning_member(members.c.loyalty_number),
}


def lock_earning_member(
    conn: Connection, program_id: int, *, member_id: int | None, number: str | None
) -> tuple[EarningMember, int] | None:
    """The member by id or loyalty number with their points account, whose row stays
    locked until the transaction ends (SQLite: the write transaction holds the lock), and
    the program's current version, read by the same statement."""
    stmt = _EARNING_MEMBER[member_id is not None]
    ref = member_id if member_id is not None else number
    row = stmt.execute(conn, {"program_id": program_id, "ref": ref}).fetchone()
    if row is None:
        return None
    enrolled_at = read_time(row[4])
    assert enrolled_at is not None
    member = EarningMember(
        row[0],
        row[1],
        row[2],
        read_date(row[3]),
        enrolled_at,
        row[5],
        read_json(row[6]),
        *row[7:14],
    )
    return member, int(row[14])


_EARNING_MEMBERS = (
    "SELECT m.id, m.loyalty_number, m.status, m.birth_date, m.enrolled_at, m.channel, m.tags,"
    " a.id, a.credits_posted, a.debits_posted, a.credits_pending, a.debits_pending, a.debt,"
    " a.withheld FROM members m JOIN accounts a ON a.program_id = m.program_id"
    " AND a.member_id = m.id AND a.kind = 'member' AND a.unit = 'points'"
)


def lock_earning_members(
    conn: Connection, program_id: int, member_ids: set[int], numbers: set[str]
) -> list[EarningMember]:
    """`lock_earning_member` for many members at once (the batch's look-up): those found by
    id or loyalty number, their accounts locked in account order. On the driver: one
    query, no SQLAlchemy row per member."""
    if not member_ids and not numbers:
        return []
    ids, refs = sorted(member_ids), sorted(numbers)
    either: list[str] = []
    args: list[Any] = [program_id]
    if conn.dialect.name == "postgresql":
        if ids:
            either.append("m.id = ANY(%s)")
            args.append(ids)
        if refs:
            either.append("m.loyalty_number = ANY(%s)")
            args.append(refs)
        where, lock = "m.program_id = %s", " FOR UPDATE OF a"
    else:  # SQLite: the write transaction holds the lock
        if ids:
            either.append(f"m.id IN ({', '.join('?' * len(ids))})")
            args += ids
        if refs:
            either.append(f"m.loyalty_number IN ({', '.join('?' * len(refs))})")
            args += refs
        where, lock = "m.program_id = ?", ""
    sql = f"{_EARNING_MEMBERS} WHERE {where} AND ({' OR '.join(either)}) ORDER BY a.id{lock}"
    out = []
    for row in driver_rows(conn, sql, args):
        enrolled_at = read_time(row[4])
        assert enrolled_at is not None
        birth_date, tags = read_date(row[3]), read_json(row[6])
        out.append(EarningMember._make((*row[:3], birth_date, enrolled_at, row[5], tags, *row[7:])))
    return out


def returns_of(conn: Connection, original_id: int) -> list[AnyRow]:
    return list(
        conn.execute(
            select(
                activities.c.amount, activities.c.points, activities.c.body, activities.c.result
            ).where(activities.c.original_id == original_id)
        ).all()
    )


def lots_of(conn: Connection, activity_id: int) -> list[AnyRow]:
    """The lots an activity created: id, account and what expired of each."""
    return list(
        conn.execute(
            select(lots.c.id, lots.c.account_id, lots.c.expired).where(
                lots.c.activity_id == activity_id
            )
        ).all()
    )


def set_outcome(conn: Connection, activity_id: int, points: int, result: dict[str, Any]) -> None:
    conn.execute(
        activities.update()
        .where(activities.c.id == activity_id)
        .values(points=points, result=result)
    )


def load_counters(
    conn: Connection,
    program_id: int,
    member_id: int,
    member_keys: set[str],
    program_keys: set[str],
    now: datetime,
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """(member counters, program counters) for the given keys; missing keys are zero.

    Program-wide counters (rule budgets) are shared by all members, so their rows are
    created if missing and locked until the transaction ends.
    """
    shared: dict[str, int] = {}
    if program_keys:
        add_to_counters(conn, program_id, [(0, key, 0, 0) for key in sorted(program_keys)], now)
        rows = conn.execute(
            select(rule_counters.c.key, rule_counters.c.points)
            .where(
                rule_counters.c.program_id == program_id,
                rule_counters.c.member_id == 0,
                rule_counters.c.key.in_(program_keys),
            )
            .order_by(rule_counters.c.key)
            .with_for_update()
        ).all()
        shared = {str(r.key): int(r.points) for r in rows}
    mine: dict[str, tuple[int, int]] = {}
    if member_keys:
        member_rows = conn.execute(
            select(rule_counters.c.key, rule_counters.c.points, rule_counters.c.times).where(
                rule_counters.c.program_id == program_id,
                rule_counters.c.member_id == member_id,
                rule_counters.c.key.in_(member_keys),
            )
        ).all()
        mine = {str(r.key): (int(r.points), int(r.times)) for r in member_rows}
    return mine, shared


def load_counters_many(
    conn: Connection,
    program_id: int,
    member_ids: set[int],
    member_keys: set[str],
    program_keys: set[str],
    now: datetime,
) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[str, int]]:
    """`load_counters` for many members at once: counters per member, program counters."""
    _, shared = load_counters(conn, program_id, 0, set(), program_keys, now)
    per_member: dict[int, dict[str, tuple[int, int]]] = {}
    if member_ids and member_keys:
        rows = conn.execute(
            select(
                rule_counters.c.member_id,
                rule_counters.c.key,
                rule_counters.c.points,
                rule_counters.c.times,
            ).where(
                rule_counters.c.program_id == program_id,
                rule_counters.c.member_id.in_(member_ids),
                rule_counters.c.key.in_(member_keys),
            )
        ).all()
        for r in rows:
            per_member.setdefault(int(r.member_id), {})[str(r.key)] = (int(r.points), int(r.times))
    return per_member, shared


def add_to_counters(
    conn: Connection, program_id: int, deltas: list[tuple[int, str, int, int]], now: datetime
) -> None:
    """Add (member_id, key, points, times) to counters, creating them as needed."""
    if not deltas:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(rule_counters)
    stmt = stmt.on_conflict_do_update(
        index_elements=["program_id", "member_id", "key"],
        set_={
            "points": rule_counters.c.points + stmt.excluded.points,
            "times": rule_counters.c.times + stmt.excluded.times,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(
        stmt,
        [
            {
                "program_id": program_id,
                "member_id": member,
                "key": key,
                "points": points,
                "times": times,
                "updated_at": now,
            }
            for member, key, points, times in deltas
        ],
    )


def member_counters(
    conn: Connection, program_id: int, member_id: int, prefix: str
) -> dict[str, int]:
    """A member's counters whose key starts with `prefix` (e.g. stamps)."""
    rows = conn.execute(
        select(rule_counters.c.key, rule_counters.c.points).where(
            rule_counters.c.program_id == program_id,
            rule_counters.c.member_id == member_id,
            rule_counters.c.key.startswith(prefix),
        )
    ).all()
    return {str(r.key): int(r.points) for r in rows}
