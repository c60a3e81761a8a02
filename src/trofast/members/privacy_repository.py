"""SQL of a member's export and erasure: everything stored about one member, read table by
table with explicit columns (the export's stable keys), and the scrubbing writes.

Ledger tables are only read here: the erasure moves points through `ledger.post`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, cast, delete, or_, select, update

from trofast.activities.models import activities, rule_counters
from trofast.households.models import household_invites, households
from trofast.kit.idempotency import idempotency_keys
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers
from trofast.members.models import member_erasures, member_users, members
from trofast.memberships.models import membership_history, memberships
from trofast.notify.models import outbox
from trofast.partners.models import partner_activities
from trofast.rewards.models import gift_codes, vouchers
from trofast.tiers.models import member_tiers, tier_history

Record = dict[str, Any]

#: Outbox payload fields that name the member an event is about.
_PAYLOAD_MEMBER_KEYS = ("member_id", "from_member_id", "to_member_id")


def _all(conn: Connection, stmt: Any) -> list[Record]:
    return [dict(row._mapping) for row in conn.execute(stmt)]


def _one(conn: Connection, stmt: Any) -> Record | None:
    row = conn.execute(stmt).first()
    return None if row is None else dict(row._mapping)


def profile(conn: Connection, program_id: int, member_id: int) -> Record:
    m = members.c
    found = _one(
        conn,
        select(
            m.id,
            m.loyalty_number,
            m.external_id,
            m.kind,
            m.status,
            m.email,
            m.phone,
            m.first_name,
            m.last_name,
            m.birth_date,
            m.locale,
            m.tags,
            m.channel,
            m.marketing_consent,
            m.consent_changed_at,
            m.household_id,
            m.enrolled_at,
            m.updated_at,
        ).where(m.program_id == program_id, m.id == member_id),
    )
    assert found is not None
    return found


def users(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """The member's users, removed ones too, in the order they were added."""
    u = member_users.c
    return _all(
        conn,
        select(u.id, u.external_id, u.name, u.email, u.role, u.created_at, u.removed_at)
        .where(u.program_id == program_id, u.member_id == member_id)
        .order_by(u.id),
    )


def household(conn: Connection, program_id: int, member_id: int, household_id: int) -> Record:
    """The member's household: its name, and whether the member owns it (no other member)."""
    h = households.c
    found = _one(
        conn,
        select(h.id, h.name, (h.owner_id == member_id).label("owner"), h.created_at).where(
            h.program_id == program_id, h.id == household_id
        ),
    )
    assert found is not None
    return found


def household_invites_of(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """Invitations the member received (without their secret tokens)."""
    i = household_invites.c
    return _all(
        conn,
        select(i.id, i.household_id, i.status, i.created_at, i.expires_at, i.answered_at)
        .where(i.program_id == program_id, i.member_id == member_id)
        .order_by(i.id),
    )


def tier(conn: Connection, program_id: int, member_id: int) -> Record | None:
    t = member_tiers.c
    return _one(
        conn,
        select(
            t.tier,
            t.since,
            t.period_start,
            t.qualified_until,
            t.grace_until,
            t.manual_tier,
            t.manual_until,
            t.updated_at,
        ).where(t.program_id == program_id, t.member_id == member_id),
    )


def tier_changes(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    h = tier_history.c
    return _all(
        conn,
        select(h.id, h.from_tier, h.to_tier, h.reason, h.actor, h.at)
        .where(h.program_id == program_id, h.member_id == member_id)
        .order_by(h.id),
    )


def membership(conn: Connection, program_id: int, member_id: int) -> Record | None:
    m = memberships.c
    return _one(
        conn,
        select(
            m.plan,
            m.started_at,
            m.trial_until,
            m.paid_until,
            m.ends_at,
            m.cancelled_at,
            m.payment_failed_at,
            m.lapsed_at,
            m.trial_used,
            m.updated_at,
        ).where(m.program_id == program_id, m.member_id == member_id),
    )


def membership_changes(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    h = membership_history.c
    return _all(
        conn,
        select(
            h.id, h.kind, h.plan, h.reference, h.amount, h.paid_until, h.at, h.actor, h.recorded_at
        )
        .where(h.program_id == program_id, h.member_id == member_id)
        .order_by(h.id),
    )


def member_accounts(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    a = accounts.c
    return _all(
        conn,
        select(
            a.id,
            a.unit,
            a.credits_posted,
            a.debits_posted,
            a.credits_pending,
            a.debits_pending,
            a.debt,
            a.withheld,
        )
        .where(a.program_id == program_id, a.member_id == member_id, a.kind == "member")
        .order_by(a.id),
    )


def ledger(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """The member's ledger transactions, oldest first."""
    t = ledger_transactions.c
    return _all(
        conn,
        select(
            t.id,
            t.kind,
            t.idempotency_key,
            t.activity_id,
            t.rule,
            t.program_version,
            t.actor,
            t.reference,
            t.reason,
            t.reverses_id,
            t.effective_at,
            t.created_at,
        )
        .where(t.program_id == program_id, t.member_id == member_id)
        .order_by(t.id),
    )


def legs(conn: Connection, transaction_ids: list[int], own: set[int]) -> list[Record]:
    """The transfers of these transactions; an account is named by its kind and unit
    (`member` for the member's own), never by another member's id."""
    if not transaction_ids:
        return []
    debit, credit = accounts.alias("debit"), accounts.alias("credit")
    x = transfers.c
    rows = conn.execute(
        select(
            x.id,
            x.transaction_id,
            x.debit_account_id,
            debit.c.kind.label("debit_kind"),
            x.credit_account_id,
            credit.c.kind.label("credit_kind"),
            debit.c.unit,
            x.amount,
            x.phase,
            x.pending_id,
            x.lot_id,
            x.created_at,
        )
        .join(debit, debit.c.id == x.debit_account_id)
        .join(credit, credit.c.id == x.credit_account_id)
        .where(x.transaction_id.in_(transaction_ids))
        .order_by(x.id)
    ).all()
    return [
        {
            "id": r.id,
            "transaction_id": r.transaction_id,
            "from": "member" if r.debit_account_id in own else r.debit_kind,
            "to": "member" if r.credit_account_id in own else r.credit_kind,
            "unit": r.unit,
            "amount": r.amount,
            "phase": r.phase,
            "pending_id": r.pending_id,
            "lot_id": r.lot_id if r.debit_account_id in own or r.credit_account_id in own else None,
            "created_at": r.created_at,
        }
        for r in rows
    ]


def member_lots(conn: Connection, account_ids: list[int]) -> list[Record]:
    lt = lots.c
    return _all(
        conn,
        select(
            lt.id,
            lt.transaction_id,
            lt.activity_id,
            lt.rule,
            lt.original,
            lt.remaining,
            lt.held,
            lt.consumed,
            lt.expired,
            lt.reversed,
            lt.pending,
            lt.vests_at,
            lt.expires_at,
            lt.created_at,
        )
        .where(lt.account_id.in_(account_ids))
        .order_by(lt.id),
    )


def pending_lots(conn: Connection, account_id: int) -> list[tuple[int, int]]:
    """(id, remaining) of the account's lots whose points have not vested yet."""
    lt = lots.c
    rows = conn.execute(
        select(lt.id, lt.remaining)
        .where(lt.account_id == account_id, lt.pending.is_(True), lt.remaining > 0)
        .order_by(lt.id)
    ).all()
    return [(int(r.id), int(r.remaining)) for r in rows]


def member_activities(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """The member's activities with their stored bodies and answers, oldest first."""
    a = activities.c
    original = activities.alias("original")
    return _all(
        conn,
        select(
            a.id,
            a.external_id,
            a.type,
            a.occurred_at,
            a.amount,
            a.currency,
            a.store,
            a.channel,
            a.event_type,
            original.c.external_id.label("original_external_id"),
            member_users.c.external_id.label("user_external_id"),
            a.points,
            a.program_version,
            a.body,
            a.result,
            a.received_at,
        )
        .outerjoin(original, original.c.id == a.original_id)
        .outerjoin(member_users, member_users.c.id == a.user_id)
        .where(a.program_id == program_id, a.member_id == member_id)
        .order_by(a.id),
    )


def partner_activities_of(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    p = partner_activities.c
    return _all(
        conn,
        select(
            p.id,
            p.partner,
            p.external_id,
            p.type,
            p.amount,
            p.currency,
            p.points,
            p.written_off,
            p.transaction_id,
            p.occurred_at,
            p.created_at,
        )
        .where(p.program_id == program_id, p.member_id == member_id)
        .order_by(p.id),
    )


def member_vouchers(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    v = vouchers.c
    return _all(
        conn,
        select(
            v.id,
            v.code,
            v.reward,
            v.type,
            v.status,
            v.points,
            v.reference,
            v.benefit,
            v.channel,
            gift_codes.c.code.label("gift_card_code"),
            v.issued_at,
            v.expires_at,
            v.used_at,
            v.used_by,
            v.cancelled_at,
        )
        .outerjoin(gift_codes, gift_codes.c.id == v.gift_code_id)
        .where(v.program_id == program_id, v.member_id == member_id)
        .order_by(v.id),
    )


def counters(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """What rule limits and stamp cards remember about the member."""
    c = rule_counters.c
    return _all(
        conn,
        select(c.key, c.points, c.times, c.updated_at)
        .where(c.program_id == program_id, c.member_id == member_id)
        .order_by(c.key),
    )


def _about(conn: Connection, member_id: int) -> Any:
    """An outbox row's payload names the member (as member, sender or recipient)."""
    payload = outbox.c.payload
    if conn.dialect.name == "postgresql":  # ->> gives text: no cast that could overflow
        return or_(*(payload[k].as_string() == str(member_id) for k in _PAYLOAD_MEMBER_KEYS))
    return or_(*(payload[k].as_integer() == member_id for k in _PAYLOAD_MEMBER_KEYS))


def messages(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """Outbox events about the member, delivered or queued, oldest first."""
    o = outbox.c
    return _all(
        conn,
        select(o.id, o.topic, o.key, o.payload, o.created_at, o.delivered_at)
        .where(o.program_id == program_id, _about(conn, member_id))
        .order_by(o.id),
    )


def erasure(conn: Connection, program_id: int, member_id: int) -> Record | None:
    e = member_erasures.c
    return _one(
        conn,
        select(
            e.loyalty_number,
            e.reason,
            e.actor,
            e.points_forfeited,
            e.pending_points_forfeited,
            e.money_forfeited,
            e.vouchers_cancelled,
            e.messages_dropped,
            e.erased_at,
        ).where(e.program_id == program_id, e.member_id == member_id),
    )


# -- erasure writes ---------------------------------------------------------------------------


def cancellable_vouchers(
    conn: Connection, program_id: int, member_id: int, now: datetime
) -> list[str]:
    """Codes of the member's unused, unexpired vouchers (not gift cards: their codes are
    handed out already)."""
    v = vouchers.c
    return list(
        conn.execute(
            select(v.code)
            .where(
                v.program_id == program_id,
                v.member_id == member_id,
                v.status == "issued",
                v.gift_code_id.is_(None),
                or_(v.expires_at.is_(None), v.expires_at > now),
            )
            .order_by(v.id)
        ).scalars()
    )


def scrub_member(conn: Connection, program_id: int, member_id: int, values: Record) -> None:
    conn.execute(
        update(members)
        .where(members.c.program_id == program_id, members.c.id == member_id)
        .values(**values)
    )


def scrub_users(conn: Connection, program_id: int, member_id: int, now: datetime) -> None:
    """The member's users lose name and e-mail, and their external ids (the business's
    user ids) become `erased-{id}`; current ones are removed."""
    u = member_users.c
    where = (u.program_id == program_id, u.member_id == member_id)
    conn.execute(update(member_users).where(*where, u.removed_at.is_(None)).values(removed_at=now))
    conn.execute(
        update(member_users)
        .where(*where)
        .values(name=None, email=None, external_id="erased-" + cast(u.id, Text))
    )


def blank_household(conn: Connection, program_id: int, household_id: int) -> None:
    """An emptied household keeps no name (it may have been the member's)."""
    conn.execute(
        update(households)
        .where(households.c.program_id == program_id, households.c.id == household_id)
        .values(name="")
    )


def revoke_invites(conn: Connection, program_id: int, member_id: int, now: datetime) -> None:
    """Revoke the invitations to a household the member has not answered."""
    i = household_invites.c
    conn.execute(
        update(household_invites)
        .where(i.program_id == program_id, i.member_id == member_id, i.status == "pending")
        .values(status="revoked", answered_at=now)
    )


def activity_json(conn: Connection, program_id: int, member_id: int) -> list[Record]:
    """Id, body and result of the member's activities."""
    a = activities.c
    return _all(
        conn,
        select(a.id, a.body, a.result).where(a.program_id == program_id, a.member_id == member_id),
    )


def set_activity_json(conn: Connection, activity_id: int, body: Any, result: Any) -> None:
    conn.execute(
        update(activities).where(activities.c.id == activity_id).values(body=body, result=result)
    )


def idempotent_answers(
    conn: Connection, program_id: int, needles: Iterable[str]
) -> list[tuple[int, Any]]:
    """(id, stored answer) of Idempotency-Key records whose answer text contains a needle
    (in any case)."""
    i = idempotency_keys.c
    text = cast(i.response, Text)
    found = [text.icontains(n, autoescape=True) for n in needles]
    if not found:
        return []
    rows = conn.execute(
        select(i.id, i.response).where(i.program_id == program_id, or_(*found))
    ).all()
    return [(int(r.id), r.response) for r in rows]


def forget_answers(conn: Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(delete(idempotency_keys).where(idempotency_keys.c.id.in_(ids)))


def drop_queued_messages(conn: Connection, program_id: int, member_id: int) -> int:
    """Delete the undelivered outbox events about the member; how many."""
    o = outbox.c
    result = conn.execute(
        delete(outbox).where(
            o.program_id == program_id, o.delivered_at.is_(None), _about(conn, member_id)
        )
    )
    return int(result.rowcount)


def record_erasure(conn: Connection, values: Record) -> None:
    conn.execute(member_erasures.insert().values(values))
