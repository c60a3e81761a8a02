"""SQL for analytics: streams of stored activities and ledger totals per month."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Select,
    String,
    Text,
    case,
    cast,
    func,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import aliased

from trofast.activities.models import activities
from trofast.kit.orm import AnyRow
from trofast.ledger.audit import POSTED
from trofast.ledger.models import accounts, ledger_transactions, transfers
from trofast.ledger.service import MEMBER
from trofast.members.models import members
from trofast.rewards.models import vouchers
from trofast.tiers.models import tier_history

#: (k, n): the k-th of n parts of a program's members, by member id modulo n, so that a
#: replay can be shared between processes; activities without a member belong to part 0.
Part = tuple[int, int]


def of_part(member_id: ColumnElement[Any], part: Part) -> ColumnElement[bool]:
    """Whether `member_id` is in `part` (NULL, no member, is in part 0)."""
    k, n = part
    mine = member_id % n == k
    return or_(mine, member_id.is_(None)) if k == 0 else mine


def activity_chunks(
    conn: Connection,
    program_id: int,
    start: datetime,
    end: datetime,
    *,
    bodies: tuple[str, ...] = ("purchase", "return", "event"),
    chunk: int = 20_000,
    part: Part | None = None,
) -> Iterator[Sequence[Any]]:
    """Activities with occurred_at in [start, end), oldest first, in lists of up to `chunk`
    plain tuples (the columns in ACTIVITY_COLUMNS' order).

    Built for replays of millions of rows, so rows come as the driver gives them: the
    statement is SQLAlchemy's (parameters bound by it, a server-side cursor on PostgreSQL),
    but the rows are fetched from the DB-API cursor in chunks, with no `Row` object and no
    column conversion per row. `occurred_at` is an aware datetime on PostgreSQL and ISO text
    with its UTC offset on SQLite (`datetime.fromisoformat` reads it ten times faster than
    a naive datetime gets its time zone); `body` is JSON text, and only for the activity types
    in `bodies` (else NULL: a body is most of a row, and decoding it most of the cost of
    reading one). With `part`, only that part's activities (see `of_part`).
    """
    stmt = _activity_select(conn, program_id, start, end, bodies)
    if part is not None:
        stmt = stmt.where(of_part(activities.c.member_id, part))
    if conn.dialect.name == "sqlite":
        # The sqlite3 cursor steps through the result as it is fetched from (there are no
        # server-side cursors to ask for), and SQLAlchemy's default fetch strategy buffers
        # nothing: the rows are all still in the DB-API cursor.
        result = conn.execute(stmt)
        try:
            cursor = result.cursor
            while rows := cursor.fetchmany(chunk):
                yield rows
        finally:
            result.close()
        return
    # PostgreSQL: a server-side (named) cursor of the driver, in the caller's transaction,
    # fetching `chunk` rows at a time; parameters bound as SQLAlchemy binds them. Instants
    # come as `datetime.UTC` (kit.db sets every session's time zone to UTC).
    compiled = stmt.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    for name, value in params.items():
        process = compiled.binds[name].type.bind_processor(conn.dialect)
        params[name] = value if process is None else process(value)
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor(name=f"trofast_replay_{id(stmt):x}") as named:
        named.execute(str(compiled), params)
        while rows := named.fetchmany(chunk):
            yield rows


#: The columns of activity_chunks()' rows, in order.
ACTIVITY_COLUMNS = (
    "id", "type", "member_id", "occurred_at", "amount", "currency", "store", "channel",
    "event_type", "original_id", "body", "points",
)  # fmt: skip


def _activity_select(
    conn: Connection,
    program_id: int,
    start: datetime,
    end: datetime,
    bodies: tuple[str, ...],
) -> Select[Any]:
    occurred_at: ColumnElement[Any] = type_coerce(activities.c.occurred_at, DateTime())
    if conn.dialect.name == "sqlite":  # stored as naive UTC text
        occurred_at = type_coerce(activities.c.occurred_at, String) + "+00:00"
    body = (
        # `type = a OR type = b`, not IN: an IN list is an "expanding" parameter, which the
        # driver-level execution of activity_chunks() on PostgreSQL would not expand.
        case(
            (or_(*(activities.c.type == kind for kind in bodies)), cast(activities.c.body, Text)),
            else_=null(),
        )
        if bodies
        else null()
    )
    stmt = (
        select(
            activities.c.id,
            activities.c.type,
            activities.c.member_id,
            occurred_at.label("occurred_at"),
            activities.c.amount,
            activities.c.currency,
            activities.c.store,
            activities.c.channel,
            activities.c.event_type,
            activities.c.original_id,
            body.label("body"),
            activities.c.points,
        )
        .where(
            activities.c.program_id == program_id,
            activities.c.occurred_at >= start,
            activities.c.occurred_at < end,
        )
        .order_by(activities.c.occurred_at, activities.c.id)
    )
    return stmt


def returned_purchases(
    conn: Connection, program_id: int, start: datetime, end: datetime
) -> set[int]:
    """Ids of the activities that returns with occurred_at in [start, end) take back from."""
    return set(
        conn.execute(
            select(activities.c.original_id)
            .where(
                activities.c.program_id == program_id,
                # A literal, not a parameter: so the planner may use the partial index on
                # returns (ix_activities_returns) rather than scan every activity.
                activities.c.type == literal_column("'return'"),
                activities.c.original_id.is_not(None),
                activities.c.occurred_at >= start,
                activities.c.occurred_at < end,
            )
            .distinct()
        ).scalars()
    )


def granted_vouchers(
    conn: Connection, program_id: int, start: datetime, end: datetime
) -> list[tuple[datetime, str]]:
    """(occurred_at, reward) of each voucher the rules granted to an activity that occurred
    in [start, end), whatever became of it since (its reference: `activity:{id}:...`)."""
    # Granted when received, at most a clock skew before occurred_at: a day's margin.
    rows = conn.execute(
        select(vouchers.c.reward, vouchers.c.reference).where(
            vouchers.c.program_id == program_id,
            vouchers.c.reference.startswith("activity:"),
            vouchers.c.issued_at >= start - timedelta(days=1),
        )
    ).all()
    rewards: dict[int, list[str]] = {}
    for reward, reference in rows:
        rewards.setdefault(int(str(reference).split(":")[1]), []).append(str(reward))
    found: list[tuple[datetime, str]] = []
    ids = sorted(rewards)
    for first in range(0, len(ids), _IDS_PER_QUERY):
        granting = conn.execute(
            select(activities.c.id, activities.c.occurred_at).where(
                activities.c.id.in_(ids[first : first + _IDS_PER_QUERY]),
                activities.c.occurred_at >= start,
                activities.c.occurred_at < end,
            )
        ).all()
        found += [(r.occurred_at, reward) for r in granting for reward in rewards[int(r.id)]]
    return found


_IDS_PER_QUERY = 10_000


def member_rows(conn: Connection, program_id: int, part: Part | None = None) -> dict[int, Any]:
    """What a replay reads of the program's members (of `part` only, if given), by id."""
    stmt = select(
        members.c.id,
        members.c.status,
        members.c.birth_date,
        members.c.enrolled_at,
        members.c.channel,
        members.c.tags,
    ).where(members.c.program_id == program_id)
    if part is not None:
        stmt = stmt.where(of_part(members.c.id, part))
    rows = conn.execute(stmt).all()
    return {int(r.id): r for r in rows}


def member_debits(
    conn: Connection, program_id: int, start: datetime, end: datetime
) -> list[AnyRow]:
    """Points leaving member accounts (spent, expired, taken back), with their time."""
    return list(
        conn.execute(
            select(
                ledger_transactions.c.kind, ledger_transactions.c.effective_at, transfers.c.amount
            )
            .join(transfers, transfers.c.transaction_id == ledger_transactions.c.id)
            .join(accounts, accounts.c.id == transfers.c.debit_account_id)
            .where(
                ledger_transactions.c.program_id == program_id,
                accounts.c.kind == "member",
                accounts.c.unit == "points",
                transfers.c.phase.in_(("single", "post")),
                ledger_transactions.c.effective_at >= start,
                ledger_transactions.c.effective_at < end,
                ledger_transactions.c.kind.in_(("spend", "expire", "adjust")),
            )
        ).all()
    )


def tier_changes(conn: Connection, program_id: int, before: datetime) -> list[AnyRow]:
    """Every tier change (member_id, to_tier, at) before `before`, oldest first: the real
    tiers at any moment are the last change's (read-only over `tier_history`)."""
    return list(
        conn.execute(
            select(tier_history.c.member_id, tier_history.c.to_tier, tier_history.c.at)
            .where(tier_history.c.program_id == program_id, tier_history.c.at < before)
            .order_by(tier_history.c.at, tier_history.c.id)
        ).all()
    )


def enrolments(conn: Connection, program_id: int) -> list[tuple[int, datetime, str]]:
    """(member id, enrolled_at, channel) of each of the program's members."""
    rows = conn.execute(
        select(members.c.id, members.c.enrolled_at, members.c.channel).where(
            members.c.program_id == program_id
        )
    ).all()
    return [(int(member_id), at, str(channel)) for member_id, at, channel in rows]


def first_purchases(conn: Connection, program_id: int, before: datetime) -> dict[int, datetime]:
    """Each member's first purchase before `before`, by member id."""
    rows = conn.execute(
        select(activities.c.member_id, func.min(activities.c.occurred_at))
        .where(
            activities.c.program_id == program_id,
            activities.c.type == "purchase",
            activities.c.member_id.is_not(None),
            activities.c.occurred_at < before,
        )
        .group_by(activities.c.member_id)
    ).all()
    return {int(member_id): at for member_id, at in rows}


def activity_figures(
    conn: Connection, program_id: int, start: datetime, end: datetime
) -> Iterator[Any]:
    """(type, member id, occurred_at, amount, points) of each activity in [start, end)."""
    result = conn.execute(
        select(  # in the database's order: each row goes to its month by bisection
            activities.c.type,
            activities.c.member_id,
            activities.c.occurred_at,
            activities.c.amount,
            activities.c.points,
        ).where(
            activities.c.program_id == program_id,
            activities.c.occurred_at >= start,
            activities.c.occurred_at < end,
        ),
        execution_options={"yield_per": 10_000},
    )
    return iter(result)


def member_point_flows(conn: Connection, program_id: int, before: datetime) -> Iterator[Any]:
    """(created_at, amount, debited kind, credited kind) of each posted transfer of points
    between a member account and a system account made before `before`. Points given from
    one member to another pass through the `transfer` account; those legs are left out, as
    they change no total."""
    debited, credited = aliased(accounts), aliased(accounts)
    result = conn.execute(
        select(transfers.c.created_at, transfers.c.amount, debited.c.kind, credited.c.kind)
        .join(debited, debited.c.id == transfers.c.debit_account_id)
        .join(credited, credited.c.id == transfers.c.credit_account_id)
        .where(
            transfers.c.program_id == program_id,
            transfers.c.phase.in_(POSTED),
            transfers.c.created_at < before,
            debited.c.unit == "points",
            (debited.c.kind == MEMBER) != (credited.c.kind == MEMBER),
            debited.c.kind != "transfer",
            credited.c.kind != "transfer",
        ),
        execution_options={"yield_per": 10_000},
    )
    return iter(result)


def purchase_summaries(
    conn: Connection, program_id: int, since: datetime, before: datetime
) -> list[AnyRow]:
    """Per member who bought before `before`: its loyalty number, its last purchase, and the
    number and the sum of its purchases in [since, before)."""
    recent = activities.c.occurred_at >= since
    return list(
        conn.execute(
            select(
                activities.c.member_id,
                members.c.loyalty_number,
                func.max(activities.c.occurred_at).label("last"),
                func.sum(case((recent, 1), else_=0)).label("frequency"),
                func.sum(case((recent, activities.c.amount), else_=0)).label("monetary"),
            )
            .join(members, members.c.id == activities.c.member_id)
            .where(
                activities.c.program_id == program_id,
                activities.c.type == "purchase",
                activities.c.occurred_at < before,
            )
            .group_by(activities.c.member_id, members.c.loyalty_number)
            .order_by(activities.c.member_id)
        ).all()
    )


def member_count(conn: Connection, program_id: int) -> int:
    """How many members the program has (erased ones included)."""
    return int(
        conn.execute(
            select(func.count()).select_from(members).where(members.c.program_id == program_id)
        ).scalar_one()
    )
