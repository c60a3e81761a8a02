"""Members: enrol, look up by id or loyalty number, update, list; the users of a company."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from trofast.kit import pagination
from trofast.kit.errors import Problem, conflict, invalid, not_found
from trofast.kit.orm import MAX_ID, AnyRow
from trofast.ledger import service as ledger
from trofast.members import loyalty_number, repository
from trofast.members.schemas import (
    Kind,
    MemberIn,
    MemberOut,
    MemberPage,
    MemberPatch,
    Status,
    UserIn,
    UserList,
    UserOut,
)
from trofast.programs.service import ProgramVersion

_UNIQUE_FIELDS = ("email", "phone", "external_id")


def normalize_phone(raw: str, region: str | None) -> str:
    """E.164 form of a phone number, or 422 if it is not a possible number."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_possible_number(parsed):
        raise invalid("invalid_phone", f"{raw!r} is not a phone number (use +46... form).")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def enrol(
    conn: Connection,
    program: ProgramVersion,
    data: MemberIn,
    now: datetime,
    rng: random.Random | None = None,
) -> MemberOut:
    """Create a member with a fresh loyalty number and an empty points account."""
    values: dict[str, Any] = data.model_dump()
    values["email"] = data.email.lower() if data.email else None
    values["phone"] = normalize_phone(data.phone, program.spec.country) if data.phone else None
    values["channel"] = data.channel.value
    values["kind"] = data.kind.value
    _refuse_taken(conn, program.program_id, values)
    for _ in range(20):
        number = loyalty_number.generate(rng)
        if not repository.number_used(conn, program.program_id, number):
            break
    else:  # pragma: no cover - 10^11 numbers
        raise RuntimeError("could not find a free loyalty number")
    values.update(
        program_id=program.program_id,
        loyalty_number=number,
        status=Status.active.value,
        consent_changed_at=now if data.marketing_consent else None,
        enrolled_at=now,
        updated_at=now,
    )
    try:
        with conn.begin_nested():
            member_id = repository.insert(conn, values)
    except IntegrityError:
        raise conflict("member_exists", "A member with these details was just enrolled.") from None
    ledger.open_member_account(conn, program.program_id, member_id)
    return _out(repository.get(conn, program.program_id, member_id))


PROFILE_FIELDS = ("email", "phone", "first_name", "last_name", "birth_date")


def profile_complete(member: MemberOut) -> bool:
    """Whether every profile field is filled in (what `profile_completed` rules reward)."""
    return all(getattr(member, name) is not None for name in PROFILE_FIELDS)


def resolve(conn: Connection, program_id: int, ref: str, *, erased: bool = False) -> AnyRow:
    """A member row by id or 12-digit loyalty number, or 404 (422 for a mistyped number);
    an erased member is 410 `member_erased` unless `erased` (its export, its erasure)."""
    member_id, number = _parse_ref(ref)
    row = None
    if number is not None:
        row = repository.get_by_number(conn, program_id, number)
        if row is None and erased:
            row = repository.get_by_retired_number(conn, program_id, number)
    elif member_id is not None:
        row = repository.get(conn, program_id, member_id)
    if row is None:
        _refuse_retired(conn, program_id, number)
        raise not_found("member", ref)
    if not erased:
        refuse_erased(row)
    return row


def refuse_erased(member: Any) -> None:
    """410 `member_erased` for an erased member (any row with `id` and `status`)."""
    if member.status == Status.erased.value:
        raise Problem(
            410, "member_erased", f"Member {member.id} was erased; nothing can be done for it."
        )


def _refuse_retired(conn: Connection, program_id: int, number: str | None) -> None:
    """410 `member_erased` for the retired loyalty number of an erased member."""
    if number is not None and repository.get_by_retired_number(conn, program_id, number):
        raise Problem(410, "member_erased", f"The member of card {number} was erased; enrol anew.")


def resolve_account(conn: Connection, program_id: int, ref: str) -> AnyRow:
    """Like `resolve_with_account`, by a reference as `resolve` takes it."""
    member_id, number = _parse_ref(ref)
    if member_id is None and number is None:
        raise not_found("member", ref)
    return resolve_with_account(conn, program_id, member_id=member_id, number=number)


def _parse_ref(ref: str) -> tuple[int | None, str | None]:
    """(member id, loyalty number) meant by a path reference; (None, None) for neither."""
    if loyalty_number.looks_like_number(ref):
        check_loyalty_number(ref)
        return None, ref
    if ref.isascii() and ref.isdigit() and int(ref) <= MAX_ID:
        return int(ref), None
    return None, None


def check_loyalty_number(number: str) -> None:
    """422 for a number whose check digit is wrong: a typo at the till, not an unknown card."""
    if not loyalty_number.is_valid(number):
        raise invalid(
            "invalid_loyalty_number",
            f"{number!r} is not a loyalty number: its check digit is wrong (a typo?).",
        )


def resolve_with_account(
    conn: Connection,
    program_id: int,
    *,
    member_id: int | None = None,
    number: str | None = None,
    lock: bool = False,
) -> AnyRow:
    """A member's id, status, birth date, account id and counters, or 404 (410 if erased);
    `lock` locks the account row for the rest of the transaction."""
    if number is not None:
        check_loyalty_number(number)
    row = repository.get_with_account(
        conn, program_id, member_id=member_id, number=number, lock=lock
    )
    if row is None:
        _refuse_retired(conn, program_id, number)
        raise not_found("member", member_id if member_id is not None else number)
    refuse_erased(row)
    return row


def resolve_many(
    conn: Connection, program_id: int, member_ids: set[int], numbers: set[str]
) -> list[AnyRow]:
    """Members (with account and counters) by ids and loyalty numbers, accounts locked;
    the ones not found are simply missing."""
    return repository.get_many_with_account(conn, program_id, member_ids, numbers)


def get(conn: Connection, program_id: int, ref: str) -> MemberOut:
    return _out(resolve(conn, program_id, ref))


def update(
    conn: Connection,
    program: ProgramVersion,
    ref: str,
    patch: MemberPatch,
    now: datetime,
    *,
    may_change_status: bool,
) -> MemberOut:
    row = resolve(conn, program.program_id, ref)
    changes: dict[str, Any] = patch.model_dump(exclude_unset=True)
    if "status" in changes and not may_change_status:
        raise Problem(403, "forbidden", "Changing a member's status needs the admin scope.")
    if changes.get("email"):
        changes["email"] = changes["email"].lower()
    if changes.get("phone"):
        changes["phone"] = normalize_phone(changes["phone"], program.spec.country)
    if "status" in changes:
        changes["status"] = Status(changes["status"]).value
    if "marketing_consent" in changes:
        if changes["marketing_consent"] is None:
            raise invalid("invalid_consent", "marketing_consent must be true or false.")
        if changes["marketing_consent"] != row.marketing_consent:
            changes["consent_changed_at"] = now
    if changes.get("email", row.email) is None and changes.get("phone", row.phone) is None:
        raise invalid("contact_required", "A member needs an email or a phone number.")
    _refuse_taken(conn, program.program_id, changes, exclude_id=int(row.id))
    changes["updated_at"] = now
    try:
        with conn.begin_nested():
            repository.update_fields(conn, program.program_id, int(row.id), changes)
    except IntegrityError:
        raise conflict("member_exists", "Another member has these details.") from None
    return _out(repository.get(conn, program.program_id, int(row.id)))


def list_page(
    conn: Connection, program_id: int, cursor: str | None, limit: int, filters: dict[str, str]
) -> MemberPage:
    after = pagination.decode(cursor)
    rows = repository.page(conn, program_id, after, limit + 1, filters)
    items = [_out(r) for r in rows[:limit]]
    more = len(rows) > limit
    return MemberPage(items=items, next_cursor=pagination.encode(items[-1].id) if more else None)


def _refuse_taken(
    conn: Connection, program_id: int, values: dict[str, Any], exclude_id: int | None = None
) -> None:
    wanted = {k: values.get(k) for k in _UNIQUE_FIELDS if values.get(k) is not None}
    taken = repository.find_taken(conn, program_id, wanted, exclude_id)
    if taken is not None:
        raise conflict(
            f"{taken}_taken", f"Another member already has this {taken.replace('_', ' ')}."
        )


def _out(row: AnyRow | None) -> MemberOut:
    if row is None:
        raise not_found("member", "?")
    return MemberOut.model_validate(row._mapping, from_attributes=False)


# -- the users of a company -------------------------------------------------------------------


def add_user(conn: Connection, program_id: int, ref: str, data: UserIn, now: datetime) -> UserOut:
    """Add a user to a company member. An external id is the user's for good: another
    member's (even removed) is 409; the member's own removed user comes back."""
    member = resolve(conn, program_id, ref)
    if member.kind != Kind.company.value:
        raise conflict("not_a_company", "Only a member of kind company has users.")
    values: dict[str, Any] = data.model_dump()
    values["email"] = data.email.lower() if data.email else None
    found = repository.user(conn, program_id, data.external_id)
    if found is not None and (int(found.member_id) != int(member.id) or found.removed_at is None):
        raise conflict("user_exists", f"User {data.external_id!r} already exists.")
    if values["email"] is not None:
        other = repository.user_with_email(conn, program_id, values["email"])
        if other is not None and (found is None or int(other.id) != int(found.id)):
            raise conflict("email_taken", "Another user already has this e-mail address.")
    try:
        with conn.begin_nested():
            if found is None:
                values.update(program_id=program_id, member_id=int(member.id), created_at=now)
                repository.insert_user(conn, values)
            else:
                repository.update_user(conn, int(found.id), {**values, "removed_at": None})
    except IntegrityError:
        raise conflict("user_exists", "A user with these details was just added.") from None
    row = repository.user(conn, program_id, data.external_id)
    assert row is not None
    return _user_out(row)


def users(conn: Connection, program_id: int, ref: str) -> UserList:
    """The member's current users."""
    member = resolve(conn, program_id, ref)
    return UserList(items=[_user_out(r) for r in repository.users_of(conn, program_id, member.id)])


def remove_user(
    conn: Connection, program_id: int, ref: str, external_id: str, now: datetime
) -> None:
    """Remove a user: it can act for the member no more, and its name and e-mail are erased
    (its activities keep pointing at the row)."""
    member = resolve(conn, program_id, ref)
    found = repository.user(conn, program_id, external_id)
    if found is None or int(found.member_id) != int(member.id) or found.removed_at is not None:
        raise not_found("user", external_id)
    repository.update_user(conn, int(found.id), {"name": None, "email": None, "removed_at": now})


def acting_user(conn: Connection, program_id: int, member_id: int, external_id: str) -> int:
    """The id of the member's current user `external_id`, or 422 `unknown_user`."""
    found = repository.user(conn, program_id, external_id)
    if found is None or int(found.member_id) != member_id or found.removed_at is not None:
        raise invalid("unknown_user", f"{external_id!r} is not a user of this member.")
    return int(found.id)


def _user_out(row: AnyRow) -> UserOut:
    return UserOut(
        member_id=int(row.member_id),
        external_id=str(row.external_id),
        name=row.name,
        email=row.email,
        role=row.role,
        created_at=row.created_at,
    )
