"""Households: members who see their points together and, where the program says so, may
only transfer points among themselves. A member is in at most one household.

Every change of membership locks the household row first, so joins, leaves and the
owner's succession happen one at a time per household; putting a member in a household
is a guarded update (`household_id IS NULL`), so a member can never end up in two.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from trofast.households import repository
from trofast.households.schemas import (
    HouseholdMember,
    HouseholdOut,
    InviteOut,
    LeaveOut,
)
from trofast.kit.errors import Problem, conflict, not_found
from trofast.kit.orm import AnyRow
from trofast.ledger.service import Balance
from trofast.members import service as members
from trofast.notify.outbox import raise_event

INVITE_DAYS = 14
JOINED = "household.joined"
LEFT = "household.left"


def _member(conn: Connection, program_id: int, ref: int | str) -> AnyRow:
    """A member by id or loyalty number (404 if unknown); suspended members are refused."""
    row = members.resolve(conn, program_id, str(ref))
    if row.status != "active":
        raise conflict("member_suspended", f"Member {row.id} is suspended.")
    return row


def _in_household(row: AnyRow) -> Problem:
    return conflict(
        "already_in_household",
        f"Member {row.id} is already in a household; leave it first.",
        household_id=row.household_id,
    )


def create(conn: Connection, program_id: int, owner: int | str, name: str, now: datetime) -> int:
    """A new household with `owner` as its first member and owner; its id."""
    row = _member(conn, program_id, owner)
    if row.household_id is not None:
        raise _in_household(row)
    household_id = repository.insert_household(
        conn, {"program_id": program_id, "name": name, "owner_id": row.id, "created_at": now}
    )
    if not repository.join(conn, program_id, int(row.id), household_id):
        raise _in_household(members.resolve(conn, program_id, str(row.id)))
    _joined(conn, program_id, household_id, int(row.id), "owner", "founded", now)
    return household_id


def get(conn: Connection, program_id: int, household_id: int) -> HouseholdOut:
    """A household with its members' points and the pooled totals; 404 for one of another
    program."""
    household = repository.get_household(conn, program_id, household_id)
    if household is None:
        raise not_found("household", household_id)
    listed = [member for member, _ in _roster(conn, program_id, household)]
    return HouseholdOut(
        id=household.id,
        name=household.name,
        owner_id=household.owner_id,
        created_at=household.created_at,
        members=listed,
        pooled_available=sum(m.available for m in listed),
        pooled_pending=sum(m.pending for m in listed),
    )


def _roster(
    conn: Connection, program_id: int, household: AnyRow
) -> list[tuple[HouseholdMember, str]]:
    """The members, longest-standing first, each with how it joined (`founded` or
    `invite:{id}`)."""
    listed = []
    for m in repository.household_members(conn, program_id, int(household.id)):
        balance = Balance.of(m)
        member = HouseholdMember(
            member_id=m.id,
            loyalty_number=m.loyalty_number,
            first_name=m.first_name,
            role="owner" if m.id == household.owner_id else "member",
            joined_at=m.joined_at or household.created_at,
            available=balance.available,
            pending=balance.pending,
        )
        listed.append((member, "founded" if m.invite_id is None else f"invite:{m.invite_id}"))
    listed.sort(key=lambda pair: _seniority(pair[0]))
    return listed


def _seniority(member: HouseholdMember) -> tuple[datetime, int]:
    return member.joined_at, member.member_id


def invite(
    conn: Connection, program_id: int, household_id: int, ref: int | str, now: datetime
) -> InviteOut:
    """Invite a member; the answer carries the invitation's token, shown only here (the
    database keeps its hash). The invitation expires after 14 days."""
    household = _locked(conn, program_id, household_id)
    if not repository.household_members(conn, program_id, household_id):
        raise conflict("household_empty", f"Household {household.id} has no members left.")
    row = _member(conn, program_id, ref)
    if row.household_id is not None:
        raise _in_household(row)
    if repository.open_invite(conn, household_id, int(row.id), now) is not None:
        raise conflict(
            "invite_pending", f"Member {row.id} already has an open invitation to this household."
        )
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(days=INVITE_DAYS)
    values = {
        "program_id": program_id,
        "household_id": household_id,
        "member_id": row.id,
        "token": _hash(token),
        "status": "pending",
        "created_at": now,
        "expires_at": expires_at,
    }
    try:
        with conn.begin_nested():
            repository.insert_invite(conn, values)
    except IntegrityError:  # one invitation per member, household and instant
        raise conflict(
            "invite_pending", f"Member {row.id} was just invited to this household."
        ) from None
    return InviteOut(
        household_id=household_id,
        member_id=row.id,
        status="pending",
        created_at=now,
        expires_at=expires_at,
        answered_at=None,
        token=token,
    )


def accept(conn: Connection, program_id: int, token: str, now: datetime) -> int:
    """The invited member joins the household; the household's id."""
    found = _open(conn, program_id, token, now)
    household_id = int(found.household_id)
    household = _locked(conn, program_id, household_id)
    if not repository.household_members(conn, program_id, household_id):
        raise conflict("household_empty", f"Household {household.id} has no members left.")
    row = _member(conn, program_id, int(found.member_id))
    if row.household_id is not None:
        raise _in_household(row)
    if not repository.answer_invite(conn, int(found.id), "accepted", now):
        raise _not_pending("answered")
    if not repository.join(conn, program_id, int(row.id), household_id):
        raise _in_household(members.resolve(conn, program_id, str(row.id)))
    _joined(conn, program_id, household_id, int(row.id), "member", f"invite:{found.id}", now)
    return household_id


def decline(conn: Connection, program_id: int, token: str, now: datetime) -> InviteOut:
    found = _open(conn, program_id, token, now)
    if not repository.answer_invite(conn, int(found.id), "declined", now):
        raise _not_pending("answered")
    return InviteOut(
        household_id=found.household_id,
        member_id=found.member_id,
        status="declined",
        created_at=found.created_at,
        expires_at=found.expires_at,
        answered_at=now,
    )


def leave(conn: Connection, program_id: int, ref: str, now: datetime) -> LeaveOut:
    """The member leaves its household. An owner who leaves hands the household to the
    longest-standing remaining member; the last one to leave revokes open invitations."""
    row = members.resolve(conn, program_id, ref)
    if row.household_id is None:
        raise conflict("not_in_household", f"Member {row.id} is not in a household.")
    household_id = int(row.household_id)
    household = _locked(conn, program_id, household_id)
    roster = _roster(conn, program_id, household)
    via = next((how for m, how in roster if m.member_id == row.id), None)
    if via is None or not repository.leave(conn, program_id, int(row.id), household_id):
        raise conflict("not_in_household", f"Member {row.id} is not in a household.")
    rest = [m.member_id for m, _ in roster if m.member_id != row.id]
    owner: int | None = int(household.owner_id) if rest else None
    if household.owner_id == row.id and rest:
        owner = rest[0]
        repository.set_owner(conn, household_id, owner)
    if not rest:
        repository.revoke_pending(conn, household_id, now)
    raise_event(
        conn,
        program_id,
        LEFT,
        f"{LEFT}:{household_id}:{row.id}:{via}",
        {"household_id": household_id, "member_id": row.id, "owner_id": owner},
        now,
    )
    return LeaveOut(member_id=row.id, household_id=household_id, owner_id=owner)


def _joined(
    conn: Connection,
    program_id: int,
    household_id: int,
    member_id: int,
    role: str,
    via: str,
    now: datetime,
) -> None:
    raise_event(
        conn,
        program_id,
        JOINED,
        f"{JOINED}:{household_id}:{member_id}:{via}",
        {"household_id": household_id, "member_id": member_id, "role": role},
        now,
    )


def _locked(conn: Connection, program_id: int, household_id: int) -> AnyRow:
    household = repository.get_household(conn, program_id, household_id, lock=True)
    if household is None:
        raise not_found("household", household_id)
    return household


def _open(conn: Connection, program_id: int, token: str, now: datetime) -> AnyRow:
    """A pending, unexpired invitation by its token; 404 for an unknown token (or one of
    another program), 409 for one answered or expired."""
    found = repository.invite_by_token(conn, program_id, _hash(token))
    if found is None:
        raise not_found("invite", "with this token")
    if found.status != "pending":
        raise _not_pending(str(found.status))
    if found.expires_at <= now:
        raise conflict("invite_expired", f"The invitation expired at {found.expires_at}.")
    return found


def _not_pending(status: str) -> Problem:
    return conflict(
        "invite_not_pending", f"The invitation was {status} already.", invite_status=status
    )


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
