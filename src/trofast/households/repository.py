"""SQL for households, their invitations, and the transfer limits' ledger reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from trofast.households.models import household_invites, households
from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts, ledger_transactions, transfers
from trofast.members.models import members


def insert_household(conn: Connection, values: dict[str, Any]) -> int:
    return int(conn.execute(households.insert().returning(households.c.id), values).scalar_one())


def get_household(
    conn: Connection, program_id: int, household_id: int, *, lock: bool = False
) -> AnyRow | None:
    """A household of the program; `lock` locks its row until the transaction ends (every
    change of membership takes this lock, so they happen one at a time per household)."""
    stmt = select(households).where(
        households.c.program_id == program_id, households.c.id == household_id
    )
    if lock:
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first()


def set_owner(conn: Connection, household_id: int, owner_id: int) -> None:
    conn.execute(
        update(households).where(households.c.id == household_id).values(owner_id=owner_id)
    )


def join(conn: Connection, program_id: int, member_id: int, household_id: int) -> bool:
    """Put a member in a household unless it is in one already (guarded); True if done."""
    result = conn.execute(
        update(members)
        .where(
            members.c.program_id == program_id,
            members.c.id == member_id,
            members.c.household_id.is_(None),
        )
        .values(household_id=household_id)
    )
    return result.rowcount == 1


def leave(conn: Connection, program_id: int, member_id: int, household_id: int) -> bool:
    """Take a member out of `household_id` (guarded); True if it was in it."""
    result = conn.execute(
        update(members)
        .where(
            members.c.program_id == program_id,
            members.c.id == member_id,
            members.c.household_id == household_id,
        )
        .values(household_id=None)
    )
    return result.rowcount == 1


def household_members(conn: Connection, program_id: int, household_id: int) -> list[AnyRow]:
    """The members of a household with their points counters and the id of the accepted
    invitation that brought them in (null for the founder)."""
    accepted = (
        select(
            household_invites.c.member_id,
            func.max(household_invites.c.id).label("invite_id"),
        )
        .where(
            household_invites.c.household_id == household_id,
            household_invites.c.status == "accepted",
        )
        .group_by(household_invites.c.member_id)
        .subquery()
    )
    joined = (
        select(household_invites.c.answered_at)
        .where(household_invites.c.id == accepted.c.invite_id)
        .scalar_subquery()
    )
    stmt = (
        select(
            members.c.id,
            members.c.loyalty_number,
            members.c.first_name,
            accepted.c.invite_id,
            joined.label("joined_at"),
            accounts.c.credits_posted,
            accounts.c.debits_posted,
            accounts.c.credits_pending,
            accounts.c.debits_pending,
            accounts.c.debt,
            accounts.c.withheld,
        )
        .join(
            accounts,
            (accounts.c.member_id == members.c.id)
            & (accounts.c.kind == "member")
            & (accounts.c.unit == "points"),
        )
        .outerjoin(accepted, accepted.c.member_id == members.c.id)
        .where(members.c.program_id == program_id, members.c.household_id == household_id)
    )
    return list(conn.execute(stmt).all())


def insert_invite(conn: Connection, values: dict[str, Any]) -> int:
    return int(
        conn.execute(
            household_invites.insert().returning(household_invites.c.id), values
        ).scalar_one()
    )


def open_invite(
    conn: Connection, household_id: int, member_id: int, now: datetime
) -> AnyRow | None:
    """A pending, unexpired invitation of `member_id` to `household_id`."""
    return conn.execute(
        select(household_invites).where(
            household_invites.c.household_id == household_id,
            household_invites.c.member_id == member_id,
            household_invites.c.status == "pending",
            household_invites.c.expires_at > now,
        )
    ).first()


def invite_by_token(conn: Connection, program_id: int, token_hash: str) -> AnyRow | None:
    return conn.execute(
        select(household_invites).where(
            household_invites.c.program_id == program_id,
            household_invites.c.token == token_hash,
        )
    ).first()


def answer_invite(conn: Connection, invite_id: int, status: str, now: datetime) -> bool:
    """Move a pending invitation to `status` (guarded: once only); True if it was pending."""
    result = conn.execute(
        update(household_invites)
        .where(household_invites.c.id == invite_id, household_invites.c.status == "pending")
        .values(status=status, answered_at=now)
    )
    return result.rowcount == 1


def revoke_pending(conn: Connection, household_id: int, now: datetime) -> None:
    """Revoke a household's pending invitations (when its last member leaves)."""
    conn.execute(
        update(household_invites)
        .where(
            household_invites.c.household_id == household_id,
            household_invites.c.status == "pending",
        )
        .values(status="revoked", answered_at=now)
    )


def points_sent_since(
    conn: Connection, program_id: int, member_id: int, account_id: int, since: datetime
) -> int:
    """Points a member (its points account) sent in `transfer_out` transactions created at
    or after `since`."""
    total = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount), 0))
        .select_from(transfers)
        .join(ledger_transactions, ledger_transactions.c.id == transfers.c.transaction_id)
        .where(
            ledger_transactions.c.program_id == program_id,
            ledger_transactions.c.member_id == member_id,
            ledger_transactions.c.kind == "transfer_out",
            ledger_transactions.c.created_at >= since,
            transfers.c.debit_account_id == account_id,
        )
    ).scalar_one()
    return int(total)
