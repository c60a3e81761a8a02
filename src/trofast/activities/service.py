"""Ingest activities: validate, deduplicate by external_id, evaluate rules, post to the ledger.

An activity is accepted at most once per program: its `external_id` is unique, the same
body sent again replays the first answer, a different body is a 409.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from trofast.activities import repository
from trofast.activities.schemas import (
    ActivityIn,
    ActivityResult,
    BalanceOut,
    EffectOut,
    EventIn,
    PurchaseIn,
    ReturnIn,
)
from trofast.kit.errors import InvariantBroken, Problem, conflict, invalid, not_found
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import AnyRow
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.programs.service import ProgramVersion
from trofast.rules import engine


def ingest(
    conn: Connection, program: ProgramVersion, data: ActivityIn, now: datetime, actor: str
) -> ActivityResult:
    """Record one activity and what it earns, in the caller's transaction."""
    body = data.model_dump(mode="json", exclude_none=True)
    digest = request_hash(body)
    existing = repository.find(conn, program.program_id, data.external_id)
    if existing is not None:
        return _replay(existing, digest)
    ctx = ledger.Context(program.program_id, now, actor, program.version)
    occurred_at = data.occurred_at or now
    if occurred_at > now:
        raise invalid("occurred_in_future", "occurred_at lies in the future.")
    match data:
        case PurchaseIn():
            return _purchase(conn, program, ctx, data, body, digest, occurred_at)
        case ReturnIn():
            return _return(conn, program, ctx, data, body, digest, occurred_at)
        case EventIn():
            return _event(conn, program, ctx, data, body, digest, occurred_at)
    raise InvariantBroken(f"unknown activity {data!r}")


def _replay(row: AnyRow, digest: str) -> ActivityResult:
    if row.request_hash != digest:
        raise conflict(
            "external_id_reused",
            f"Activity {row.external_id!r} was already received with a different body.",
        )
    return ActivityResult.model_validate({**row.result, "replayed": True})


def _member(conn: Connection, program_id: int, data: PurchaseIn | EventIn) -> AnyRow | None:
    if data.member_id is not None:
        return members.resolve_with_account(conn, program_id, member_id=data.member_id)
    if data.loyalty_number is not None:
        return members.resolve_with_account(conn, program_id, number=data.loyalty_number)
    return None


def _insert(
    conn: Connection,
    program: ProgramVersion,
    data: ActivityIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
    now: datetime,
    **values: Any,
) -> int:
    activity_id = repository.insert_new(
        conn,
        {
            "program_id": program.program_id,
            "external_id": data.external_id,
            "type": data.type,
            "occurred_at": occurred_at,
            "body": body,
            "request_hash": digest,
            "program_version": program.version,
            "points": 0,
            "result": {},
            "received_at": now,
            **values,
        },
    )
    if activity_id is None:
        raise conflict("external_id_in_flight", f"Activity {data.external_id!r} is being received.")
    return activity_id


def _finish(
    conn: Connection,
    program: ProgramVersion,
    activity_id: int,
    data: ActivityIn,
    member_id: int | None,
    points: int,
    balance: ledger.Balance | None,
    effects: list[EffectOut],
    uncollected: int = 0,
) -> ActivityResult:
    result = ActivityResult(
        id=activity_id,
        external_id=data.external_id,
        type=data.type,
        member_id=member_id,
        points=points,
        uncollected=uncollected,
        effects=effects,
        balance=BalanceOut.of(balance) if balance is not None else None,
        program_version=program.version,
    )
    repository.set_outcome(conn, activity_id, points, result.model_dump(mode="json"))
    return result


def _purchase(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    data: PurchaseIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
) -> ActivityResult:
    spec = program.spec
    if data.currency != spec.currency:
        raise invalid(
            "currency_mismatch", f"This program counts in {spec.currency}, not {data.currency}."
        )
    member = _member(conn, program.program_id, data)
    activity_id = _insert(
        conn,
        program,
        data,
        body,
        digest,
        occurred_at,
        ctx.now,
        member_id=None if member is None else int(member.id),
        amount=data.amount,
        currency=data.currency,
        store=data.store,
        channel=data.channel.value,
    )
    if member is None:
        return _finish(conn, program, activity_id, data, None, 0, None, [])
    facts = engine.ActivityFacts(
        type="purchase",
        occurred_at=occurred_at,
        amount=data.amount,
        currency=data.currency,
        store=data.store,
        channel=data.channel.value,
        lines=tuple(engine.Line(ln.sku, ln.quantity, ln.amount, ln.category) for ln in data.lines),
    )
    snapshot = engine.MemberSnapshot(int(member.id), str(member.status), member.birth_date)
    effects = engine.evaluate(spec, facts, snapshot)
    return _post_effects(conn, program, ctx, activity_id, data, member, effects, occurred_at)


def _post_effects(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    activity_id: int,
    data: ActivityIn,
    member: AnyRow,
    effects: list[engine.PointsEffect],
    occurred_at: datetime,
) -> ActivityResult:
    posted = ledger.post(
        conn,
        ctx,
        ledger.Earn(
            member_id=int(member.id),
            account_id=int(member.account_id),
            credits=[ledger.Credit(e.points, e.rule, e.vests_at, e.expires_at) for e in effects],
            idempotency_key=f"activity:{activity_id}",
            effective_at=occurred_at,
            activity_id=activity_id,
        ),
    )
    assert posted is not None
    out = [
        EffectOut(rule=e.rule, points=e.points, vests_at=e.vests_at, expires_at=e.expires_at)
        for e in effects
    ]
    return _finish(
        conn, program, activity_id, data, int(member.id), posted.points, posted.balance, out
    )


def _event(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    data: EventIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
) -> ActivityResult:
    member = _member(conn, program.program_id, data)
    assert member is not None
    activity_id = _insert(
        conn,
        program,
        data,
        body,
        digest,
        occurred_at,
        ctx.now,
        member_id=int(member.id),
        event_type=data.event_type,
    )
    facts = engine.ActivityFacts(
        type="event",
        occurred_at=occurred_at,
        event_type=data.event_type,
        attributes=data.attributes,
    )
    snapshot = engine.MemberSnapshot(int(member.id), str(member.status), member.birth_date)
    effects = engine.evaluate(program.spec, facts, snapshot)
    return _post_effects(conn, program, ctx, activity_id, data, member, effects, occurred_at)


def _return(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    data: ReturnIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
) -> ActivityResult:
    original = repository.find(conn, program.program_id, data.original_external_id)
    if original is None or original.type != "purchase":
        raise not_found("purchase", data.original_external_id)
    if data.currency is not None and data.currency != original.currency:
        raise invalid("currency_mismatch", f"The purchase was in {original.currency}.")
    earlier = repository.returns_of(conn, int(original.id))
    returned_before = sum(int(r.amount) for r in earlier)
    amount = _return_amount(data, original, earlier, returned_before)
    activity_id = _insert(
        conn,
        program,
        data,
        body,
        digest,
        occurred_at,
        ctx.now,
        member_id=original.member_id,
        amount=amount,
        currency=original.currency,
        store=original.store,
        channel=original.channel,
        original_id=int(original.id),
    )
    if original.member_id is None:
        return _finish(conn, program, activity_id, data, None, 0, None, [])
    # Keep exactly what the rest of the purchase would have earned; take back the difference.
    claimed_before = -sum(int(r.points) for r in earlier)
    keep = engine.purchase_points(program.spec, int(original.amount) - returned_before - amount)
    claim = max(0, int(original.points) - claimed_before - keep)
    member = members.resolve_with_account(conn, program.program_id, member_id=original.member_id)
    if claim == 0:
        balance = ledger.Balance.of(
            ledger.lock_account(conn, program.program_id, member.account_id)
        )
        return _finish(conn, program, activity_id, data, int(member.id), 0, balance, [])
    posted = ledger.post(
        conn,
        ctx,
        ledger.TakeBack(
            member_id=int(member.id),
            account_id=int(member.account_id),
            points=claim,
            own_lot_ids=repository.lot_ids_of(conn, int(original.id)),
            idempotency_key=f"activity:{activity_id}",
            allow_negative=program.spec.negative_balance == "allow",
            activity_id=activity_id,
        ),
    )
    assert posted is not None
    effects = [EffectOut(rule="return", points=posted.points, vests_at=None, expires_at=None)]
    result = _finish(
        conn,
        program,
        activity_id,
        data,
        int(member.id),
        -claim,
        posted.balance,
        effects,
        uncollected=posted.uncollected,
    )
    return result


def _return_amount(
    data: ReturnIn, original: AnyRow, earlier: list[AnyRow], returned_before: int
) -> int:
    """The money this return gives back, checked against what is left of the purchase."""
    left = int(original.amount) - returned_before
    if data.lines:
        bought = Counter[str]()
        for line in original.body.get("lines", []):
            bought[line["sku"]] += int(line.get("quantity", 1))
        for row in earlier:
            for line in row.body.get("lines", []):
                bought[line["sku"]] -= int(line.get("quantity", 1))
        for line in data.lines:
            bought[line.sku] -= line.quantity
            if bought[line.sku] < 0:
                raise invalid(
                    "return_exceeds_purchase",
                    f"More of {line.sku!r} returned than purchase "
                    f"{original.external_id!r} has left.",
                )
        amount = sum(line.amount for line in data.lines)
    else:
        amount = data.amount if data.amount is not None else left
    if amount > left:
        raise invalid(
            "return_exceeds_purchase",
            f"Return of {amount} exceeds the {left} left of purchase {original.external_id!r}.",
            left=left,
        )
    if amount <= 0:
        raise Problem(422, "nothing_to_return", "The purchase has been returned in full already.")
    return amount
