"""Ingest activities: validate, deduplicate by external_id, evaluate rules, post to the ledger.

An activity is accepted at most once per program: its `external_id` is unique, the same
body sent again replays the first answer, a different body is a 409.

The purchase path is kept to a few statements: one query finds the member and locks their
account, the rules run in memory, the activity row is written with its final answer, then
the ledger posts the points (and must agree with the answer predicted from the counters).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
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

#: How far a till's clock may run ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)


def ingest(
    conn: Connection, program: ProgramVersion, data: ActivityIn, now: datetime, actor: str
) -> ActivityResult:
    """Record one activity and what it earns, in the caller's transaction."""
    body = data.model_dump(mode="json", exclude_none=True)
    digest = request_hash(body)
    occurred_at = data.occurred_at or now
    ctx = ledger.Context(program.program_id, now, actor, program.version)
    match data:
        case PurchaseIn() | EventIn():
            # New activities are the common case: try the insert, replay on conflict.
            return _earning(conn, program, ctx, data, body, digest, occurred_at)
        case ReturnIn():
            # A retried return must replay even once the purchase is fully returned.
            existing = repository.find(conn, program.program_id, data.external_id)
            if existing is not None:
                return _replay(existing, digest)
            _check_time(occurred_at, now)
            return _return(conn, program, ctx, data, body, digest, occurred_at)
    raise InvariantBroken(f"unknown activity {data!r}")


def _check_time(occurred_at: datetime, now: datetime) -> None:
    if occurred_at > now + CLOCK_SKEW:
        raise invalid("occurred_in_future", "occurred_at lies in the future.")


def _replay(row: AnyRow, digest: str) -> ActivityResult:
    if row.request_hash != digest:
        raise conflict(
            "external_id_reused",
            f"Activity {row.external_id!r} was already received with a different body.",
        )
    return ActivityResult.model_validate({**row.result, "id": row.id, "replayed": True})


def _activity_row(
    program: ProgramVersion,
    data: ActivityIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
    now: datetime,
    **values: Any,
) -> dict[str, Any]:
    return {
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
    }


def _stored(result: ActivityResult) -> dict[str, Any]:
    """The answer as stored with the activity (its id lives in the row itself)."""
    return result.model_dump(mode="json", exclude={"id", "replayed"})


def _earning(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    data: PurchaseIn | EventIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
) -> ActivityResult:
    """A purchase or an event: evaluate the rules, store the activity, post what it earns."""
    spec = program.spec
    if isinstance(data, PurchaseIn) and data.currency != spec.currency:
        raise invalid(
            "currency_mismatch", f"This program counts in {spec.currency}, not {data.currency}."
        )
    _check_time(occurred_at, ctx.now)
    member = None
    if data.member_id is not None or data.loyalty_number is not None:
        member = members.resolve_with_account(
            conn,
            program.program_id,
            member_id=data.member_id,
            number=data.loyalty_number,
            lock=True,
        )
    effects: list[engine.PointsEffect] = []
    if member is not None:
        snapshot = engine.MemberSnapshot(int(member.id), str(member.status), member.birth_date)
        effects = engine.evaluate(spec, _facts(data, occurred_at), snapshot)
    credits = [ledger.Credit(e.points, e.rule, e.vests_at, e.expires_at) for e in effects]
    before = ledger.Balance.of(member) if member is not None else None
    expected = None if before is None else ledger.predict_earn(before, credits, ctx.now)
    result = ActivityResult(
        id=0,
        external_id=data.external_id,
        type=data.type,
        member_id=None if member is None else int(member.id),
        points=sum(c.points for c in credits),
        effects=[
            EffectOut(rule=e.rule, points=e.points, vests_at=e.vests_at, expires_at=e.expires_at)
            for e in effects
        ],
        balance=None if expected is None else BalanceOut.of(expected),
        program_version=program.version,
    )
    if isinstance(data, PurchaseIn):
        columns = {
            "amount": data.amount,
            "currency": data.currency,
            "store": data.store,
            "channel": data.channel.value,
        }
    else:
        columns = {"event_type": data.event_type}
    row = _activity_row(
        program,
        data,
        body,
        digest,
        occurred_at,
        ctx.now,
        member_id=result.member_id,
        points=result.points,
        result=_stored(result),
        **columns,
    )
    activity_id = repository.insert_new(conn, row)
    if activity_id is None:
        existing = repository.find(conn, program.program_id, data.external_id)
        if existing is None:
            raise conflict("external_id_in_flight", f"{data.external_id!r} is being received.")
        return _replay(existing, digest)
    if member is not None and credits:
        posted = ledger.post(
            conn,
            ctx,
            ledger.Earn(
                member_id=int(member.id),
                account_id=int(member.account_id),
                credits=credits,
                idempotency_key=f"activity:{activity_id}",
                effective_at=occurred_at,
                activity_id=activity_id,
            ),
        )
        if posted is None or posted.balance != expected:
            raise InvariantBroken(f"earn for activity {activity_id}: {posted} != {expected}")
    return result.model_copy(update={"id": activity_id})


def _facts(data: PurchaseIn | EventIn, occurred_at: datetime) -> engine.ActivityFacts:
    if isinstance(data, PurchaseIn):
        return engine.ActivityFacts(
            type="purchase",
            occurred_at=occurred_at,
            amount=data.amount,
            currency=data.currency,
            store=data.store,
            channel=data.channel.value,
            lines=tuple(
                engine.Line(ln.sku, ln.quantity, ln.amount, ln.category) for ln in data.lines
            ),
        )
    return engine.ActivityFacts(
        type="event",
        occurred_at=occurred_at,
        event_type=data.event_type,
        attributes=data.attributes,
    )


def _return(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    data: ReturnIn,
    body: dict[str, Any],
    digest: str,
    occurred_at: datetime,
) -> ActivityResult:
    """Keep exactly what the rest of the purchase would have earned; take back the rest."""
    original = repository.find(conn, program.program_id, data.original_external_id)
    if original is None or original.type != "purchase":
        raise not_found("purchase", data.original_external_id)
    if data.currency is not None and data.currency != original.currency:
        raise invalid("currency_mismatch", f"The purchase was in {original.currency}.")
    member = None
    if original.member_id is not None:
        member = members.resolve_with_account(
            conn, program.program_id, member_id=int(original.member_id), lock=True
        )
    earlier = repository.returns_of(conn, int(original.id))
    returned_before = sum(int(r.amount) for r in earlier)
    amount = _return_amount(data, original, earlier, returned_before)
    row = _activity_row(
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
    activity_id = repository.insert_new(conn, row)
    if activity_id is None:
        raise conflict("external_id_in_flight", f"{data.external_id!r} is being received.")
    result = ActivityResult(
        id=activity_id,
        external_id=data.external_id,
        type=data.type,
        member_id=original.member_id,
        points=0,
        balance=None if member is None else BalanceOut.of(ledger.Balance.of(member)),
        program_version=program.version,
    )
    claimed_before = -sum(int(r.points) for r in earlier)
    keep = engine.purchase_points(program.spec, int(original.amount) - returned_before - amount)
    claim = max(0, int(original.points) - claimed_before - keep)
    if member is not None and claim > 0:
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
        result = result.model_copy(
            update={
                "points": -claim,
                "uncollected": posted.uncollected,
                "effects": [
                    EffectOut(rule="return", points=posted.points, vests_at=None, expires_at=None)
                ],
                "balance": BalanceOut.of(posted.balance),
            }
        )
    repository.set_outcome(conn, activity_id, result.points, _stored(result))
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
