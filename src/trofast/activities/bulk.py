"""Batch ingest (`POST /v1/activities/batch`, the demo's tills): many activities in the
caller's transaction, each accepted or rejected on its own; a rejected item writes nothing.

Runs of purchases and events take a bulk path: one query finds those already received,
one finds and locks the members (on the driver), one loads their rule counters; the rules
run in memory in order, each member's balance and counters carried from one activity to
the next; then every table gets one `executemany` on the driver with ids assigned up
front (`ledger.post_earns` writes the ledger's). Returns, and runs the bulk path does not
handle (debt to collect, a tier change of a member with several items, membership
events), go one by one through `service.ingest`, each in a savepoint.

The bulk path writes the same rows and gives the same answers as `service.ingest` does
one activity at a time (tests/activities/test_batch_rows.py). Its answers are JSON-ready
dicts built on a template of `ActivityResult`'s dump, not models: building, validating
and dumping 1,000 result models cost more than their rules.
"""

from __future__ import annotations

from datetime import datetime
from json import JSONEncoder
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from trofast.activities import repository, service
from trofast.activities.schemas import ActivityIn, ActivityResult, EffectOut, EventIn, PurchaseIn
from trofast.kit.errors import InvariantBroken, Problem, conflict, not_found
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import time_binder
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.memberships import service as memberships
from trofast.programs.service import ProgramVersion
from trofast.rules import engine
from trofast.tiers import service as tiers

#: One item's answer: a JSON-ready `ActivityResult` (the bulk path's), a model (items
#: ingested one by one, replays) or the problem that rejected it.
Answer = dict[str, Any] | ActivityResult | Problem

#: `ActivityResult.model_dump(mode="json")` of a result with every default: the order of
#: the fields and the values the bulk path never changes.
_ANSWER = ActivityResult.model_construct(
    id=0, external_id="", type="", member_id=None, points=0, balance=None, program_version=0
).model_dump(mode="json")
#: The answer as stored with the activity (`service.stored_answer`): without id and replayed.
_STORED = {k: v for k, v in _ANSWER.items() if k not in ("id", "replayed")}
#: `kit.orm.bind_json` (json.dumps with its defaults) without the check for circular
#: references, which JSON-ready dicts cannot have: the same text.
_json = JSONEncoder(check_circular=False).encode


def ingest_many(
    conn: Connection,
    program: ProgramVersion,
    items: list[ActivityIn | Problem],
    now: datetime,
    actor: str,
) -> list[Answer]:
    """Ingest a batch in order; an answer per item."""
    ctx = ledger.Context(program.program_id, now, actor, program.version)
    out: list[Answer] = []
    start = 0
    while start < len(items):
        end = start
        while end < len(items) and isinstance(items[end], PurchaseIn | EventIn):
            end += 1
        if end == start:
            out.append(service.ingest_item(conn, program, items[start], now, actor))
            start += 1
            continue
        run = [item for item in items[start:end] if isinstance(item, PurchaseIn | EventIn)]
        try:
            with conn.begin_nested():
                out += _bulk_earning(conn, program, ctx, run)
        except (IntegrityError, service.UseSinglePath):
            out += [service.ingest_item(conn, program, item, now, actor) for item in run]
        start = end
    return out


def _bulk_earning(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    items: list[PurchaseIn | EventIn],
) -> list[Answer]:
    """A run of purchases and events in bulk (see the module's docstring)."""
    pid, now = program.program_id, ctx.now
    out: list[Answer | None] = [None] * len(items)
    bodies = [item.model_dump(mode="json", exclude_none=True) for item in items]
    digests = [request_hash(body) for body in bodies]
    received = repository.received_among(conn, pid, {i.external_id for i in items})
    existing = repository.find_many(conn, pid, received) if received else {}
    found = repository.lock_earning_members(
        conn,
        pid,
        {i.member_id for i in items if i.member_id is not None},
        {i.loyalty_number for i in items if i.loyalty_number is not None},
    )
    by_id = {row.id: row for row in found}
    by_number = {row.loyalty_number: row for row in found}
    first_seen: dict[str, int] = {}
    copies: list[tuple[int, int]] = []
    accepted: list[tuple[int, engine.ActivityFacts, repository.EarningMember | None]] = []
    for k, (item, digest) in enumerate(zip(items, digests, strict=True)):
        try:
            if item.external_id in existing:
                out[k] = service.replayed_answer(existing[item.external_id], digest)
                continue
            if item.external_id in first_seen:
                first = first_seen[item.external_id]
                if digests[first] != digest:
                    raise conflict(
                        "external_id_reused",
                        f"Activity {item.external_id!r} appears twice with different bodies.",
                    )
                copies.append((k, first))
                continue
            occurred_at = item.occurred_at or now
            service.check_earning(program, item, occurred_at, now)
            member = None
            if item.member_id is not None:
                member = by_id.get(item.member_id)
            elif item.loyalty_number is not None:
                members.check_loyalty_number(item.loyalty_number)
                member = by_number.get(item.loyalty_number)
            if member is None and (item.member_id or item.loyalty_number):
                raise not_found("member", item.member_id or item.loyalty_number)
            if member is not None:
                members.refuse_erased(member)
        except Problem as problem:
            out[k] = problem
            continue
        if member is not None and (member.debt > 0 or member.withheld > 0):
            raise service.UseSinglePath()
        if service.is_membership_event(program, item):
            raise service.UseSinglePath()  # a membership changes one event at a time
        if item.user_external_id is not None:
            raise service.UseSinglePath()  # a company's user is checked one by one
        first_seen[item.external_id] = k
        accepted.append((k, service.facts_of(item, occurred_at), member))
    counts, shared = service.load_batch_counters(conn, program, ctx, accepted)  # type: ignore[arg-type]
    member_ids = sorted({m.id for _, _, m in accepted if m is not None})
    tier_of = tiers.tiers_of(conn, program.spec, pid, member_ids)  # as service._standings
    plan_of = memberships.plans_of(conn, program.spec, pid, member_ids, now)
    running: dict[int, ledger.Balance] = {}
    deltas: dict[tuple[int, str], list[int]] = {}
    effects_of: dict[tuple[Any, ...], dict[str, Any]] = {}
    when = time_binder(conn.dialect)
    received_at = when(now)
    version = program.version
    nothing = engine.Evaluation()
    rows: list[dict[str, Any]] = []
    done: list[_Done] = []
    for k, facts, member in accepted:
        item = items[k]
        evaluation = nothing
        credits: list[ledger.Credit] = []
        balance = tier = plan = member_id = None
        if member is not None:
            member_id = member.id
            tier, plan = tier_of.get(member_id), plan_of.get(member_id)
            before = running.get(member_id) or ledger.Balance.of(member)
            mine = counts.setdefault(member_id, {})
            evaluation = engine.evaluate(
                program.spec,
                facts,
                service.snapshot(member, tier, plan),
                engine.Counters(mine, shared),
            )
            credits = [
                ledger.Credit(e.points, e.rule, e.vests_at, e.expires_at) for e in evaluation.points
            ]
            expected = running[member_id] = ledger.predict_earn(before, credits, now)
            balance = {"available": expected.available, "pending": expected.pending}
            if evaluation.counters:
                engine.apply_counters(mine, shared, evaluation.counters)
                for d in evaluation.counters:
                    total = deltas.setdefault((member_id if d.member else 0, d.key), [0, 0])
                    total[0] += d.points
                    total[1] += d.times
        points = evaluation.total_points
        stored = {
            **_STORED,
            "external_id": item.external_id,
            "type": item.type,
            "member_id": member_id,
            "points": points,
            "cashback": sum(c.amount for c in evaluation.cashback),
            "effects": _effects(evaluation, effects_of),
            "tier": tier,
            "plan": plan,
            "notes": [f"{o.rule}: {o.note}" for o in evaluation.outcomes if o.note],
            "balance": balance,
            "program_version": version,
        }
        amount: int | None = None
        currency = store = channel = event_type = None
        if isinstance(item, PurchaseIn):
            amount, currency, store = item.amount, item.currency, item.store
            channel = item.channel.value
        else:
            event_type = item.event_type
        rows.append(
            {
                "program_id": pid,
                "external_id": item.external_id,
                "type": item.type,
                "member_id": member_id,
                "occurred_at": when(facts.occurred_at),
                "amount": amount,
                "currency": currency,
                "store": store,
                "channel": channel,
                "event_type": event_type,
                "original_id": None,
                "body": _json(bodies[k]),
                "request_hash": digests[k],
                "program_version": version,
                "points": points,
                "result": _json(stored),
                "received_at": received_at,
            }
        )
        done.append(_Done(k, member, evaluation, credits, facts.occurred_at, stored))
    ids = repository.insert_driver_many(conn, rows)
    earns = [
        ledger.Earn(
            member_id=d.member.id,
            account_id=d.member.account_id,
            credits=d.credits,
            idempotency_key=f"activity:{activity_id}",
            effective_at=d.occurred_at,
            activity_id=activity_id,
        )
        for d, activity_id in zip(done, ids, strict=True)
        if d.member is not None and d.evaluation.points
    ]
    earns += _cashback_earns(conn, program, done, ids)
    ledger.post_earns(conn, ctx, earns)
    repository.add_to_counters(
        conn, pid, [(m, key, p, t) for (m, key), (p, t) in deltas.items()], now
    )
    accounts = {d.member.account_id: d.member.id for d in done if d.member is not None}
    for account_id, balance_now in ledger.balances(conn, list(accounts)).items():
        if balance_now != running[accounts[account_id]]:
            raise InvariantBroken(
                f"account {account_id}: {balance_now} != {running[accounts[account_id]]}"
            )
    moved = service.move_tiers(conn, program, ctx, [d.member for d in done])
    for ready, activity_id in zip(done, ids, strict=True):
        out[ready.index] = _answer(conn, program, ctx, ready, activity_id, moved)
    for k, first in copies:
        original = out[first]
        if isinstance(original, dict):
            out[k] = {**original, "replayed": True}
        elif isinstance(original, ActivityResult):
            out[k] = original.model_copy(update={"replayed": True})
    answers = [item for item in out if item is not None]
    if len(answers) != len(items):
        raise InvariantBroken("a batch item was left unanswered")
    return answers


class _Done:
    """An accepted item of the bulk path, evaluated and written: what its answer, its
    earns and the checks after the writes need."""

    __slots__ = ("credits", "evaluation", "index", "member", "occurred_at", "stored")

    def __init__(
        self,
        index: int,
        member: repository.EarningMember | None,
        evaluation: engine.Evaluation,
        credits: list[ledger.Credit],
        occurred_at: datetime,
        stored: dict[str, Any],
    ) -> None:
        self.index = index
        self.member = member
        self.evaluation = evaluation
        self.credits = credits
        self.occurred_at = occurred_at
        self.stored = stored


def _effects(
    evaluation: engine.Evaluation, seen: dict[tuple[Any, ...], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The answer's effects as `EffectOut` dumps them; each distinct effect dumped once per
    batch (the items of a batch mostly earn alike)."""
    out = []
    key: tuple[Any, ...]
    for e in evaluation.points:
        vests_at, expires_at = e.vests_at, e.expires_at
        # Equal instants in other zones are written with their own offset.
        key = (
            e.rule,
            e.points,
            vests_at,
            vests_at and vests_at.utcoffset(),
            expires_at,
            expires_at and expires_at.utcoffset(),
        )
        dumped = seen.get(key)
        if dumped is None:
            dumped = seen[key] = EffectOut.model_construct(
                rule=e.rule, points=e.points, vests_at=e.vests_at, expires_at=e.expires_at
            ).model_dump(mode="json")
        out.append(dumped)
    for c in evaluation.cashback:
        key = ("cashback", c.rule, c.amount)
        dumped = seen.get(key)
        if dumped is None:
            dumped = seen[key] = EffectOut.model_construct(
                rule=c.rule, cashback=c.amount
            ).model_dump(mode="json")
        out.append(dumped)
    return out


def _answer(
    conn: Connection,
    program: ProgramVersion,
    ctx: ledger.Context,
    done: _Done,
    activity_id: int,
    moved: dict[int, str],
) -> Answer:
    """The item's answer; a tier change or granted rewards are stored with the activity."""
    answer = {**_ANSWER, **done.stored, "id": activity_id}
    member = done.member
    new_tier = None if member is None else moved.get(member.id)
    if new_tier is not None:
        answer["new_tier"] = new_tier
    if not (done.evaluation.rewards and member is not None):
        if new_tier is not None:
            repository.set_outcome(
                conn, activity_id, int(answer["points"]), {**done.stored, "new_tier": new_tier}
            )
        return answer
    # A granted voucher moves no points, so it changes nothing the batch computed.
    result = ActivityResult.model_validate(answer)
    prepared = service.Prepared(
        {}, result, member, done.evaluation, done.credits, None, done.occurred_at
    )
    result = service.grant_rewards(conn, program, ctx, member, activity_id, prepared, result)
    repository.set_outcome(conn, activity_id, result.points, service.stored_answer(result))
    return result


def _cashback_earns(
    conn: Connection, program: ProgramVersion, done: list[_Done], ids: list[int]
) -> list[ledger.Earn]:
    """Wallet credits for the batch's cashback, wallets opened as needed."""
    wanted = [
        (d, d.member, activity_id)
        for d, activity_id in zip(done, ids, strict=True)
        if d.evaluation.cashback and d.member is not None
    ]
    if not wanted:
        return []
    wallets = ledger.open_wallets(conn, program.program_id, {m.id for _, m, _ in wanted if m})
    if any(debt > 0 for _, debt in wallets.values()):
        raise service.UseSinglePath()
    earns = []
    for d, member, activity_id in wanted:
        assert member is not None
        vests_at, _ = engine.lot_dates(program.spec, d.occurred_at)
        earns.append(
            ledger.Earn(
                member_id=member.id,
                account_id=wallets[member.id][0],
                credits=[
                    ledger.Credit(c.amount, c.rule, vests_at, None) for c in d.evaluation.cashback
                ],
                idempotency_key=f"activity:{activity_id}:money",
                effective_at=d.occurred_at,
                activity_id=activity_id,
                unit=ledger.MONEY,
            )
        )
    return earns
