"""Points transfers between members, under the program's `transfers:` policy.

The ledger does the moving (`ledger.service.Move`: the sender's soonest-expiring points
first, keeping their expiry in the recipient's new lots); this module decides whether a
transfer is allowed. Every check runs with both points accounts locked (in id order, as
`Move` locks them), so two transfers of one sender are checked one after the other and
cannot together overdraw the balance or the monthly limit. A refused transfer writes
nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from trofast.households import repository
from trofast.households.schemas import TransferIn, TransferOut
from trofast.kit.errors import InvariantBroken, Problem, conflict, invalid
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import AnyRow
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.notify.outbox import raise_event
from trofast.programs.service import ProgramVersion

TOPIC = "points.transferred"


def transfer(
    conn: Connection,
    program: ProgramVersion,
    sender_ref: str,
    data: TransferIn,
    now: datetime,
    actor: str,
) -> TransferOut:
    """Move `data.points` from the sender to `data.to`, or raise a Problem (and write
    nothing). The reference makes it idempotent: sent again with the same body it replays
    (`replayed: true`), with another body it is a 409 `reference_reused`."""
    policy = program.spec.transfers
    program_id = program.program_id
    if not policy.enabled:
        raise Problem(403, "transfers_disabled", "This program does not allow points transfers.")
    sender = members.resolve(conn, program_id, sender_ref)
    recipient = members.resolve(conn, program_id, str(data.to))
    if sender.id == recipient.id:
        raise invalid("self_transfer", "A member cannot transfer points to itself.")
    sender_account = _points_account(conn, int(sender.id))
    recipient_account = _points_account(conn, int(recipient.id))
    for account_id in sorted((sender_account, recipient_account)):
        ledger.lock_account(conn, program_id, account_id)
    key = f"transfer:{data.reference}"
    if ledger_reads.transaction_by_key(conn, program_id, f"{key}:out") is None:
        _check(conn, program, sender, recipient, sender_account, data.points, now)
    op = ledger.Move(
        member_id=int(sender.id),
        account_id=sender_account,
        to_member_id=int(recipient.id),
        to_account_id=recipient_account,
        points=data.points,
        reference=data.reference,
        idempotency_key=key,
        request_hash=request_hash("transfer", int(sender.id), int(recipient.id), data.points),
    )
    ctx = ledger.Context(program_id, now, actor, program.version)
    sent = ledger.post(conn, ctx, op)
    assert sent is not None
    if not sent.replayed:
        raise_event(
            conn,
            program_id,
            TOPIC,
            f"transferred:{sent.transaction_id}",
            {
                "transaction_id": sent.transaction_id,
                "from_member_id": int(sender.id),
                "to_member_id": int(recipient.id),
                "points": data.points,
                "reference": data.reference,
            },
            now,
        )
    return TransferOut(
        transaction_id=sent.transaction_id,
        from_member_id=sender.id,
        to_member_id=recipient.id,
        points=data.points,
        reference=data.reference,
        available=sent.balance.available,
        replayed=sent.replayed,
    )


def _check(
    conn: Connection,
    program: ProgramVersion,
    sender: AnyRow,
    recipient: AnyRow,
    sender_account: int,
    points: int,
    now: datetime,
) -> None:
    """The policy's checks, in a fixed order; the balance itself is `Move`'s check."""
    policy = program.spec.transfers
    for member in (sender, recipient):
        if member.status != "active":
            raise conflict(
                "member_suspended", f"Member {member.id} is suspended and cannot transfer points."
            )
    if policy.household_only and (
        sender.household_id is None or sender.household_id != recipient.household_id
    ):
        raise conflict(
            "not_same_household", "This program allows transfers only within a household."
        )
    if points < policy.min_points:
        raise invalid(
            "transfer_too_small",
            f"A transfer must be at least {policy.min_points} points.",
            min_points=policy.min_points,
        )
    if policy.max_points_per_transfer is not None and points > policy.max_points_per_transfer:
        raise invalid(
            "transfer_too_large",
            f"A transfer may be at most {policy.max_points_per_transfer} points.",
            max_points_per_transfer=policy.max_points_per_transfer,
        )
    if policy.max_points_per_month is not None:
        local = now.astimezone(program.spec.zone)
        month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        sent = repository.points_sent_since(
            conn, program.program_id, int(sender.id), sender_account, month_start
        )
        if sent + points > policy.max_points_per_month:
            left = max(policy.max_points_per_month - sent, 0)
            raise invalid(
                "monthly_transfer_limit",
                f"The member may send {left} more points this month"
                f" (limit {policy.max_points_per_month}).",
                max_points_per_month=policy.max_points_per_month,
                sent_this_month=sent,
                remaining=left,
            )


def _points_account(conn: Connection, member_id: int) -> int:
    account_id = ledger_reads.member_account(conn, member_id, ledger.POINTS)
    if account_id is None:  # every member gets one at enrolment
        raise InvariantBroken(f"member {member_id} has no points account")
    return account_id
