"""A member's personal data: export everything stored about them (GDPR articles 15 and 20),
and erase it for good while the books stay right (article 17). See docs/privacy.md."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import Connection

from trofast.households import service as households
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import AnyRow
from trofast.ledger import repository as ledger_repository
from trofast.ledger import service as ledger
from trofast.members import privacy_repository as repository
from trofast.members import service as members
from trofast.members.schemas import ErasureOut, Status
from trofast.memberships import service as memberships
from trofast.notify.outbox import raise_event
from trofast.programs.service import ProgramVersion
from trofast.rewards import service as rewards

#: The export's format; a change that renames or removes a key gets a new number.
FORMAT = "trofast.member-export/1"
ERASED_TOPIC = "member.erased"


def export(conn: Connection, program: ProgramVersion, ref: str, now: datetime) -> dict[str, Any]:
    """Everything Trofast holds about the member `ref` (erased ones too), as JSON values."""
    pid = program.program_id
    member_id = int(members.resolve(conn, pid, ref, erased=True).id)
    profile = repository.profile(conn, pid, member_id)
    accounts = repository.member_accounts(conn, pid, member_id)
    own = {int(a["id"]) for a in accounts}
    transactions = repository.ledger(conn, pid, member_id)
    legs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for leg in repository.legs(conn, [int(t["id"]) for t in transactions], own):
        legs[int(leg.pop("transaction_id"))].append(leg)
    points = next(int(a["id"]) for a in accounts if a["unit"] == ledger.POINTS)
    household_id = profile.pop("household_id")
    consent, changed = profile.pop("marketing_consent"), profile.pop("consent_changed_at")
    document = {
        "format": FORMAT,
        "program": program.spec.key,
        "exported_at": now,
        "member": {**profile, "consents": {"marketing": {"given": consent, "changed_at": changed}}},
        "users": repository.users(conn, pid, member_id),
        "household": None
        if household_id is None
        else repository.household(conn, pid, member_id, int(household_id)),
        "household_invites": repository.household_invites_of(conn, pid, member_id),
        "tier": repository.tier(conn, pid, member_id),
        "tier_history": repository.tier_changes(conn, pid, member_id),
        "membership": repository.membership(conn, pid, member_id),
        "membership_history": repository.membership_changes(conn, pid, member_id),
        "balance": ledger.member_balance(conn, points, now),
        "accounts": accounts,
        "ledger": [{**t, "transfers": legs[int(t["id"])]} for t in transactions],
        "lots": repository.member_lots(conn, sorted(own)),
        "activities": repository.member_activities(conn, pid, member_id),
        "partner_activities": repository.partner_activities_of(conn, pid, member_id),
        "vouchers": repository.member_vouchers(conn, pid, member_id),
        "counters": repository.counters(conn, pid, member_id),
        "messages": [
            {**m, "payload": _own_ids_only(m["payload"], member_id)}
            for m in repository.messages(conn, pid, member_id)
        ],
        "erasure": repository.erasure(conn, pid, member_id),
    }
    exported: dict[str, Any] = to_jsonable_python(document)
    return exported


#: Event payload fields that may name another member (a household's new owner, the other
#: side of a transfer).
_MEMBER_FIELDS = ("member_id", "owner_id", "from_member_id", "to_member_id")


def _own_ids_only(payload: Any, member_id: int) -> Any:
    """An event's payload with other members' ids made null."""
    if not isinstance(payload, dict):
        return payload
    return {
        k: None if k in _MEMBER_FIELDS and v is not None and v != member_id else v
        for k, v in payload.items()
    }


def erase(
    conn: Connection,
    program: ProgramVersion,
    ref: str,
    reason: str,
    now: datetime,
    actor: str,
) -> ErasureOut:
    """Erase the member's personal data, forfeit its points and money, cancel its unused
    vouchers and paid membership, and drop the messages queued about it; the member stays as
    a shell with status `erased`. Erasing an erased member changes nothing and answers the
    same."""
    pid = program.program_id
    row = members.resolve(conn, pid, ref, erased=True)
    member_id = int(row.id)
    points_account = ledger_repository.member_account(conn, member_id, ledger.POINTS)
    assert points_account is not None
    ledger.lock_account(conn, pid, points_account)  # one erasure at a time, after any spend
    done = repository.erasure(conn, pid, member_id)
    if done is not None:
        return _answer(member_id, done)
    users = repository.users(conn, pid, member_id)
    personal = _personal_values(row, users)
    dropped = repository.drop_queued_messages(conn, pid, member_id)
    if row.household_id is not None:
        left = households.leave(conn, pid, str(member_id), now)
        if left.owner_id is None:
            repository.blank_household(conn, pid, int(row.household_id))
    repository.revoke_invites(conn, pid, member_id, now)
    if program.spec.membership_plans:  # (on_event refuses a program without plans)
        memberships.on_event(conn, program, member_id, memberships.CANCELLED, {}, now, now, actor)
    cancelled = 0
    for code in repository.cancellable_vouchers(conn, pid, member_id, now):
        rewards.cancel(conn, program, code, now, actor)
        cancelled += 1
    ctx = ledger.Context(pid, now, actor, program.version)
    forfeited = {
        unit: _forfeit(conn, ctx, member_id, unit, reason) for unit in (ledger.POINTS, ledger.MONEY)
    }
    _scrub_stored_json(conn, pid, member_id, row, users, personal)
    repository.scrub_users(conn, pid, member_id, now)
    repository.scrub_member(conn, pid, member_id, _SHELL | {"updated_at": now})
    values = {
        "program_id": pid,
        "member_id": member_id,
        "loyalty_number": row.loyalty_number,
        "reason": reason,
        "actor": actor,
        "points_forfeited": forfeited[ledger.POINTS][0],
        "pending_points_forfeited": forfeited[ledger.POINTS][1],
        "money_forfeited": sum(forfeited[ledger.MONEY]),
        "vouchers_cancelled": cancelled,
        "messages_dropped": dropped,
        "erased_at": now,
    }
    repository.record_erasure(conn, values)
    raise_event(
        conn,
        pid,
        ERASED_TOPIC,
        f"erased:{member_id}",
        {"member_id": member_id, "erased_at": now.isoformat()},
        now,
    )
    return _answer(member_id, values)


#: What an erased member row keeps of its personal fields: nothing.
_SHELL: dict[str, Any] = {
    "loyalty_number": None,
    "external_id": None,
    "email": None,
    "phone": None,
    "first_name": None,
    "last_name": None,
    "birth_date": None,
    "locale": None,
    "tags": [],
    "marketing_consent": False,
    "consent_changed_at": None,
    "household_id": None,
    "status": Status.erased.value,
}


def _answer(member_id: int, done: dict[str, Any]) -> ErasureOut:
    return ErasureOut(
        member_id=member_id,
        status=Status.erased,
        erased_at=done["erased_at"],
        reason=done["reason"],
        erased_by=done["actor"],
        points_forfeited=done["points_forfeited"],
        pending_points_forfeited=done["pending_points_forfeited"],
        money_forfeited=done["money_forfeited"],
        vouchers_cancelled=done["vouchers_cancelled"],
        messages_dropped=done["messages_dropped"],
    )


def _forfeit(
    conn: Connection, ctx: ledger.Context, member_id: int, unit: str, reason: str
) -> tuple[int, int]:
    """(available, pending) taken from the member's account in `unit`: pending lots go back
    to issuance (they never vested), the available rest to `adjustment` with the reason."""
    account = ledger_repository.member_account(conn, member_id, unit)
    if account is None:
        return 0, 0
    pending = repository.pending_lots(conn, account)
    pending_points = sum(points for _, points in pending)
    if pending_points:
        ledger.post(
            conn,
            ctx,
            ledger.TakeBack(
                member_id=member_id,
                account_id=account,
                points=pending_points,
                own_lot_ids=[lot for lot, _ in pending],
                idempotency_key=f"erase:{member_id}:{unit}:pending",
                policy="forbid",
                unit=unit,
            ),
        )
    available = ledger.Balance.of(ledger_repository.account_counters(conn, account)).available
    if available > 0:
        ledger.post(
            conn,
            ctx,
            ledger.Adjust(
                member_id=member_id,
                account_id=account,
                points=-available,
                reason=f"erasure: {reason}",
                idempotency_key=f"erase:{member_id}:{unit}",
                request_hash=request_hash("erase", member_id, unit, available),
            ),
        )
    return max(available, 0), pending_points


def _personal_values(row: AnyRow, users: list[dict[str, Any]]) -> frozenset[str]:
    """The member's personal strings, case-folded: contact details, names, external ids,
    and its users' names, e-mails and ids."""
    full_name = " ".join(p for p in (row.first_name, row.last_name) if p)
    values: list[Any] = [
        row.email,
        row.phone,
        row.first_name,
        row.last_name,
        full_name,
        row.external_id,
    ]
    for user in users:
        values += [user["name"], user["email"], user["external_id"]]
    return frozenset(str(v).casefold() for v in values if v)


def _without(value: Any, personal: frozenset[str]) -> Any:
    """`value` (decoded JSON) with every string equal to a personal value made null."""
    if isinstance(value, str):
        return None if value.casefold() in personal else value
    if isinstance(value, list):
        return [_without(v, personal) for v in value]
    if isinstance(value, dict):
        return {k: _without(v, personal) for k, v in value.items()}
    return value


def _mentions(value: Any, needles: frozenset[str]) -> bool:
    if isinstance(value, str):
        return value.casefold() in needles
    if isinstance(value, list):
        return any(_mentions(v, needles) for v in value)
    if isinstance(value, dict):
        return any(_mentions(v, needles) for v in value.values())
    return False


def _scrub_stored_json(
    conn: Connection,
    program_id: int,
    member_id: int,
    row: AnyRow,
    users: list[dict[str, Any]],
    personal: frozenset[str],
) -> None:
    """Personal values leave the member's stored activity bodies and answers, and the
    Idempotency-Key answers that carry them (an enrolment's, a user's) are forgotten."""
    if personal:
        for activity in repository.activity_json(conn, program_id, member_id):
            body = _without(activity["body"], personal)
            result = _without(activity["result"], personal)
            if body != activity["body"] or result != activity["result"]:
                repository.set_activity_json(conn, int(activity["id"]), body, result)
    values = [row.loyalty_number, row.email, row.phone, row.external_id]
    values += [u[k] for u in users for k in ("email", "external_id")]
    needles = [str(v) for v in values if v]
    folded = frozenset(n.casefold() for n in needles)
    answers = repository.idempotent_answers(conn, program_id, needles)
    repository.forget_answers(conn, [i for i, answer in answers if _mentions(answer, folded)])
