"""Ingest activities: validate, deduplicate by external_id, evaluate rules, post to the ledger.

An activity is accepted at most once per program: its `external_id` is unique, the same
body sent again replays the first answer, a different body is a 409.

The purchase path is kept to a few statements: one query finds the member and locks their
account, the rules run in memory, the activity row is written with its final answer, then
the ledger posts the points (and must agree with the answer predicted from the counters).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from trofast.activities import repository, undo
from trofast.activities.schemas import (
    ActivityIn,
    ActivityResult,
    BalanceOut,
    EffectOut,
    EventIn,
    MembershipChangeOut,
    PurchaseIn,
    ReturnIn,
)
from trofast.kit.errors import InvariantBroken, Problem, conflict, invalid, not_found
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import AnyRow
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.memberships import service as memberships
from trofast.programs.service import (
    ProgramVersion,
    current,
    last_current,
    load_version,
    seen_current,
)
from trofast.rewards import service as rewards
from trofast.rules import engine
from trofast.tiers import service as tiers

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
                return replayed_answer(existing, digest)
            _check_time(occurred_at, now)
            return _return(conn, program, ctx, data, body, digest, occurred_at)
    raise InvariantBroken(f"unknown activity {data!r}")


def ingest_current(
    conn: Connection, program_id: int, data: ActivityIn, now: datetime, actor: str
) -> ActivityResult:
    """`ingest` under the program's current version. A purchase or an event for a member
    reads that version with the member's lock (`_earning`), so it starts from the version
    last read instead of asking first."""
    if isinstance(data, PurchaseIn | EventIn) and (
        data.member_id is not None or data.loyalty_number is not None
    ):
        return ingest(conn, last_current(conn, program_id), data, now, actor)
    return ingest(conn, current(conn, program_id), data, now, actor)


def member_event(
    conn: Connection,
    program: ProgramVersion,
    member_id: int,
    event_type: str,
    external_id: str,
    now: datetime,
    actor: str,
) -> ActivityResult | None:
    """Record an event Trofast itself notices (signup, profile completed, birthday) when a
    rule listens for it; `external_id` makes it happen at most once."""
    if event_type not in engine.compile_program(program.spec).by_trigger:
        return None
    if repository.find(conn, program.program_id, external_id) is not None:
        return None
    event = EventIn(
        type="event",
        external_id=external_id,
        member_id=member_id,
        event_type=event_type,
        occurred_at=now,
    )
    return ingest(conn, program, event, now, actor)


def stamps(conn: Connection, program_id: int, member_id: int) -> dict[str, int]:
    """Stamps on each of the member's stamp cards."""
    prefix = engine.stamp_key("")
    counters = repository.member_counters(conn, program_id, member_id, prefix)
    return {key.removeprefix(prefix): value for key, value in counters.items()}


def dry_run(
    conn: Connection, program: ProgramVersion, data: ActivityIn, now: datetime, actor: str
) -> ActivityResult:
    """What `ingest` would answer, with every write rolled back."""
    savepoint = conn.begin_nested()
    try:
        result = ingest(conn, program, data, now, actor)
    finally:
        savepoint.rollback()
    return result.model_copy(update={"id": 0, "dry_run": True})


def _check_time(occurred_at: datetime, now: datetime) -> None:
    if occurred_at > now + CLOCK_SKEW:
        raise invalid("occurred_in_future", "occurred_at lies in the future.")


def replayed_answer(row: AnyRow, digest: str) -> ActivityResult:
    """The first answer of an activity received again (`row`); 409 if its body differs."""
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


def stored_answer(result: ActivityResult) -> dict[str, Any]:
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
    """A purchase or an event: evaluate the rules, store the activity, post what it earns.

    It runs under the program's current version, read with the member's lock: if that is
    not `program`'s (a guess, or a version applied since), it starts over under it."""
    check_earning(program, data, occurred_at, ctx.now)
    member = None
    if data.member_id is not None or data.loyalty_number is not None:
        member, version = _lock_member(
            conn, program.program_id, data.member_id, data.loyalty_number
        )
        if version != program.version:  # nothing written yet
            program = seen_current(conn, program.program_id, version)
            ctx = dataclasses.replace(ctx, program_version=version)
            return _earning(conn, program, ctx, data, body, digest, occurred_at)
    user_id = None
    if data.user_external_id is not None:  # a company's user: checked to be the member's
        if member is None:
            raise invalid("unknown_user", "A user acts for a member: name the member.")
        user_id = members.acting_user(conn, program.program_id, member.id, data.user_external_id)
    counters = engine.NO_COUNTERS
    facts = facts_of(data, occurred_at)
    if member is not None:
        member_keys, program_keys = engine.counter_keys(engine.compile_program(program.spec), facts)
        if member_keys or program_keys:
            mine, shared = repository.load_counters(
                conn, program.program_id, int(member.id), member_keys, program_keys, ctx.now
            )
            counters = engine.Counters(mine, shared)
    before = None if member is None else ledger.Balance.of(member)
    standing = _Standing()
    if member is not None:
        standing = _standings(conn, program, [int(member.id)], ctx.now)[int(member.id)]
    prepared = _prepare(program, ctx, data, facts, member, standing, before, counters, body, digest)
    row = prepared.row if user_id is None else {**prepared.row, "user_id": user_id}
    earn = prepared.earn()
    if earn is None:
        activity_id = repository.insert_new(conn, row)
    else:  # the row goes in with its points (on PostgreSQL by one statement)
        new_row = ledger.NewRow(*repository.new_row(conn.dialect, row))
        posted = ledger.post_for_new_row(conn, ctx, earn, new_row)
        activity_id = None if posted is None else posted[0]
        if posted is not None and posted[1].balance != prepared.expected:
            raise InvariantBroken(f"activity {activity_id}: {posted} != {prepared.expected}")
    if activity_id is None:
        existing = repository.find(conn, program.program_id, data.external_id)
        if existing is None:
            raise conflict("external_id_in_flight", f"{data.external_id!r} is being received.")
        return replayed_answer(existing, digest)
    _post(conn, program, ctx, prepared, activity_id)
    result = prepared.result.model_copy(update={"id": activity_id})
    if member is not None and is_membership_event(program, data):
        assert isinstance(data, EventIn)
        change = memberships.on_event(
            conn,
            program,
            int(member.id),
            str(data.event_type),
            data.attributes,
            occurred_at,
            ctx.now,
            ctx.actor,
        )
        if change is not None:
            done = MembershipChangeOut(
                kind=change.kind, plan=change.plan, paid_until=change.paid_until
            )
            result = result.model_copy(update={"membership": done})
    if prepared.evaluation.rewards and member is not None:
        result = grant_rewards(conn, program, ctx, member, activity_id, prepared, result)
    if member is not None:
        # The activity that crosses a threshold earns at the old tier; the next at the new.
        moved = tiers.on_activity(conn, program, int(member.id), ctx.now, ctx.actor)
        if moved is not None:
            result = result.model_copy(update={"new_tier": moved.to_tier})
    if result.membership or result.new_tier or prepared.evaluation.rewards:
        # What happened after the rules ran is part of the answer a resend replays.
        repository.set_outcome(conn, activity_id, result.points, stored_answer(result))
    return result


@dataclass(frozen=True)
class _Standing:
    """What the rules see of a member beyond the member row: tier and membership plan."""

    tier: str | None = None
    plan: str | None = None


def _standings(
    conn: Connection, program: ProgramVersion, member_ids: list[int], now: datetime
) -> dict[int, _Standing]:
    """The tier and running plan of each member (one query each, none without tiers/plans)."""
    spec, pid = program.spec, program.program_id
    tier_of = tiers.tiers_of(conn, spec, pid, member_ids)
    plan_of = memberships.plans_of(conn, spec, pid, member_ids, now)
    return {m: _Standing(tier_of.get(m), plan_of.get(m)) for m in member_ids}


def is_membership_event(program: ProgramVersion, data: PurchaseIn | EventIn) -> bool:
    """A payment provider's event about a paid membership, in a program with plans."""
    return (
        isinstance(data, EventIn)
        and data.event_type in memberships.EVENT_TYPES
        and bool(program.spec.membership_plans)
    )


def grant_rewards(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    member: Any,
    activity_id: int,
    prepared: Prepared,
    result: ActivityResult,
) -> ActivityResult:
    """Issue the vouchers the rules granted. One that cannot be given (sold out, limit
    reached, the gift-card pool empty) is left out with a note: the activity still counts."""
    effects, notes = list(result.effects), list(result.notes)
    for n, grant in enumerate(prepared.evaluation.rewards):
        reference = f"activity:{activity_id}:{grant.rule}:{n}"
        try:
            with conn.begin_nested():
                voucher = rewards.grant(
                    conn, program, member, grant.reward, reference, ctx.now, ctx.actor
                )
            code: str | None = voucher.code
        except Problem as problem:
            code = None
            notes.append(f"{grant.rule}: {grant.reward} not granted ({problem.code})")
        effects.append(EffectOut(rule=grant.rule, reward=grant.reward, voucher=code))
    return result.model_copy(update={"effects": effects, "notes": notes})


def _lock_member(
    conn: Connection, program_id: int, member_id: int | None, number: str | None
) -> tuple[repository.EarningMember, int]:
    """As `members.resolve_with_account(lock=True)`, on the driver (the earn path's lookup),
    with the program's current version."""
    if number is not None:
        members.check_loyalty_number(number)
    row = repository.lock_earning_member(conn, program_id, member_id=member_id, number=number)
    if row is None:
        raise not_found("member", member_id if member_id is not None else number)
    members.refuse_erased(row[0])
    return row


def _post(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    prepared: Prepared,
    activity_id: int,
) -> None:
    """Post what a stored activity earned beyond its points: cashback and counters."""
    member = prepared.member
    if member is None:
        return
    cashback = prepared.evaluation.cashback
    if cashback:
        vests_at, _ = engine.lot_dates(program.spec, prepared.occurred_at)
        wallet = ledger.wallet_account(conn, program.program_id, int(member.id))
        ledger.post(
            conn,
            ctx,
            ledger.Earn(
                member_id=int(member.id),
                account_id=wallet,
                credits=[ledger.Credit(c.amount, c.rule, vests_at, None) for c in cashback],
                idempotency_key=f"activity:{activity_id}:money",
                effective_at=prepared.occurred_at,
                activity_id=activity_id,
                unit=ledger.MONEY,
            ),
        )
    deltas = prepared.evaluation.counters
    if deltas:
        repository.add_to_counters(
            conn,
            program.program_id,
            [(int(member.id) if d.member else 0, d.key, d.points, d.times) for d in deltas],
            ctx.now,
        )


def check_earning(
    program: ProgramVersion, data: PurchaseIn | EventIn, occurred_at: datetime, now: datetime
) -> None:
    """Refuse what no purchase or event may be, whoever it is for: another currency, a
    time in the future, card data in a payment provider's event."""
    currency = program.spec.currency
    if isinstance(data, EventIn) and data.event_type in memberships.EVENT_TYPES:
        memberships.refuse_card_data(data.attributes)  # never stored, with or without plans
    if isinstance(data, PurchaseIn) and data.currency != currency:
        raise invalid(
            "currency_mismatch", f"This program counts in {currency}, not {data.currency}."
        )
    _check_time(occurred_at, now)


@dataclass(frozen=True)
class Prepared:
    """An earning activity evaluated in memory: its row, its answer, what to post."""

    row: dict[str, Any]
    result: ActivityResult
    member: Any  # an AnyRow or repository.EarningMember, or None
    evaluation: engine.Evaluation
    credits: list[ledger.Credit]
    expected: ledger.Balance | None
    occurred_at: datetime

    def earn(self) -> ledger.Earn | None:
        """The points to post, for `ledger.post_for_new_row` (the activity's id ends the
        key: `activity:{id}`)."""
        if self.member is None or not self.evaluation.points:
            return None
        return ledger.Earn(
            member_id=int(self.member.id),
            account_id=int(self.member.account_id),
            credits=self.credits,
            idempotency_key="activity:",
            effective_at=self.occurred_at,
        )


def snapshot(
    member: Any, tier: str | None = None, plan: str | None = None
) -> engine.MemberSnapshot:
    """What the rules may read about a member row (and the member's tier and plan)."""
    return engine.MemberSnapshot(
        id=int(member.id),
        status=str(member.status),
        birth_date=member.birth_date,
        enrolled_at=member.enrolled_at,
        channel=member.channel,
        tags=tuple(member.tags or ()),
        tier=tier,
        plan=plan,
    )


def _prepare(
    program: ProgramVersion,
    ctx: ledger.Context,
    data: PurchaseIn | EventIn,
    facts: engine.ActivityFacts,
    member: Any,
    standing: _Standing,
    before: ledger.Balance | None,
    counters: engine.Counters,
    body: dict[str, Any],
    digest: str,
) -> Prepared:
    """Run the rules and predict the balance; pure apart from reading `member`."""
    evaluation = engine.Evaluation()
    if member is not None:
        member_snapshot = snapshot(member, standing.tier, standing.plan)
        evaluation = engine.evaluate(program.spec, facts, member_snapshot, counters)
    credits = [ledger.Credit(e.points, e.rule, e.vests_at, e.expires_at) for e in evaluation.points]
    expected = None if before is None else ledger.predict_earn(before, credits, ctx.now)
    # model_construct: every value comes typed from the engine and the ledger, and
    # validating them again costs more than the rules did.
    effects = [
        EffectOut.model_construct(
            rule=e.rule, points=e.points, vests_at=e.vests_at, expires_at=e.expires_at
        )
        for e in evaluation.points
    ] + [EffectOut.model_construct(rule=c.rule, cashback=c.amount) for c in evaluation.cashback]
    result = ActivityResult.model_construct(
        id=0,
        external_id=data.external_id,
        type=data.type,
        member_id=None if member is None else int(member.id),
        points=evaluation.total_points,
        cashback=sum(c.amount for c in evaluation.cashback),
        effects=effects,
        tier=standing.tier,
        plan=standing.plan,
        notes=[f"{o.rule}: {o.note}" for o in evaluation.outcomes if o.note],
        balance=None if expected is None else BalanceOut.of(expected),
        program_version=program.version,
    )
    if isinstance(data, PurchaseIn):
        columns: dict[str, Any] = {
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
        facts.occurred_at,
        ctx.now,
        member_id=result.member_id,
        points=result.points,
        result=stored_answer(result),
        **columns,
    )
    return Prepared(row, result, member, evaluation, credits, expected, facts.occurred_at)


class UseSinglePath(Exception):
    """A batch run the bulk path does not handle (debt, a tier change mid-batch)."""


def ingest_many(
    conn: Connection,
    program: ProgramVersion,
    items: list[ActivityIn | Problem],
    now: datetime,
    actor: str,
) -> list[ActivityResult | Problem]:
    """Ingest a batch in order; each item is accepted or rejected on its own, and a rejected
    item writes nothing. Runs of purchases and events take the bulk path of
    `activities.bulk`; returns (and anything unusual) go one by one in a savepoint each."""
    from trofast.activities import bulk  # it builds on this module

    return [
        ActivityResult.model_validate(answer) if isinstance(answer, dict) else answer
        for answer in bulk.ingest_many(conn, program, items, now, actor)
    ]


def ingest_item(
    conn: Connection, program: ProgramVersion, item: ActivityIn | Problem, now: datetime, actor: str
) -> ActivityResult | Problem:
    """One item of a batch on its own (in a savepoint): its answer, or the problem that
    refused it (an item that failed validation comes as its problem)."""
    if isinstance(item, Problem):
        return item
    try:
        with conn.begin_nested():
            return ingest(conn, program, item, now, actor)
    except Problem as problem:
        return problem
    except IntegrityError:
        return Problem(409, "conflict", "The activity conflicts with one sent concurrently.")


def move_tiers(
    conn: Connection, program: ProgramVersion, ctx: ledger.Context, earners: list[Any]
) -> dict[int, str]:
    """Upgrade the batch's members whose activities reached a higher tier: member id -> new
    tier. A member with several activities in the batch who moved would have earned the
    later ones at the new tier one by one: then the run takes the single path (this
    savepoint rolls back)."""
    moved: dict[int, str] = {}
    if len(program.spec.tiers) < 2:
        return moved
    seen = Counter(int(member.id) for member in earners if member is not None)
    for member_id, count in seen.items():
        change = tiers.on_activity(conn, program, member_id, ctx.now, ctx.actor)
        if change is not None:
            if count > 1:
                raise UseSinglePath()
            moved[member_id] = change.to_tier
    return moved


def load_batch_counters(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    accepted: list[tuple[int, engine.ActivityFacts, AnyRow | None]],
) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[str, int]]:
    """The rule counters every accepted item may read, in two queries at most."""
    compiled = engine.compile_program(program.spec)
    member_keys: set[str] = set()
    program_keys: set[str] = set()
    member_ids: set[int] = set()
    for _, facts, member in accepted:
        if member is None or facts.trigger not in compiled.stateful_triggers:
            continue
        mine, ours = engine.counter_keys(compiled, facts)
        member_keys |= mine
        program_keys |= ours
        member_ids.add(int(member.id))
    return repository.load_counters_many(
        conn, program.program_id, member_ids, member_keys, program_keys, ctx.now
    )


def _trigger(data: PurchaseIn | EventIn) -> str:
    return data.event_type if isinstance(data, EventIn) else "purchase"


def facts_of(data: PurchaseIn | EventIn, occurred_at: datetime) -> engine.ActivityFacts:
    """What the rules see of a purchase or event."""
    if isinstance(data, PurchaseIn):
        return engine.ActivityFacts(
            type="purchase",
            occurred_at=occurred_at,
            amount=data.amount,
            currency=data.currency,
            store=data.store,
            channel=data.channel.value,
            lines=tuple(
                engine.Line(ln.sku, ln.quantity, ln.amount, ln.category, tuple(ln.labels))
                for ln in data.lines
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
    """Keep exactly what the rest of the purchase earns under the rules it was earned under
    (limits aside); take back the rest of its points and cashback."""
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
    # Points paid on the purchase come back before its earned points are taken back.
    if member is not None and rewards.on_return(
        conn,
        program,
        str(original.external_id),
        returned_before + amount,
        int(original.amount),
        data.external_id,
        ctx.now,
        ctx.actor,
    ):
        member = members.resolve_with_account(
            conn, program.program_id, member_id=int(original.member_id), lock=True
        )
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
    undone: dict[str, Any] = {}
    if member is not None:
        result, undone = _take_back(
            conn, program, ctx, data, original, earlier, amount, member, result
        )
    repository.set_outcome(
        conn, activity_id, result.points, {**stored_answer(result), undo.UNDONE: undone}
    )
    return result


def _take_back(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    data: ReturnIn,
    original: AnyRow,
    earlier: list[AnyRow],
    amount: int,
    member: AnyRow,
    result: ActivityResult,
) -> tuple[ActivityResult, dict[str, Any]]:
    """Take back what the returned part of the purchase earned (points, cashback, stamps,
    granted vouchers, its use of limits and budgets): the answer, and what to store of it
    for the purchase's next returns (see `activities.undo`)."""
    earned_under = load_version(conn, program.program_id, int(original.program_version))
    left = int(original.amount) - sum(int(r.amount) for r in earlier) - amount
    returned = [*(r.body for r in earlier), data.model_dump(mode="json")]
    kept = engine.Evaluation()
    if left > 0:  # nothing left of the purchase keeps nothing, not even fixed bonuses
        rest = _remaining(original, returned, left)
        # Priced as the member was when earning (tier and plan included): a suspension or
        # a tier or plan change since changes nothing here.
        as_earned = dataclasses.replace(
            snapshot(member, original.result.get("tier"), original.result.get("plan")),
            status="active",
        )
        kept = engine.evaluate(earned_under.spec, rest, as_earned, counters=None)
    undone = undo.undo(
        conn,
        program,
        ctx.now,
        ctx.actor,
        earned_under.spec,
        original,
        earlier,
        kept,
        int(member.id),
    )
    claim = int(original.points) + sum(int(r.points) for r in earlier) - undone.kept_points
    earned_cash = int(original.result.get("cashback", 0))
    claimed_cash = -sum(int(r.result.get("cashback", 0)) for r in earlier)
    claim_cash = earned_cash - claimed_cash - sum(c.amount for c in kept.cashback)
    own_lots = repository.lots_of(conn, int(original.id))
    own_lot_ids = [int(lot.id) for lot in own_lots]
    expired = sum(int(lot.expired) for lot in own_lots if lot.account_id == member.account_id)
    written_off_before = sum(int(r.result.get("written_off", 0)) for r in earlier)
    policy = str(program.spec.negative_balance)
    effects: list[EffectOut] = []
    balance = result.balance
    uncollected = written_off = withheld = 0
    if claim > 0:
        posted = ledger.post(
            conn,
            ctx,
            ledger.TakeBack(
                member_id=int(member.id),
                account_id=int(member.account_id),
                points=claim,
                own_lot_ids=own_lot_ids,
                idempotency_key=f"activity:{result.id}",
                policy=policy,
                activity_id=result.id,
                expired_allowance=max(0, expired - written_off_before),
            ),
        )
        assert posted is not None
        effects.append(EffectOut(rule="return", points=posted.points))
        balance, uncollected = BalanceOut.of(posted.balance), posted.uncollected
        written_off, withheld = posted.written_off, posted.withheld
    if claim_cash > 0:
        wallet = ledger.wallet_account(conn, program.program_id, int(member.id))
        cash = ledger.post(
            conn,
            ctx,
            ledger.TakeBack(
                member_id=int(member.id),
                account_id=wallet,
                points=claim_cash,
                own_lot_ids=own_lot_ids,
                idempotency_key=f"activity:{result.id}:money",
                policy=policy,
                activity_id=result.id,
                unit=ledger.MONEY,
            ),
        )
        assert cash is not None
        effects.append(EffectOut(rule="return", cashback=cash.points))
    answer = result.model_copy(
        update={
            "points": -max(claim, 0),
            "cashback": -max(claim_cash, 0),
            "uncollected": uncollected,
            "written_off": written_off,
            "withheld": withheld,
            "effects": effects + undone.effects,
            "notes": undone.notes,
            "balance": balance,
        }
    )
    return answer, undone.record


def _remaining(original: AnyRow, returned: list[dict[str, Any]], left: int) -> engine.ActivityFacts:
    """The purchase as it stands after `returned`: lines reduced, `left` money remaining."""
    body = original.body
    taken: Counter[str] = Counter()
    taken_amount: Counter[str] = Counter()
    for ret in returned:
        for line in ret.get("lines", []):
            taken[line["sku"]] += int(line.get("quantity", 1))
            taken_amount[line["sku"]] += int(line["amount"])
    lines = []
    for line in body.get("lines", []):
        sku, quantity, line_amount = line["sku"], int(line.get("quantity", 1)), int(line["amount"])
        off = min(quantity, taken[line["sku"]])
        off_amount = min(line_amount, taken_amount[sku])
        taken[sku] -= off
        taken_amount[sku] -= off_amount
        if quantity - off > 0:
            lines.append(
                engine.Line(
                    sku,
                    quantity - off,
                    line_amount - off_amount,
                    line.get("category"),
                    tuple(line.get("labels", [])),
                )
            )
    total = sum(line.amount for line in lines)
    if lines and total > left:  # returns by amount: shrink the lines in proportion
        lines = [
            engine.Line(
                ln.sku,
                ln.quantity * left // total,
                ln.amount * left // total,
                ln.category,
                ln.labels,
            )
            for ln in lines
        ]
    return engine.ActivityFacts(
        type="purchase",
        occurred_at=original.occurred_at,
        amount=left,
        currency=original.currency,
        store=original.store,
        channel=original.channel,
        lines=tuple(lines),
    )


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
