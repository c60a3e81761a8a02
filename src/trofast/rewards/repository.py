"""All SQL of the rewards module: vouchers, reward stock and gift-card code pools."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trofast.kit.orm import AnyRow
from trofast.rewards.models import gift_codes, reward_stock, vouchers


def _insert(conn: Connection, table: Any) -> Any:
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def voucher_by_code(
    conn: Connection, program_id: int, code: str, *, lock: bool = False
) -> AnyRow | None:
    stmt = select(vouchers).where(vouchers.c.program_id == program_id, vouchers.c.code == code)
    return conn.execute(stmt.with_for_update() if lock else stmt).first()


def voucher_by_reference(conn: Connection, program_id: int, reference: str) -> AnyRow | None:
    return conn.execute(
        select(vouchers).where(
            vouchers.c.program_id == program_id, vouchers.c.reference == reference
        )
    ).first()


def insert_voucher(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(vouchers.insert().returning(vouchers.c.id), values).scalar_one())


def update_voucher(conn: Connection, voucher_id: int, **values: Any) -> None:
    conn.execute(update(vouchers).where(vouchers.c.id == voucher_id).values(**values))


def member_vouchers(
    conn: Connection, program_id: int, member_id: int, after_id: int, limit: int
) -> list[AnyRow]:
    stmt = (
        select(vouchers)
        .where(vouchers.c.program_id == program_id, vouchers.c.member_id == member_id)
        .order_by(vouchers.c.id.desc())
        .limit(limit)
    )
    if after_id:
        stmt = stmt.where(vouchers.c.id < after_id)
    return list(conn.execute(stmt).all())


def open_vouchers(conn: Connection, program_id: int, member_id: int, now: datetime) -> list[AnyRow]:
    """A member's issued vouchers that have not expired."""
    return list(
        conn.execute(
            select(vouchers)
            .where(
                vouchers.c.program_id == program_id,
                vouchers.c.member_id == member_id,
                vouchers.c.status == "issued",
                (vouchers.c.expires_at.is_(None)) | (vouchers.c.expires_at > now),
            )
            .order_by(vouchers.c.id)
        ).all()
    )


def count_member_vouchers(
    conn: Connection, program_id: int, member_id: int, reward: str, since: datetime | None
) -> int:
    """Vouchers of `reward` the member holds or held (cancelled ones do not count)."""
    stmt = select(func.count()).where(
        vouchers.c.program_id == program_id,
        vouchers.c.member_id == member_id,
        vouchers.c.reward == reward,
        vouchers.c.status != "cancelled",
    )
    if since is not None:
        stmt = stmt.where(vouchers.c.issued_at >= since)
    return int(conn.execute(stmt).scalar_one())


def vouchers_used_by(conn: Connection, program_id: int, external_id: str) -> list[AnyRow]:
    return list(
        conn.execute(
            select(vouchers)
            .where(
                vouchers.c.program_id == program_id,
                vouchers.c.used_by == external_id,
                vouchers.c.status == "used",
            )
            .with_for_update()
        ).all()
    )


def take_stock(conn: Connection, program_id: int, reward: str, stock: int) -> bool:
    """Count one more issued unit of `reward` if fewer than `stock` are out (atomic)."""
    conn.execute(
        _insert(conn, reward_stock)
        .values(program_id=program_id, reward=reward, issued=0)
        .on_conflict_do_nothing(index_elements=["program_id", "reward"])
    )
    taken = conn.execute(
        update(reward_stock)
        .where(
            reward_stock.c.program_id == program_id,
            reward_stock.c.reward == reward,
            reward_stock.c.issued < stock,
        )
        .values(issued=reward_stock.c.issued + 1)
    )
    return taken.rowcount == 1


def return_stock(conn: Connection, program_id: int, reward: str) -> None:
    conn.execute(
        update(reward_stock)
        .where(
            reward_stock.c.program_id == program_id,
            reward_stock.c.reward == reward,
            reward_stock.c.issued > 0,
        )
        .values(issued=reward_stock.c.issued - 1)
    )


def issued_counts(conn: Connection, program_id: int) -> dict[str, int]:
    rows = conn.execute(
        select(reward_stock.c.reward, reward_stock.c.issued).where(
            reward_stock.c.program_id == program_id
        )
    )
    return {str(r.reward): int(r.issued) for r in rows}


def take_gift_code(conn: Connection, program_id: int, pool: str) -> AnyRow | None:
    """The oldest unused code of `pool`, locked (others skip it rather than wait)."""
    stmt = (
        select(gift_codes.c.id, gift_codes.c.code)
        .where(
            gift_codes.c.program_id == program_id,
            gift_codes.c.pool == pool,
            gift_codes.c.voucher_id.is_(None),
        )
        .order_by(gift_codes.c.id)
        .limit(1)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return conn.execute(stmt).first()


def assign_gift_code(conn: Connection, code_id: int, voucher_id: int) -> None:
    conn.execute(
        update(gift_codes)
        .where(gift_codes.c.id == code_id, gift_codes.c.voucher_id.is_(None))
        .values(voucher_id=voucher_id)
    )


def gift_code(conn: Connection, code_id: int) -> str:
    return str(
        conn.execute(select(gift_codes.c.code).where(gift_codes.c.id == code_id)).scalar_one()
    )


def add_gift_codes(
    conn: Connection, program_id: int, pool: str, codes: list[str], now: datetime
) -> None:
    """Insert the codes not yet in the pool (codes already there are skipped)."""
    if codes:
        conn.execute(
            _insert(conn, gift_codes).on_conflict_do_nothing(
                index_elements=["program_id", "pool", "code"]
            ),
            [
                {"program_id": program_id, "pool": pool, "code": code, "imported_at": now}
                for code in codes
            ],
        )


_POOL_COUNTS = (
    func.count(),
    func.coalesce(func.sum(case((gift_codes.c.voucher_id.is_(None), 1), else_=0)), 0),
)


def pool_sizes(conn: Connection, program_id: int) -> dict[str, tuple[int, int]]:
    """Pool -> (codes in total, codes not yet given out), for every pool of the program."""
    rows = conn.execute(
        select(gift_codes.c.pool, *_POOL_COUNTS)
        .where(gift_codes.c.program_id == program_id)
        .group_by(gift_codes.c.pool)
    )
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def pool_size(conn: Connection, program_id: int, pool: str) -> tuple[int, int]:
    """(codes in total, codes not yet given out) of one pool."""
    row = conn.execute(
        select(*_POOL_COUNTS).where(
            gift_codes.c.program_id == program_id, gift_codes.c.pool == pool
        )
    ).one()
    return int(row[0]), int(row[1])


def donation_totals(conn: Connection, program_id: int) -> list[AnyRow]:
    """Per cause: donations made, points given and money donated."""
    cause = vouchers.c.benefit["cause"].as_string()
    amount = vouchers.c.benefit["amount"].as_integer()
    return list(
        conn.execute(
            select(
                cause.label("cause"),
                func.count().label("donations"),
                func.coalesce(func.sum(vouchers.c.points), 0).label("points"),
                func.coalesce(func.sum(amount), 0).label("amount"),
            )
            .where(
                vouchers.c.program_id == program_id,
                vouchers.c.type == "donation",
                vouchers.c.status != "cancelled",
            )
            .group_by(cause)
            .order_by(cause)
        ).all()
    )


def first_voucher_due(conn: Connection, program_id: int, now: datetime) -> int | None:
    value = conn.execute(
        select(vouchers.c.id)
        .where(
            vouchers.c.program_id == program_id,
            vouchers.c.status == "issued",
            vouchers.c.expires_at <= now,
        )
        .limit(1)
    ).scalar_one_or_none()
    return None if value is None else int(value)


def expire_vouchers(conn: Connection, program_id: int, now: datetime) -> int:
    """Mark issued vouchers past their end as expired; how many."""
    result = conn.execute(
        update(vouchers)
        .where(
            vouchers.c.program_id == program_id,
            vouchers.c.status == "issued",
            vouchers.c.expires_at <= now,
        )
        .values(status="expired")
    )
    return int(result.rowcount)
