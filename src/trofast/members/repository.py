"""SQL for members."""

from __future__ import annotations

import calendar
from datetime import date
from typing import Any

from sqlalchemy import Connection, bindparam, extract, or_, select, update

from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts
from trofast.members.models import member_erasures, member_users, members


def get(conn: Connection, program_id: int, member_id: int) -> AnyRow | None:
    return conn.execute(
        select(members).where(members.c.program_id == program_id, members.c.id == member_id)
    ).first()


def get_by_number(conn: Connection, program_id: int, number: str) -> AnyRow | None:
    return conn.execute(
        select(members).where(
            members.c.program_id == program_id, members.c.loyalty_number == number
        )
    ).first()


def get_by_retired_number(conn: Connection, program_id: int, number: str) -> AnyRow | None:
    """The erased member whose loyalty number `number` was."""
    return conn.execute(
        select(members)
        .join(member_erasures, member_erasures.c.member_id == members.c.id)
        .where(
            member_erasures.c.program_id == program_id,
            member_erasures.c.loyalty_number == number,
        )
    ).first()


def number_used(conn: Connection, program_id: int, number: str) -> bool:
    """Whether `number` is a member's loyalty number, or an erased member's retired one."""
    return (
        get_by_number(conn, program_id, number) is not None
        or get_by_retired_number(conn, program_id, number) is not None
    )


def _with_account() -> Any:
    return select(
        members.c.id,
        members.c.loyalty_number,
        members.c.status,
        members.c.birth_date,
        members.c.enrolled_at,
        members.c.channel,
        members.c.tags,
        accounts.c.id.label("account_id"),
        accounts.c.credits_posted,
        accounts.c.debits_posted,
        accounts.c.credits_pending,
        accounts.c.debits_pending,
        accounts.c.debt,
        accounts.c.withheld,
    ).join(
        accounts,
        (accounts.c.program_id == members.c.program_id)
        & (accounts.c.member_id == members.c.id)
        & (accounts.c.kind == "member")
        & (accounts.c.unit == "points"),
    )


# The earn path's lookups, built once (building a statement costs more than running it).
_BY_ID = _with_account().where(
    members.c.program_id == bindparam("program_id"), members.c.id == bindparam("ref")
)
_BY_NUMBER = _with_account().where(
    members.c.program_id == bindparam("program_id"),
    members.c.loyalty_number == bindparam("ref"),
)
_LOOKUPS = {
    (by_id, lock): (stmt.with_for_update(of=accounts) if lock else stmt)
    for by_id, stmt in ((True, _BY_ID), (False, _BY_NUMBER))
    for lock in (True, False)
}


def get_many_with_account(
    conn: Connection, program_id: int, member_ids: set[int], numbers: set[str]
) -> list[AnyRow]:
    """Like `get_with_account(lock=True)` for many members; locks in account order."""
    if not member_ids and not numbers:
        return []
    stmt = (
        _with_account()
        .where(
            members.c.program_id == program_id,
            or_(members.c.id.in_(member_ids), members.c.loyalty_number.in_(numbers)),
        )
        .order_by(accounts.c.id)
        .with_for_update(of=accounts)
    )
    return list(conn.execute(stmt).all())


def get_with_account(
    conn: Connection,
    program_id: int,
    *,
    member_id: int | None = None,
    number: str | None = None,
    lock: bool = False,
) -> AnyRow | None:
    """A member's id, status, birth date, points account id and counters in one round trip;
    with `lock`, the account row stays locked until the transaction ends."""
    stmt = _LOOKUPS[(member_id is not None, lock)]
    ref = member_id if member_id is not None else number
    return conn.execute(stmt, {"program_id": program_id, "ref": ref}).first()


def find_taken(
    conn: Connection, program_id: int, fields: dict[str, Any], exclude_id: int | None = None
) -> str | None:
    """The first of `fields` (email, phone, external_id, loyalty_number) already used."""
    wanted = {k: v for k, v in fields.items() if v is not None}
    if not wanted:
        return None
    stmt = select(members).where(
        members.c.program_id == program_id, or_(*(members.c[k] == v for k, v in wanted.items()))
    )
    if exclude_id is not None:
        stmt = stmt.where(members.c.id != exclude_id)
    row = conn.execute(stmt.limit(1)).first()
    if row is None:
        return None
    return next(k for k, v in wanted.items() if getattr(row, k) == v)


def insert(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(members.insert().returning(members.c.id), values).scalar_one())


def update_fields(
    conn: Connection, program_id: int, member_id: int, values: dict[str, Any]
) -> None:
    conn.execute(
        update(members)
        .where(members.c.program_id == program_id, members.c.id == member_id)
        .values(**values)
    )


def page(
    conn: Connection, program_id: int, after_id: int, limit: int, filters: dict[str, str]
) -> list[AnyRow]:
    stmt = select(members).where(members.c.program_id == program_id, members.c.id > after_id)
    if "q" in filters:
        q = filters["q"]
        companies = _members_of_users(
            conn,
            program_id,
            or_(member_users.c.email == q.lower(), member_users.c.external_id == q),
        )
        stmt = stmt.where(
            or_(
                members.c.email == q.lower(),
                members.c.phone == filters.get("q_phone", q),
                members.c.loyalty_number == q,
                members.c.external_id == q,
                *([members.c.id.in_(companies)] if companies else []),
            )
        )
    if "email" in filters:  # a company is found by its users' e-mail addresses too
        email = filters["email"]
        companies = _members_of_users(conn, program_id, member_users.c.email == email)
        stmt = stmt.where(
            or_(members.c.email == email, *([members.c.id.in_(companies)] if companies else []))
        )
    for column in ("phone", "loyalty_number", "external_id", "status"):
        if column in filters:
            stmt = stmt.where(members.c[column] == filters[column])
    return list(conn.execute(stmt.order_by(members.c.id).limit(limit)).all())


def birthdays_on(conn: Connection, program_id: int, days: list[date]) -> list[tuple[int, date]]:
    """(member id, birthday) of active members whose birthday is one of `days` (29 February
    birthdays fall on 28 February in common years)."""
    wanted = {(d.month, d.day): d for d in days}
    for d in days:
        if (d.month, d.day) == (2, 28) and not calendar.isleap(d.year):
            wanted[(2, 29)] = d
    rows = conn.execute(
        select(
            members.c.id,
            extract("month", members.c.birth_date).label("month"),
            extract("day", members.c.birth_date).label("day"),
        ).where(
            members.c.program_id == program_id,
            members.c.status == "active",
            members.c.birth_date.is_not(None),
            extract("month", members.c.birth_date).in_({m for m, _ in wanted}),
        )
    ).all()
    return [
        (int(r.id), wanted[(int(r.month), int(r.day))])
        for r in rows
        if (int(r.month), int(r.day)) in wanted
    ]


def _members_of_users(conn: Connection, program_id: int, condition: Any) -> list[int]:
    """The members whose current users meet `condition`, looked up first (by the users'
    unique indexes) so that the member query stays on its own indexes."""
    return list(
        conn.execute(
            select(member_users.c.member_id).where(
                member_users.c.program_id == program_id,
                member_users.c.removed_at.is_(None),
                condition,
            )
        ).scalars()
    )


def user(conn: Connection, program_id: int, external_id: str) -> AnyRow | None:
    """A user by its external id in the program (removed ones too)."""
    return conn.execute(
        select(member_users).where(
            member_users.c.program_id == program_id, member_users.c.external_id == external_id
        )
    ).first()


def user_with_email(conn: Connection, program_id: int, email: str) -> AnyRow | None:
    return conn.execute(
        select(member_users).where(
            member_users.c.program_id == program_id, member_users.c.email == email
        )
    ).first()


def users_of(conn: Connection, program_id: int, member_id: int) -> list[AnyRow]:
    """A member's current users, in the order they were added."""
    return list(
        conn.execute(
            select(member_users)
            .where(
                member_users.c.program_id == program_id,
                member_users.c.member_id == member_id,
                member_users.c.removed_at.is_(None),
            )
            .order_by(member_users.c.id)
        ).all()
    )


def insert_user(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(member_users.insert().values(values))


def update_user(conn: Connection, user_id: int, values: dict[str, Any]) -> None:
    conn.execute(member_users.update().where(member_users.c.id == user_id).values(values))
