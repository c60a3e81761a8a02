"""`post()`: the only code that writes the ledger tables (DESIGN rule 2).

Every operation is one ledger transaction header plus transfer legs between two
accounts, so all legs sum to zero by construction. Member-account counters change only
by guarded relative updates after the account row is locked (rule 5), and CHECK
constraints stand behind every guard. The caller owns the database transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, and_, bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, NoResultFound

from trofast.kit.errors import InvariantBroken, Problem, conflict
from trofast.kit.orm import (
    AnyRow,
    DriverStatement,
    bind_time,
    driver_rows,
    insert_driver_rows,
    insert_returning_ids,
    next_ids,
    time_binder,
)
from trofast.ledger import repository
from trofast.ledger.allocation import LotBalance, allocate
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers

POINTS = "points"
MONEY = "money"
UNITS = (POINTS, MONEY)
MEMBER = "member"
SYSTEM_KINDS = ("issuance", "redemption", "breakage", "adjustment", "transfer")
#: Partner settlement accounts, one of each per partner (opened on first use): points a
#: partner issued (the partner owes their value) and points redeemed at it (owed to it).
PARTNER_ISSUANCE = "partner_issuance"
PARTNER_REDEMPTION = "partner_redemption"
PARTNER_KINDS = (PARTNER_ISSUANCE, PARTNER_REDEMPTION)


@dataclass(frozen=True)
class Context:
    """Who posts, in which program, at what time, under which program version."""

    program_id: int
    now: datetime
    actor: str
    program_version: int | None = None


@dataclass(frozen=True)
class Credit:
    """Points earned by one rule: become a lot of their own."""

    points: int
    rule: str
    vests_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Earn:
    member_id: int
    account_id: int
    credits: Sequence[Credit]
    idempotency_key: str
    effective_at: datetime
    activity_id: int | None = None
    unit: str = POINTS


@dataclass(frozen=True)
class Spend:
    member_id: int
    account_id: int
    points: int
    reference: str
    idempotency_key: str
    request_hash: str
    unit: str = POINTS


@dataclass(frozen=True)
class TakeBack:
    """A return takes back points: from the purchase's own lots first, then any others."""

    member_id: int
    account_id: int
    points: int
    own_lot_ids: Sequence[int]
    idempotency_key: str
    #: What cannot be taken back because it was spent: `forbid` leaves it uncollected,
    #: `allow` makes it a debt (available goes negative), `deduct` withholds it from the
    #: next earnings and takes nothing but the purchase's own points now.
    policy: str
    activity_id: int | None = None
    reverses_id: int | None = None
    unit: str = POINTS
    #: Points of the purchase's own lots that expired and no earlier return wrote off:
    #: taking those back again from other points would take them twice.
    expired_allowance: int = 0


@dataclass(frozen=True)
class Adjust:
    """A manual correction by an admin: positive credits a new lot, negative debits lots."""

    member_id: int
    account_id: int
    points: int
    reason: str
    idempotency_key: str
    request_hash: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Hold(Spend):
    """Reserve points (a redemption's first phase): held on their lots, soonest-expiring
    first, behind pending transfers until the hold is settled or released."""


@dataclass(frozen=True)
class Settle:
    """Post a hold: the held points are spent (`hold_id` is the hold's transaction id)."""

    hold_id: int
    idempotency_key: str


@dataclass(frozen=True)
class Release:
    """Void a hold: the held points go back to their lots, spendable again."""

    hold_id: int
    idempotency_key: str


@dataclass(frozen=True)
class Refund:
    """Give back points a spend or a settled hold took (`spent_id`), to the lots they came
    from, last taken first; a lot that has expired meanwhile expires them again at once."""

    spent_id: int
    points: int
    idempotency_key: str
    reason: str | None = None


@dataclass(frozen=True)
class Move:
    """Transfer points between two members: the sender's soonest-expiring points go first
    and keep their expiry in the recipient's new lots."""

    member_id: int
    account_id: int
    to_member_id: int
    to_account_id: int
    points: int
    reference: str
    idempotency_key: str
    request_hash: str


@dataclass(frozen=True)
class Vest:
    lot_id: int


@dataclass(frozen=True)
class Expire:
    lot_id: int


@dataclass(frozen=True)
class PartnerEarn:
    """Points a partner issues to a member: the `earn`, plus under the same header a leg
    from the partner's `partner_issuance` account to the program's issuance account for
    every point credited. Issuance stays the one source of lots (so vesting, expiry and
    returns work unchanged) and the partner account carries what the partner owes."""

    earn: Earn
    partner: str


@dataclass(frozen=True)
class PartnerTakeBack:
    """A return of a partner purchase: the `take_back`, plus a leg from issuance back to
    the partner's account for `points` (the partner no longer owes them)."""

    take_back: TakeBack
    partner: str
    points: int


@dataclass(frozen=True)
class PartnerRedeem:
    """Points redeemed at a partner (a voucher of its reward used there): from the
    program's redemption account to the partner's `partner_redemption` account, which then
    shows what the program owes the partner. No member account moves."""

    partner: str
    points: int
    reference: str
    idempotency_key: str
    member_id: int | None = None


Operation = (
    Earn
    | Spend
    | TakeBack
    | Adjust
    | Hold
    | Settle
    | Release
    | Refund
    | Move
    | Vest
    | Expire
    | PartnerEarn
    | PartnerTakeBack
    | PartnerRedeem
)


@dataclass(frozen=True)
class Balance:
    """A member account's counters as the member sees them."""

    available: int
    pending: int
    debt: int
    #: Owed under the `deduct` policy: taken from future earnings, not from `available`.
    withheld: int = 0

    @classmethod
    def of(cls, row: Any) -> Balance:
        spendable = int(row.credits_posted) - int(row.debits_posted) - int(row.debits_pending)
        return cls(
            available=spendable - int(row.debt),
            pending=int(row.credits_pending),
            debt=int(row.debt),
            withheld=int(row.withheld),
        )


@dataclass(frozen=True)
class Posted:
    """The outcome of `post()`: the header id, points moved for the member, balance after."""

    transaction_id: int
    points: int
    balance: Balance
    uncollected: int = 0
    written_off: int = 0
    withheld: int = 0
    lot_ids: list[int] = field(default_factory=list)
    replayed: bool = False


_COUNTERS = (
    accounts.c.credits_posted,
    accounts.c.debits_posted,
    accounts.c.credits_pending,
    accounts.c.debits_pending,
    accounts.c.debt,
    accounts.c.withheld,
)
# Built once: a statement built per call costs more than the round trip it sends.
_INSERT_HEADER = ledger_transactions.insert().returning(ledger_transactions.c.id)
_INSERT_LOT = lots.insert().returning(lots.c.id)
_RESOLVED = transfers.alias("resolved")
_INSERT_TRANSFER = transfers.insert()
_ADD_CREDITS = (
    update(accounts)
    .where(accounts.c.id == bindparam("b_account"))
    .values(
        credits_posted=accounts.c.credits_posted + bindparam("b_posted"),
        credits_pending=accounts.c.credits_pending + bindparam("b_pending"),
    )
    .returning(*_COUNTERS)
)


class Counters(NamedTuple):
    """A member account's counters as `_ADD_CREDITS` returns them on the driver (the names
    of `_COUNTERS`, so `Balance.of` and `.debt`/`.withheld` read it as they read a row)."""

    credits_posted: int
    debits_posted: int
    credits_pending: int
    debits_pending: int
    debt: int
    withheld: int


# The single earn's statements on the DB-API driver (decision 0005): every column given, so
# no Python-side default is left to SQLAlchemy; timestamps converted with `bind_time`.
_HEADER_COLUMNS = tuple(c.name for c in ledger_transactions.c if c.name != "id")
_LOT_COLUMNS = tuple(c.name for c in lots.c if c.name != "id")
_TRANSFER_COLUMNS = tuple(c.name for c in transfers.c if c.name != "id")
_DRIVER_HEADER = DriverStatement(_INSERT_HEADER, _HEADER_COLUMNS)
_DRIVER_LOT = DriverStatement(_INSERT_LOT, _LOT_COLUMNS)
_DRIVER_TRANSFER = DriverStatement(_INSERT_TRANSFER, _TRANSFER_COLUMNS)
_DRIVER_ADD_CREDITS = DriverStatement(_ADD_CREDITS)

#: PostgreSQL: the same four writes of an earn (header, a lot per credit, a transfer leg per
#: lot, the counters) as one statement, one round trip instead of four (PERFORMANCE.md).
#: Data-modifying CTEs always run to completion; foreign keys are checked at its end.
#: `{new_row}` and friends let it insert the row the earn is for first (`NewRow`), and
#: `{credits}` takes one credit as plain values (the common case: no arrays to unnest).
_EARN_IN_ONE = """
WITH {new_row}txn AS (
    INSERT INTO ledger_transactions (program_id, kind, idempotency_key, request_hash, member_id,
        activity_id, rule, program_version, actor, reference, reason, reverses_id,
        effective_at, created_at)
    SELECT :program_id, 'earn', {key}, NULL, :member_id, {activity_id}, :rule, :version,
        :actor, NULL, NULL, NULL, :effective_at, :now{from_new_row}
    RETURNING id, activity_id
), lot AS (
    INSERT INTO lots (program_id, member_id, account_id, transaction_id, activity_id, rule,
        original, remaining, held, consumed, expired, reversed, pending, vests_at,
        expires_at, created_at)
    SELECT :program_id, :member_id, :account_id, txn.id, txn.activity_id, c.rule, c.points,
        c.points, 0, 0, 0, 0, c.pending, c.vests_at, c.expires_at, :now
    FROM txn, {credits}
    RETURNING id, transaction_id, original, pending
), leg AS (
    INSERT INTO transfers (program_id, transaction_id, debit_account_id, credit_account_id,
        amount, phase, pending_id, lot_id, created_at)
    SELECT :program_id, lot.transaction_id, :issuance, :account_id, lot.original,
        CASE WHEN lot.pending THEN 'pending' ELSE 'single' END, NULL, lot.id, :now
    FROM lot ORDER BY lot.id
)
UPDATE accounts
SET credits_posted = credits_posted + :posted, credits_pending = credits_pending + :pending_sum
WHERE id = :account_id{if_new_row}
RETURNING {new_row_id}(SELECT id FROM txn), (SELECT array_agg(id ORDER BY id) FROM lot),
    credits_posted, debits_posted, credits_pending, debits_pending, debt, withheld
"""
_CREDITS = """unnest(CAST(:rules AS varchar[]), CAST(:points AS bigint[]),
        CAST(:pending AS boolean[]), CAST(:vests AS timestamptz[]),
        CAST(:expires AS timestamptz[])) WITH ORDINALITY
        AS c(rule, points, pending, vests_at, expires_at, n)
    ORDER BY c.n"""
_ONE_CREDIT = """(SELECT CAST(:rules AS varchar), CAST(:points AS bigint),
        CAST(:pending AS boolean), CAST(:vests AS timestamptz),
        CAST(:expires AS timestamptz)) AS c(rule, points, pending, vests_at, expires_at)"""
_earn_statements: dict[tuple[str | None, bool], DriverStatement] = {}


def _earn_in_one(new_row: str | None, one_credit: bool) -> DriverStatement:
    """`_EARN_IN_ONE` for a new row's INSERT (or none) and one credit or several."""
    hit = _earn_statements.get((new_row, one_credit))
    if hit is None:
        parts = {
            "new_row": "",
            "key": ":key",
            "activity_id": ":activity_id",
            "from_new_row": "",
            "if_new_row": "",
            "new_row_id": "",
        }
        if new_row is not None:
            parts = {
                "new_row": f"new_row AS ({new_row}), ",
                "key": "CAST(:key AS varchar) || new_row.id",
                "activity_id": "new_row.id",
                "from_new_row": " FROM new_row",
                "if_new_row": " AND EXISTS (SELECT FROM txn)",
                "new_row_id": "(SELECT id FROM new_row), ",
            }
        sql = _EARN_IN_ONE.format(credits=_ONE_CREDIT if one_credit else _CREDITS, **parts)
        hit = _earn_statements[(new_row, one_credit)] = DriverStatement(text(sql))
    return hit


@dataclass(frozen=True)
class NewRow:
    """The row an earn is for, not yet inserted: `sql` is an INSERT ... ON CONFLICT DO
    NOTHING RETURNING id whose binds are all named `row_*`, `params` their values."""

    sql: str
    params: dict[str, Any]


#: Per engine (the url rendered once), per program: (kind, unit) -> system account id.
_system_cache: WeakKeyDictionary[Engine, tuple[str, dict[int, dict[tuple[str, str], int]]]] = (
    WeakKeyDictionary()
)


def predict_earn(before: Balance, credits: Sequence[Credit], now: datetime) -> Balance:
    """The balance an Earn of `credits` will leave: posted points pay a debt first (which
    leaves `available` as if there were none), then withheld points (which they never add
    to `available`)."""
    pending = sum(c.points for c in credits if c.vests_at is not None and c.vests_at > now)
    posted = sum(c.points for c in credits) - pending
    paid_debt = min(before.debt, posted)
    paid_withheld = min(before.withheld, posted - paid_debt)
    return Balance(
        before.available + posted - paid_withheld,
        before.pending + pending,
        before.debt - paid_debt,
        before.withheld - paid_withheld,
    )


def open_program_accounts(conn: Connection, program_id: int) -> None:
    """Create the program's system accounts (once, when the program is created)."""
    conn.execute(
        accounts.insert(),
        [
            {
                "program_id": program_id,
                "member_id": None,
                "kind": kind,
                "unit": unit,
                "debits_must_not_exceed_credits": False,
            }
            for kind in SYSTEM_KINDS
            for unit in UNITS
        ],
    )


def _member_account(program_id: int, member_id: int, unit: str) -> dict[str, Any]:
    return {
        "program_id": program_id,
        "member_id": member_id,
        "kind": MEMBER,
        "unit": unit,
        "debits_must_not_exceed_credits": True,
    }


def open_member_account(conn: Connection, program_id: int, member_id: int) -> int:
    """Create a member's points account; debits may never exceed credits."""
    values = _member_account(program_id, member_id, POINTS)
    return int(conn.execute(accounts.insert().returning(accounts.c.id), values).scalar_one())


def wallet_account(conn: Connection, program_id: int, member_id: int) -> int:
    """The member's money wallet (cashback, store credit), opened on first use."""
    existing = repository.member_account(conn, member_id, MONEY)
    if existing is not None:
        return existing
    return open_wallets(conn, program_id, {member_id})[member_id][0]


def open_wallets(
    conn: Connection, program_id: int, member_ids: set[int]
) -> dict[int, tuple[int, int]]:
    """Money wallets of several members, opened as needed: member id -> (account id, what
    the member owes: debt plus withheld money, which only the per-earn path collects)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(accounts).on_conflict_do_nothing(
            index_elements=["program_id", "member_id", "kind", "unit"]
        ),
        [_member_account(program_id, member_id, MONEY) for member_id in sorted(member_ids)],
    )
    rows = conn.execute(
        select(accounts.c.member_id, accounts.c.id, accounts.c.debt + accounts.c.withheld)
        .where(
            accounts.c.member_id.in_(member_ids),
            accounts.c.kind == MEMBER,
            accounts.c.unit == MONEY,
        )
        .order_by(accounts.c.id)
        .with_for_update()
    ).all()
    return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}


def post(conn: Connection, ctx: Context, op: Operation) -> Posted | None:
    """Apply one ledger operation inside the caller's transaction.

    Returns None only for Vest/Expire of a lot that has nothing left to do, which is
    what makes the vesting and expiry jobs idempotent.
    """
    match op:
        case Earn():
            return _earn(conn, ctx, op)
        case Spend():  # and Hold, a Spend whose points stay held until settled
            hold = isinstance(op, Hold)
            return _debit_lots(
                conn,
                ctx,
                op.member_id,
                op.account_id,
                op.points,
                "hold" if hold else "spend",
                "redemption",
                idempotency_key=op.idempotency_key,
                request_hash=op.request_hash,
                reference=op.reference,
                hold=hold,
            )
        case TakeBack():
            return _take_back(conn, ctx, op)
        case Adjust():
            return _adjust(conn, ctx, op)
        case Settle():
            return _resolve_hold(conn, ctx, op.hold_id, op.idempotency_key, settle=True)
        case Release():
            return _resolve_hold(conn, ctx, op.hold_id, op.idempotency_key, settle=False)
        case Refund():
            return _refund(conn, ctx, op)
        case Move():
            return _move(conn, ctx, op)
        case Vest():
            return _vest(conn, ctx, op.lot_id)
        case Expire():
            return _expire(conn, ctx, op.lot_id)
        case PartnerEarn():
            return _partner_earn(conn, ctx, op)
        case PartnerTakeBack():
            return _partner_take_back(conn, ctx, op)
        case PartnerRedeem():
            return _partner_redeem(conn, ctx, op)


def system_account(conn: Connection, program_id: int, kind: str, unit: str = POINTS) -> int:
    """The id of a program system account (cached: system accounts never change)."""
    engine = conn.engine
    per_engine = _system_cache.get(engine)
    if per_engine is None:
        per_engine = _system_cache[engine] = (str(engine.url), {})
    programs = per_engine[1]
    ids = programs.get(program_id)
    if ids is None or (kind, unit) not in ids:
        rows = conn.execute(
            select(accounts.c.kind, accounts.c.unit, accounts.c.id).where(
                accounts.c.program_id == program_id, accounts.c.member_id.is_(None)
            )
        ).all()
        ids = {(str(r.kind), str(r.unit)): int(r.id) for r in rows}
        programs[program_id] = ids
    if (kind, unit) not in ids:
        raise InvariantBroken(f"program {program_id} has no {kind} account in {unit}")
    return ids[(kind, unit)]


def lock_account(conn: Connection, program_id: int, account_id: int) -> AnyRow:
    """Lock a member account row for the rest of the transaction and return its counters."""
    row = conn.execute(
        select(*_COUNTERS, accounts.c.unit)
        .where(accounts.c.id == account_id, accounts.c.program_id == program_id)
        .with_for_update()
    ).first()
    if row is None:
        raise InvariantBroken(f"account {account_id} not in program {program_id}")
    return row


def _header(conn: Connection, ctx: Context, kind: str, key: str, **fields: Any) -> int:
    """Insert a ledger transaction header (fields as `_header_values` takes them); its id."""
    values = _header_values(ctx, kind, key, **fields)
    dialect = conn.dialect
    values["effective_at"] = bind_time(values["effective_at"], dialect)
    values["created_at"] = bind_time(values["created_at"], dialect)
    return int(_DRIVER_HEADER.execute(conn, values).fetchone()[0])


def _header_values(
    ctx: Context,
    kind: str,
    key: str,
    *,
    member_id: int | None,
    activity_id: int | None = None,
    rule: str | None = None,
    request_hash: str | None = None,
    reference: str | None = None,
    reason: str | None = None,
    reverses_id: int | None = None,
    effective_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "program_id": ctx.program_id,
        "kind": kind,
        "idempotency_key": key,
        "request_hash": request_hash,
        "member_id": member_id,
        "activity_id": activity_id,
        "rule": rule,
        "program_version": ctx.program_version,
        "actor": ctx.actor,
        "reference": reference,
        "reason": reason,
        "reverses_id": reverses_id,
        "effective_at": effective_at or ctx.now,
        "created_at": ctx.now,
    }


def _replay(
    conn: Connection, ctx: Context, key: str, digest: str, account_id: int
) -> Posted | None:
    """A previous transaction with this idempotency key: its outcome, or 409 if it differs."""
    row = repository.transaction_by_key(conn, ctx.program_id, key)
    if row is None:
        return None
    if row.request_hash != digest:
        raise conflict("reference_reused", f"{key!r} was already used for a different request.")
    moved = _member_delta(conn, int(row.id), account_id)
    current = conn.execute(select(*_COUNTERS).where(accounts.c.id == account_id)).one()
    return Posted(int(row.id), moved, Balance.of(current), replayed=True)


def _member_delta(conn: Connection, transaction_id: int, account_id: int) -> int:
    legs = conn.execute(
        select(transfers.c.amount, transfers.c.credit_account_id, transfers.c.phase).where(
            transfers.c.transaction_id == transaction_id
        )
    ).all()
    total = 0
    for leg in legs:
        if leg.phase == "void":
            continue
        total += int(leg.amount) if leg.credit_account_id == account_id else -int(leg.amount)
    return total


def _add_lot(
    conn: Connection,
    ctx: Context,
    member_id: int,
    account_id: int,
    transaction_id: int,
    activity_id: int | None,
    credit: Credit,
) -> tuple[int, bool]:
    values = _lot_values(ctx, member_id, account_id, transaction_id, activity_id, credit)
    dialect = conn.dialect
    for name in ("vests_at", "expires_at", "created_at"):
        if values[name] is not None:
            values[name] = bind_time(values[name], dialect)
    lot_id = _DRIVER_LOT.execute(conn, values).fetchone()[0]
    return int(lot_id), bool(values["pending"])


def _lot_values(
    ctx: Context,
    member_id: int,
    account_id: int,
    transaction_id: int,
    activity_id: int | None,
    credit: Credit,
) -> dict[str, Any]:
    return {
        "program_id": ctx.program_id,
        "member_id": member_id,
        "account_id": account_id,
        "transaction_id": transaction_id,
        "activity_id": activity_id,
        "rule": credit.rule,
        "original": credit.points,
        "remaining": credit.points,
        "held": 0,
        "consumed": 0,
        "expired": 0,
        "reversed": 0,
        "pending": _is_pending(credit, ctx.now),
        "vests_at": credit.vests_at,
        "expires_at": credit.expires_at,
        "created_at": ctx.now,
    }


def _is_pending(credit: Credit, now: datetime) -> bool:
    return credit.vests_at is not None and credit.vests_at > now


def post_earns(conn: Connection, ctx: Context, earns: Sequence[Earn]) -> list[int]:
    """Post many earns in a few multi-row statements (batch ingest); the transaction ids.

    Writes exactly the rows `post(Earn)` writes for each: the headers, the lots and their
    legs with ids assigned up front, one `executemany` per table on the driver (values
    converted here once, each distinct timestamp once), then one counter update per
    account. The caller holds the accounts' locks and has checked they carry no debt
    (collecting debt needs the per-earn path); `balances` reads the result back.
    """
    if not earns:
        return []
    if any(c.points < 0 for e in earns for c in e.credits):
        raise InvariantBroken("an earn credit cannot be negative")
    when = time_binder(conn.dialect)
    now = when(ctx.now)
    pid, version, actor = ctx.program_id, ctx.program_version, ctx.actor
    txn_ids = next_ids(conn, ledger_transactions, len(earns))
    headers = []
    owned = []
    for earn, txn in zip(earns, txn_ids, strict=True):
        given = [c for c in earn.credits if c.points > 0]
        headers.append(
            {
                "id": txn,
                "program_id": pid,
                "kind": "earn",
                "idempotency_key": earn.idempotency_key,
                "request_hash": None,
                "member_id": earn.member_id,
                "activity_id": earn.activity_id,
                "rule": ",".join(c.rule for c in given) or None,
                "program_version": version,
                "actor": actor,
                "reference": None,
                "reason": None,
                "reverses_id": None,
                "effective_at": when(earn.effective_at or ctx.now),
                "created_at": now,
            }
        )
        owned += [(earn, txn, credit) for credit in given]
    insert_driver_rows(conn, ledger_transactions, _BULK_HEADER_COLUMNS, headers)
    if not owned:
        return txn_ids
    lot_ids = next_ids(conn, lots, len(owned))
    issuance: dict[str, int] = {}
    lot_rows = []
    legs = []
    totals: dict[int, list[int]] = {}
    for (earn, txn, credit), lot_id in zip(owned, lot_ids, strict=True):
        pending = _is_pending(credit, ctx.now)
        lot_rows.append(
            {
                "id": lot_id,
                "program_id": pid,
                "member_id": earn.member_id,
                "account_id": earn.account_id,
                "transaction_id": txn,
                "activity_id": earn.activity_id,
                "rule": credit.rule,
                "original": credit.points,
                "remaining": credit.points,
                "held": 0,
                "consumed": 0,
                "expired": 0,
                "reversed": 0,
                "pending": pending,
                "vests_at": when(credit.vests_at),
                "expires_at": when(credit.expires_at),
                "created_at": now,
            }
        )
        debit = issuance.get(earn.unit)
        if debit is None:
            debit = issuance[earn.unit] = system_account(conn, pid, "issuance", earn.unit)
        legs.append(
            {
                "program_id": pid,
                "transaction_id": txn,
                "debit_account_id": debit,
                "credit_account_id": earn.account_id,
                "amount": credit.points,
                "phase": "pending" if pending else "single",
                "pending_id": None,
                "lot_id": lot_id,
                "created_at": now,
            }
        )
        total = totals.setdefault(earn.account_id, [0, 0])
        total[1 if pending else 0] += credit.points
    insert_driver_rows(conn, lots, _BULK_LOT_COLUMNS, lot_rows)
    insert_driver_rows(conn, transfers, _TRANSFER_COLUMNS, legs)
    if conn.dialect.name == "postgresql":  # one statement instead of one per account
        driver_rows(
            conn,
            _ADD_EARNED_MANY,
            (list(totals), [t[0] for t in totals.values()], [t[1] for t in totals.values()]),
        )
        return txn_ids
    _DRIVER_ADD_EARNED.executemany(
        conn,
        [
            {"b_account": account, "b_posted": posted, "b_pending": pending}
            for account, (posted, pending) in totals.items()
        ],
    )
    return txn_ids


_BULK_HEADER_COLUMNS = ("id", *_HEADER_COLUMNS)
_BULK_LOT_COLUMNS = ("id", *_LOT_COLUMNS)
#: The batch's counter update: only where no debt or withheld points wait to be collected
#: (`balances` then shows any account it skipped).
_DRIVER_ADD_EARNED = DriverStatement(
    update(accounts)
    .where(
        accounts.c.id == bindparam("b_account"),
        accounts.c.debt == 0,
        accounts.c.withheld == 0,
    )
    .values(
        credits_posted=accounts.c.credits_posted + bindparam("b_posted"),
        credits_pending=accounts.c.credits_pending + bindparam("b_pending"),
    )
)
#: PostgreSQL: `_DRIVER_ADD_EARNED` for every account at once (`driver_rows` wants rows back).
_ADD_EARNED_MANY = (
    "UPDATE accounts SET credits_posted = accounts.credits_posted + v.posted,"
    " credits_pending = accounts.credits_pending + v.pending"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v(id, posted, pending)"
    " WHERE accounts.id = v.id AND accounts.debt = 0 AND accounts.withheld = 0"
    " RETURNING accounts.id"
)
_BALANCE_COLUMNS = ", ".join(c.name for c in _COUNTERS)


def balances(conn: Connection, account_ids: Sequence[int]) -> dict[int, Balance]:
    """Current balances of several member accounts in one query (on the driver)."""
    ids = list(account_ids)
    if not ids:
        return {}
    sql = f"SELECT id, {_BALANCE_COLUMNS} FROM accounts WHERE id "
    if conn.dialect.name == "postgresql":
        rows = driver_rows(conn, sql + "= ANY(%s)", (ids,))
    else:
        rows = driver_rows(conn, sql + f"IN ({', '.join('?' * len(ids))})", ids)
    return {int(r[0]): Balance.of(Counters(*r[1:])) for r in rows}


def _insert_legs(conn: Connection, legs: list[dict[str, Any]]) -> None:
    """Insert transfer legs; one leg on the driver (executemany costs more for one)."""
    if len(legs) == 1:
        _DRIVER_TRANSFER.execute(
            conn, {**legs[0], "created_at": bind_time(legs[0]["created_at"], conn.dialect)}
        )
    elif legs:
        conn.execute(_INSERT_TRANSFER, legs)


def post_for_new_row(
    conn: Connection, ctx: Context, op: Earn, row: NewRow
) -> tuple[int, Posted] | None:
    """Insert `row`, then post `op` for it: the new id is the earn's `activity_id` and ends
    its idempotency key. None, and nothing written, if the insert meets a conflict. On
    PostgreSQL one statement does both (a round trip less on every earn)."""
    if conn.dialect.name == "postgresql" and any(c.points > 0 for c in op.credits):
        written = _write_earn(conn, ctx, op, row)
        if written is None:
            return None
        row_id, posted = written
        assert row_id is not None
        return row_id, posted
    inserted = _row_statement(row.sql).execute(conn, row.params).fetchone()
    if inserted is None:
        return None
    row_id = int(inserted[0])
    key = f"{op.idempotency_key}{row_id}"
    return row_id, _earn(conn, ctx, replace(op, activity_id=row_id, idempotency_key=key))


_row_statements: dict[str, DriverStatement] = {}


def _row_statement(sql: str) -> DriverStatement:
    hit = _row_statements.get(sql)
    if hit is None:
        hit = _row_statements[sql] = DriverStatement(text(sql))
    return hit


def _earn(conn: Connection, ctx: Context, op: Earn) -> Posted:
    written = _write_earn(conn, ctx, op, None)
    assert written is not None  # only a new row can turn out not new
    return written[1]


def _write_earn(
    conn: Connection, ctx: Context, op: Earn, new_row: NewRow | None
) -> tuple[int | None, Posted] | None:
    """An earn's writes: (the new row's id, the earn). `new_row` (`post_for_new_row`) is
    only given on PostgreSQL with points to post; None if it was not new."""
    credits = [c for c in op.credits if c.points > 0]
    if any(c.points < 0 for c in op.credits):
        raise InvariantBroken("an earn credit cannot be negative")
    issuance = system_account(conn, ctx.program_id, "issuance", op.unit)
    new_lots: list[tuple[int, int, bool]]  # (lot id, points, pending) per credit
    row_id = None
    if credits and conn.dialect.name == "postgresql":
        written = _write_earn_in_one(conn, ctx, op, credits, issuance, new_row)
        if written is None:
            return None
        row_id, txn, new_lots, after = written
        posted, pending = _sums(new_lots)
    else:
        txn = _header(
            conn,
            ctx,
            "earn",
            op.idempotency_key,
            member_id=op.member_id,
            activity_id=op.activity_id,
            rule=",".join(c.rule for c in credits) or None,
            effective_at=op.effective_at,
        )
        if not credits:
            current = conn.execute(select(*_COUNTERS).where(accounts.c.id == op.account_id)).one()
            return row_id, Posted(txn, 0, Balance.of(current))
        new_lots, legs = [], []
        for credit in credits:
            lot_id, is_pending = _add_lot(
                conn, ctx, op.member_id, op.account_id, txn, op.activity_id, credit
            )
            new_lots.append((lot_id, credit.points, is_pending))
            phase = "pending" if is_pending else "single"
            legs.append(_leg(ctx, txn, issuance, op.account_id, credit.points, phase, lot_id))
        _insert_legs(conn, legs)
        posted, pending = _sums(new_lots)
        counters = _DRIVER_ADD_CREDITS.execute(
            conn, {"b_account": op.account_id, "b_posted": posted, "b_pending": pending}
        ).fetchone()
        if counters is None:  # as `.one()` of `Connection.execute` raised it
            raise NoResultFound("No row was found when one was required")
        after = Counters(*counters)
    collected: Any = after  # read as a row by `_collect_debt` and `Balance.of`
    if (after.debt > 0 or after.withheld > 0) and posted > 0:
        for lot_id, points, is_pending in new_lots:
            if not is_pending:
                collected = _collect_debt(
                    conn, ctx, txn, op.account_id, lot_id, points, collected, op.unit
                )
    lot_ids = [lot[0] for lot in new_lots]
    return row_id, Posted(txn, posted + pending, Balance.of(collected), lot_ids=lot_ids)


def _sums(new_lots: list[tuple[int, int, bool]]) -> tuple[int, int]:
    """(posted, pending) points of an earn's new lots."""
    pending = sum(points for _, points, is_pending in new_lots if is_pending)
    return sum(points for _, points, _ in new_lots) - pending, pending


def _write_earn_in_one(
    conn: Connection,
    ctx: Context,
    op: Earn,
    credits: list[Credit],
    issuance: int,
    new_row: NewRow | None,
) -> tuple[int | None, int, list[tuple[int, int, bool]], Counters] | None:
    """`_earn`'s writes on PostgreSQL, by one statement (`_EARN_IN_ONE`): the new row's id
    (if any), the header's id, the new lots and the counters after, as the four statements
    give them. None if `new_row` was not new (then nothing is written)."""
    pending = [_is_pending(c, ctx.now) for c in credits]
    when = time_binder(conn.dialect)
    params = {
        "program_id": ctx.program_id,
        "key": op.idempotency_key,
        "member_id": op.member_id,
        "account_id": op.account_id,
        "rule": ",".join(c.rule for c in credits),
        "version": ctx.program_version,
        "actor": ctx.actor,
        "effective_at": when(op.effective_at or ctx.now),
        "now": when(ctx.now),
        "issuance": issuance,
        "posted": sum(c.points for c, p in zip(credits, pending, strict=True) if not p),
        "pending_sum": sum(c.points for c, p in zip(credits, pending, strict=True) if p),
    }
    if len(credits) == 1:
        (credit,) = credits
        params |= {"rules": credit.rule, "points": credit.points, "pending": pending[0]}
        params |= {"vests": when(credit.vests_at), "expires": when(credit.expires_at)}
    else:
        params |= {
            "rules": [c.rule for c in credits],
            "points": [c.points for c in credits],
            "pending": pending,
            "vests": [when(c.vests_at) for c in credits],
            "expires": [when(c.expires_at) for c in credits],
        }
    if new_row is None:
        params["activity_id"] = op.activity_id
    else:
        params |= new_row.params
    statement = _earn_in_one(None if new_row is None else new_row.sql, len(credits) == 1)
    row = statement.execute(conn, params).fetchone()
    row_id = None
    if new_row is not None:
        if row is None:
            return None
        row_id, row = int(row[0]), row[1:]
    if row is None:  # as `.one()` of `Connection.execute` raised it
        raise NoResultFound("No row was found when one was required")
    lots = [
        (int(lot_id), credit.points, is_pending)
        for lot_id, credit, is_pending in zip(row[1], credits, pending, strict=True)
    ]
    return row_id, int(row[0]), lots, Counters(*row[2:])


def _collect_debt(
    conn: Connection,
    ctx: Context,
    txn: int,
    account_id: int,
    lot_id: int,
    lot_points: int,
    counters: AnyRow,
    unit: str,
) -> AnyRow:
    """Pay what the member owes from a lot that just became available: a debt (negative
    balance) first, then points withheld under the `deduct` policy."""
    debt = min(int(counters.debt), lot_points)
    withheld = min(int(counters.withheld), lot_points - debt)
    amount = debt + withheld
    if amount <= 0:
        return counters
    issuance = system_account(conn, ctx.program_id, "issuance", unit)
    _take_from_lots(conn, [(lot_id, amount)], "reversed")
    conn.execute(
        transfers.insert(), [_leg(ctx, txn, account_id, issuance, amount, "single", lot_id)]
    )
    return conn.execute(
        update(accounts)
        .where(
            accounts.c.id == account_id, accounts.c.debt >= debt, accounts.c.withheld >= withheld
        )
        .values(
            debits_posted=accounts.c.debits_posted + amount,
            debt=accounts.c.debt - debt,
            withheld=accounts.c.withheld - withheld,
        )
        .returning(*_COUNTERS)
    ).one()


def _leg(
    ctx: Context,
    txn: int,
    debit: int,
    credit: int,
    amount: int,
    phase: str,
    lot_id: int | None,
    pending_id: int | None = None,
) -> dict[str, Any]:
    return {
        "program_id": ctx.program_id,
        "transaction_id": txn,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "phase": phase,
        "pending_id": pending_id,
        "lot_id": lot_id,
        "created_at": ctx.now,
    }


def _spendable_lots(conn: Connection, account_id: int) -> list[LotBalance]:
    """Vested lots with points left, in spending order."""
    rows = conn.execute(
        select(lots.c.id, lots.c.remaining, lots.c.expires_at)
        .where(lots.c.account_id == account_id, lots.c.pending.is_(False), lots.c.remaining > 0)
        .order_by(lots.c.expires_at.is_(None), lots.c.expires_at, lots.c.id)
    ).all()
    return [LotBalance(int(r.id), int(r.remaining), r.expires_at) for r in rows]


def _take_from_lots(conn: Connection, taken: Sequence[tuple[int, int]], bucket: str) -> None:
    """Move points from `remaining` to `bucket` (held/consumed/expired/reversed), guarded."""
    _shift_in_lots(conn, taken, "remaining", bucket)


def _shift_in_lots(
    conn: Connection, moves: Sequence[tuple[int, int]], source: str, target: str
) -> None:
    """Move points between two buckets of each lot, guarded: the source must hold them."""
    src, dst = lots.c[source], lots.c[target]
    for lot_id, amount in moves:
        result = conn.execute(
            update(lots)
            .where(lots.c.id == lot_id, src >= amount)
            .values({src: src - amount, dst: dst + amount})
        )
        if result.rowcount != 1:
            raise InvariantBroken(f"lot {lot_id} cannot move {amount} from {source} to {target}")


def _debit_lots(
    conn: Connection,
    ctx: Context,
    member_id: int,
    account_id: int,
    points: int,
    kind: str,
    to_account: str,
    *,
    idempotency_key: str,
    request_hash: str,
    reference: str | None = None,
    reason: str | None = None,
    hold: bool = False,
) -> Posted:
    """Spend, debit-adjust or hold: all `points` from vested lots, soonest-expiring first,
    or 422. A hold keeps the points on their lots (`held`) behind pending transfers."""
    if points <= 0:
        raise InvariantBroken("a debit must be positive")
    counters = lock_account(conn, ctx.program_id, account_id)
    # Only under the lock: a twin request that committed while we waited must be replayed,
    # not answered with the balance it left (insufficient) or as "in flight".
    replayed = _replay(conn, ctx, idempotency_key, request_hash, account_id)
    if replayed is not None:
        return replayed
    available = Balance.of(counters).available
    if available < points:
        what = "points" if counters.unit == POINTS else "funds"
        raise Problem(
            422,
            f"insufficient_{what}",
            f"The member has {available} {what} available, {points} asked.",
            available=available,
        )
    taken = allocate(_spendable_lots(conn, account_id), points)
    if sum(t for _, t in taken) != points:
        raise InvariantBroken(f"account {account_id}: counters and lots disagree")
    try:
        with conn.begin_nested():
            txn = _header(
                conn,
                ctx,
                kind,
                idempotency_key,
                member_id=member_id,
                request_hash=request_hash,
                reference=reference,
                reason=reason,
            )
    except IntegrityError:
        raise conflict("reference_in_flight", f"{idempotency_key!r} is being posted.") from None
    _take_from_lots(conn, taken, "held" if hold else "consumed")
    target = system_account(conn, ctx.program_id, to_account, str(counters.unit))
    phase = "pending" if hold else "single"
    conn.execute(
        transfers.insert(),
        [_leg(ctx, txn, account_id, target, amount, phase, lot_id) for lot_id, amount in taken],
    )
    after = _add_debits(conn, account_id, points, pending=hold)
    return Posted(txn, -points, Balance.of(after))


def _add_debits(conn: Connection, account_id: int, points: int, *, pending: bool = False) -> AnyRow:
    counter = accounts.c.debits_pending if pending else accounts.c.debits_posted
    row = conn.execute(
        update(accounts)
        .where(
            accounts.c.id == account_id,
            accounts.c.credits_posted - accounts.c.debits_posted - accounts.c.debits_pending
            >= points,
        )
        .values({counter: counter + points})
        .returning(*_COUNTERS)
    ).first()
    if row is None:
        raise InvariantBroken(f"account {account_id} cannot be debited {points}")
    return row


def _take_back(conn: Connection, ctx: Context, op: TakeBack) -> Posted:
    if op.points <= 0:
        raise InvariantBroken("a take-back must be positive")
    locked = lock_account(conn, ctx.program_id, op.account_id)
    txn = _header(
        conn,
        ctx,
        "return",
        op.idempotency_key,
        member_id=op.member_id,
        activity_id=op.activity_id,
        reverses_id=op.reverses_id,
    )
    issuance = system_account(conn, ctx.program_id, "issuance", str(locked.unit))
    left = op.points
    legs: list[dict[str, Any]] = []
    pending_taken = 0
    # 1. The purchase's own lots that are still pending: void and re-pend the rest.
    own_pending = conn.execute(
        select(lots.c.id, lots.c.remaining)
        .where(
            lots.c.id.in_(op.own_lot_ids),
            lots.c.account_id == op.account_id,
            lots.c.pending.is_(True),
            lots.c.remaining > 0,
        )
        .order_by(lots.c.id)
    ).all()
    for lot in own_pending:
        take = min(left, int(lot.remaining))
        if take == 0:
            break
        hold = _open_pending_transfer(conn, int(lot.id))
        legs.append(
            _leg(
                ctx,
                txn,
                issuance,
                op.account_id,
                int(hold.amount),
                "void",
                int(lot.id),
                pending_id=int(hold.id),
            )
        )
        if int(lot.remaining) > take:
            legs.append(
                _leg(
                    ctx,
                    txn,
                    issuance,
                    op.account_id,
                    int(lot.remaining) - take,
                    "pending",
                    int(lot.id),
                )
            )
        _take_from_lots(conn, [(int(lot.id), take)], "reversed")
        pending_taken += take
        left -= take
    # 2. Vested points of the purchase's own lots; 3. what of them already expired is
    # written off, not taken again from other points; 4. other lots, soonest-expiring first.
    spendable = _spendable_lots(conn, op.account_id)
    own_ids = set(op.own_lot_ids)
    own = allocate([lot for lot in spendable if lot.id in own_ids], left)
    left -= sum(amount for _, amount in own)
    written_off = min(left, op.expired_allowance)
    left -= written_off
    others: list[tuple[int, int]] = []
    if op.policy != "deduct":  # deduct leaves the member's other points alone
        others = allocate([lot for lot in spendable if lot.id not in own_ids], left)
    left -= sum(amount for _, amount in others)
    taken = own + others
    _take_from_lots(conn, taken, "reversed")
    legs += [
        _leg(ctx, txn, op.account_id, issuance, amount, "single", lot_id)
        for lot_id, amount in taken
    ]
    posted_taken = sum(amount for _, amount in taken)
    # 5. Whatever was already spent: a debt, withheld, or uncollected, per program policy.
    debt = left if op.policy == "allow" else 0
    withheld = left if op.policy == "deduct" else 0
    if legs:
        _insert_legs(conn, legs)
    after = conn.execute(
        update(accounts)
        .where(accounts.c.id == op.account_id)
        .values(
            credits_pending=accounts.c.credits_pending - pending_taken,
            debits_posted=accounts.c.debits_posted + posted_taken,
            debt=accounts.c.debt + debt,
            withheld=accounts.c.withheld + withheld,
        )
        .returning(*_COUNTERS)
    ).one()
    return Posted(
        txn,
        -(pending_taken + posted_taken),
        Balance.of(after),
        uncollected=left - debt - withheld,
        written_off=written_off,
        withheld=withheld,
    )


def _open_pending_transfer(conn: Connection, lot_id: int) -> AnyRow:
    """The lot's pending transfer that is not yet posted or voided."""
    resolved = _RESOLVED
    row = conn.execute(
        select(transfers.c.id, transfers.c.amount)
        .outerjoin(resolved, resolved.c.pending_id == transfers.c.id)
        .where(
            transfers.c.lot_id == lot_id, transfers.c.phase == "pending", resolved.c.id.is_(None)
        )
    ).first()
    if row is None:
        raise InvariantBroken(f"pending lot {lot_id} has no open pending transfer")
    return row


def _adjust(conn: Connection, ctx: Context, op: Adjust) -> Posted:
    if op.points == 0:
        raise InvariantBroken("an adjustment cannot be zero")
    if op.points < 0:
        return _debit_lots(
            conn,
            ctx,
            op.member_id,
            op.account_id,
            -op.points,
            "adjust",
            "adjustment",
            idempotency_key=op.idempotency_key,
            request_hash=op.request_hash,
            reason=op.reason,
        )
    replayed = _replay(conn, ctx, op.idempotency_key, op.request_hash, op.account_id)
    if replayed is not None:
        return replayed
    lock_account(conn, ctx.program_id, op.account_id)
    txn = _header(
        conn,
        ctx,
        "adjust",
        op.idempotency_key,
        member_id=op.member_id,
        request_hash=op.request_hash,
        reason=op.reason,
    )
    credit = Credit(op.points, "adjustment", None, op.expires_at)
    lot_id, _ = _add_lot(conn, ctx, op.member_id, op.account_id, txn, None, credit)
    adjustment = system_account(conn, ctx.program_id, "adjustment")
    conn.execute(
        transfers.insert(), [_leg(ctx, txn, adjustment, op.account_id, op.points, "single", lot_id)]
    )
    after = conn.execute(
        update(accounts)
        .where(accounts.c.id == op.account_id)
        .values(credits_posted=accounts.c.credits_posted + op.points)
        .returning(*_COUNTERS)
    ).one()
    after = _collect_debt(conn, ctx, txn, op.account_id, lot_id, op.points, after, POINTS)
    return Posted(txn, op.points, Balance.of(after), lot_ids=[lot_id])


def _lot_for_job(conn: Connection, ctx: Context, lot_id: int, condition: Any) -> AnyRow | None:
    return conn.execute(
        select(lots.c.id, lots.c.member_id, lots.c.account_id, lots.c.remaining, lots.c.expired)
        .where(lots.c.id == lot_id, lots.c.program_id == ctx.program_id, condition)
        .with_for_update()
    ).first()


def _vest(conn: Connection, ctx: Context, lot_id: int) -> Posted | None:
    lot = _lot_for_job(
        conn, ctx, lot_id, and_(lots.c.pending.is_(True), lots.c.vests_at <= ctx.now)
    )
    if lot is None:
        return None
    account_id, amount = int(lot.account_id), int(lot.remaining)
    unit = str(lock_account(conn, ctx.program_id, account_id).unit)
    conn.execute(update(lots).where(lots.c.id == lot_id).values(pending=False))
    txn = _header(conn, ctx, "vest", f"vest:{lot_id}", member_id=int(lot.member_id))
    if amount == 0:  # fully returned before vesting: its pending transfer is already void
        current = conn.execute(select(*_COUNTERS).where(accounts.c.id == account_id)).one()
        return Posted(txn, 0, Balance.of(current))
    hold = _open_pending_transfer(conn, lot_id)
    if int(hold.amount) != amount:
        raise InvariantBroken(f"lot {lot_id}: pending transfer {hold.amount} != remaining {amount}")
    issuance = system_account(conn, ctx.program_id, "issuance", unit)
    conn.execute(
        transfers.insert(),
        [_leg(ctx, txn, issuance, account_id, amount, "post", lot_id, pending_id=int(hold.id))],
    )
    after = conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(
            credits_pending=accounts.c.credits_pending - amount,
            credits_posted=accounts.c.credits_posted + amount,
        )
        .returning(*_COUNTERS)
    ).one()
    after = _collect_debt(conn, ctx, txn, account_id, lot_id, amount, after, unit)
    return Posted(txn, 0, Balance.of(after))


def vest_many(conn: Connection, ctx: Context, lot_ids: Sequence[int]) -> int:
    """Vest due lots in a few multi-row statements (the vesting job); how many vested.

    Writes exactly what `post(Vest(lot))` writes for each; lots whose account carries a
    debt or withheld points, or that were fully returned before vesting, take the per-lot
    path.
    """
    if not lot_ids:
        return 0
    rows = conn.execute(
        select(
            lots.c.id,
            lots.c.member_id,
            lots.c.account_id,
            lots.c.remaining,
            accounts.c.unit,
            accounts.c.debt,
            accounts.c.withheld,
        )
        .join(accounts, accounts.c.id == lots.c.account_id)
        .where(
            lots.c.id.in_(list(lot_ids)),
            lots.c.program_id == ctx.program_id,
            lots.c.pending.is_(True),
            lots.c.vests_at <= ctx.now,
        )
        .order_by(lots.c.account_id, lots.c.id)
        .with_for_update()
    ).all()
    simple = [r for r in rows if int(r.remaining) > 0 and int(r.debt) == 0 and int(r.withheld) == 0]
    singles = [int(r.id) for r in rows if r not in simple]
    done = sum(1 for lot_id in singles if _vest(conn, ctx, lot_id) is not None)
    if not simple:
        return done
    holds = {
        int(h.lot_id): h
        for h in conn.execute(
            select(transfers.c.id, transfers.c.lot_id, transfers.c.amount)
            .outerjoin(_RESOLVED, _RESOLVED.c.pending_id == transfers.c.id)
            .where(
                transfers.c.lot_id.in_([int(r.id) for r in simple]),
                transfers.c.phase == "pending",
                _RESOLVED.c.id.is_(None),
            )
        )
    }
    for lot in simple:
        hold = holds.get(int(lot.id))
        if hold is None or int(hold.amount) != int(lot.remaining):
            raise InvariantBroken(f"lot {lot.id}: its pending transfer does not match")
    headers = [
        _header_values(ctx, "vest", f"vest:{lot.id}", member_id=int(lot.member_id))
        for lot in simple
    ]
    txn_ids = insert_returning_ids(conn, ledger_transactions, headers)
    legs = []
    moved: dict[int, int] = {}
    for lot, txn in zip(simple, txn_ids, strict=True):
        amount, account_id = int(lot.remaining), int(lot.account_id)
        issuance = system_account(conn, ctx.program_id, "issuance", str(lot.unit))
        hold_id = int(holds[int(lot.id)].id)
        legs.append(
            _leg(ctx, txn, issuance, account_id, amount, "post", int(lot.id), pending_id=hold_id)
        )
        moved[account_id] = moved.get(account_id, 0) + amount
    _insert_legs(conn, legs)
    conn.execute(
        update(lots).where(lots.c.id.in_([int(r.id) for r in simple])).values(pending=False)
    )
    conn.execute(
        update(accounts)
        .where(accounts.c.id == bindparam("b_account"))
        .values(
            credits_pending=accounts.c.credits_pending - bindparam("b_amount"),
            credits_posted=accounts.c.credits_posted + bindparam("b_amount"),
        ),
        [{"b_account": account, "b_amount": amount} for account, amount in moved.items()],
    )
    return done + len(simple)


def _expire(conn: Connection, ctx: Context, lot_id: int) -> Posted | None:
    lot = _lot_for_job(
        conn,
        ctx,
        lot_id,
        and_(lots.c.pending.is_(False), lots.c.remaining > 0, lots.c.expires_at <= ctx.now),
    )
    if lot is None:
        return None
    account_id, amount = int(lot.account_id), int(lot.remaining)
    unit = str(lock_account(conn, ctx.program_id, account_id).unit)
    # Points released or refunded into an already expired lot expire again: a new key.
    key = f"expire:{lot_id}" if not lot.expired else f"expire:{lot_id}@{lot.expired}"
    txn = _header(conn, ctx, "expire", key, member_id=int(lot.member_id))
    _take_from_lots(conn, [(lot_id, amount)], "expired")
    breakage = system_account(conn, ctx.program_id, "breakage", unit)
    conn.execute(
        transfers.insert(), [_leg(ctx, txn, account_id, breakage, amount, "single", lot_id)]
    )
    after = _add_debits(conn, account_id, amount)
    return Posted(txn, -amount, Balance.of(after))


def _existing(conn: Connection, ctx: Context, key: str) -> int | None:
    """The id of the transaction posted under `key`, if any."""
    row = repository.transaction_by_key(conn, ctx.program_id, key)
    return None if row is None else int(row.id)


def _counters(conn: Connection, account_id: int) -> AnyRow:
    return conn.execute(select(*_COUNTERS).where(accounts.c.id == account_id)).one()


def _transaction(conn: Connection, ctx: Context, transaction_id: int) -> AnyRow:
    row = conn.execute(
        select(ledger_transactions).where(
            ledger_transactions.c.id == transaction_id,
            ledger_transactions.c.program_id == ctx.program_id,
        )
    ).first()
    if row is None:
        raise InvariantBroken(f"transaction {transaction_id} not in program {ctx.program_id}")
    return row


def _resolve_hold(
    conn: Connection, ctx: Context, hold_id: int, key: str, *, settle: bool
) -> Posted:
    """Post (settle) or void (release) every open pending leg of a hold."""
    hold = _transaction(conn, ctx, hold_id)
    if hold.kind != "hold":
        raise InvariantBroken(f"transaction {hold_id} is a {hold.kind}, not a hold")
    legs = conn.execute(
        select(transfers.c.id, transfers.c.debit_account_id, transfers.c.credit_account_id)
        .add_columns(transfers.c.amount, transfers.c.lot_id)
        .where(transfers.c.transaction_id == hold_id, transfers.c.phase == "pending")
        .order_by(transfers.c.id)
    ).all()
    account_id = int(legs[0].debit_account_id)
    lock_account(conn, ctx.program_id, account_id)
    done = _existing(conn, ctx, key)
    if done is not None:
        return Posted(done, 0, Balance.of(_counters(conn, account_id)), replayed=True)
    resolved = conn.execute(
        select(transfers.c.id).where(transfers.c.pending_id.in_([int(leg.id) for leg in legs]))
    ).first()
    if resolved is not None:
        state = "settled" if settle else "released"
        raise conflict(
            "hold_resolved", f"Hold {hold_id} was already settled or released, not {state}."
        )
    txn = _header(
        conn,
        ctx,
        "redeem" if settle else "release",
        key,
        member_id=hold.member_id,
        reference=hold.reference,
        reverses_id=None if settle else hold_id,
    )
    phase = "post" if settle else "void"
    _insert_legs(
        conn,
        [
            _leg(
                ctx,
                txn,
                int(leg.debit_account_id),
                int(leg.credit_account_id),
                int(leg.amount),
                phase,
                leg.lot_id,
                pending_id=int(leg.id),
            )
            for leg in legs
        ],
    )
    moves = [(int(leg.lot_id), int(leg.amount)) for leg in legs]
    _shift_in_lots(conn, moves, "held", "consumed" if settle else "remaining")
    total = sum(amount for _, amount in moves)
    values: dict[Any, Any] = {accounts.c.debits_pending: accounts.c.debits_pending - total}
    if settle:
        values[accounts.c.debits_posted] = accounts.c.debits_posted + total
    after = conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id, accounts.c.debits_pending >= total)
        .values(values)
        .returning(*_COUNTERS)
    ).one()
    if not settle:
        _expire_lots_due(conn, ctx, [lot_id for lot_id, _ in moves])
        after = _counters(conn, account_id)
    return Posted(txn, -total if settle else 0, Balance.of(after))


def _refund(conn: Connection, ctx: Context, op: Refund) -> Posted:
    if op.points <= 0:
        raise InvariantBroken("a refund must be positive")
    spent = _transaction(conn, ctx, op.spent_id)
    if spent.kind not in ("spend", "redeem"):
        raise InvariantBroken(f"transaction {op.spent_id} is a {spent.kind}; only spends refund")
    taken = conn.execute(
        select(transfers.c.debit_account_id, transfers.c.credit_account_id)
        .add_columns(transfers.c.amount, transfers.c.lot_id)
        .where(transfers.c.transaction_id == op.spent_id, transfers.c.phase.in_(("single", "post")))
        .order_by(transfers.c.id.desc())
    ).all()
    account_id = int(taken[0].debit_account_id)
    redemption = int(taken[0].credit_account_id)
    lock_account(conn, ctx.program_id, account_id)
    done = _existing(conn, ctx, op.idempotency_key)
    if done is not None:
        return Posted(done, 0, Balance.of(_counters(conn, account_id)), replayed=True)
    given_back: dict[int, int] = defaultdict(int)
    for row in conn.execute(
        select(transfers.c.lot_id, transfers.c.amount)
        .join(ledger_transactions, ledger_transactions.c.id == transfers.c.transaction_id)
        .where(
            ledger_transactions.c.reverses_id == op.spent_id,
            ledger_transactions.c.kind == "refund",
            transfers.c.credit_account_id == account_id,
        )
    ):
        given_back[int(row.lot_id)] += int(row.amount)
    moves: list[tuple[int, int]] = []
    left = op.points
    for leg in taken:
        lot_id = int(leg.lot_id)
        can = min(int(leg.amount), given_back[lot_id])
        given_back[lot_id] -= can
        give = min(int(leg.amount) - can, left)
        if give > 0:
            moves.append((lot_id, give))
            left -= give
    if left > 0:
        refundable = op.points - left
        raise Problem(
            409,
            "refund_too_large",
            f"Only {refundable} of the {op.points} points asked can still be given back.",
            refundable=refundable,
        )
    txn = _header(
        conn,
        ctx,
        "refund",
        op.idempotency_key,
        member_id=spent.member_id,
        reference=spent.reference,
        reason=op.reason,
        reverses_id=op.spent_id,
    )
    _insert_legs(
        conn,
        [
            _leg(ctx, txn, redemption, account_id, amount, "single", lot_id)
            for lot_id, amount in moves
        ],
    )
    _shift_in_lots(conn, moves, "consumed", "remaining")
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(credits_posted=accounts.c.credits_posted + op.points)
    )
    _expire_lots_due(conn, ctx, [lot_id for lot_id, _ in moves])
    return Posted(txn, op.points, Balance.of(_counters(conn, account_id)))


def _expire_lots_due(conn: Connection, ctx: Context, lot_ids: Sequence[int]) -> None:
    """Points given back to lots that have expired meanwhile expire again now."""
    for lot_id in sorted(set(lot_ids)):
        _expire(conn, ctx, lot_id)


def _move(conn: Connection, ctx: Context, op: Move) -> Posted:
    """Sender to the transfer clearing account, clearing account to the recipient: two
    headers (each member sees its own side), one per-lot leg each way."""
    if op.points <= 0:
        raise InvariantBroken("a transfer must be positive")
    if op.account_id == op.to_account_id:
        raise InvariantBroken("a transfer needs two accounts")
    # Lock both accounts in id order, so two opposite transfers cannot deadlock.
    for account_id in sorted((op.account_id, op.to_account_id)):
        lock_account(conn, ctx.program_id, account_id)
    sent = _debit_lots(
        conn,
        ctx,
        op.member_id,
        op.account_id,
        op.points,
        "transfer_out",
        "transfer",
        idempotency_key=f"{op.idempotency_key}:out",
        request_hash=op.request_hash,
        reference=op.reference,
    )
    if sent.replayed:
        return sent
    clearing = system_account(conn, ctx.program_id, "transfer")
    source_lots = conn.execute(
        select(transfers.c.lot_id, transfers.c.amount, lots.c.expires_at)
        .join(lots, lots.c.id == transfers.c.lot_id)
        .where(transfers.c.transaction_id == sent.transaction_id)
        .order_by(transfers.c.id)
    ).all()
    txn = _header(
        conn,
        ctx,
        "transfer_in",
        f"{op.idempotency_key}:in",
        member_id=op.to_member_id,
        reference=op.reference,
        reverses_id=None,
    )
    legs = []
    new_lots = []
    for source in source_lots:
        credit = Credit(int(source.amount), "transfer", None, source.expires_at)
        lot_id, _ = _add_lot(conn, ctx, op.to_member_id, op.to_account_id, txn, None, credit)
        new_lots.append((lot_id, int(source.amount)))
        legs.append(
            _leg(ctx, txn, clearing, op.to_account_id, int(source.amount), "single", lot_id)
        )
    _insert_legs(conn, legs)
    after = conn.execute(
        update(accounts)
        .where(accounts.c.id == op.to_account_id)
        .values(credits_posted=accounts.c.credits_posted + op.points)
        .returning(*_COUNTERS)
    ).one()
    for lot_id, points in new_lots:
        after = _collect_debt(conn, ctx, txn, op.to_account_id, lot_id, points, after, POINTS)
    _expire_lots_due(conn, ctx, [lot_id for lot_id, _ in new_lots])
    return sent


def member_balance(conn: Connection, account_id: int, now: datetime) -> dict[str, int]:
    """Available, pending and debt from the counters; lifetime and expiring sums from lots."""
    balance = Balance.of(repository.account_counters(conn, account_id))
    totals = repository.lot_totals(conn, account_id, now)
    return {
        "available": balance.available,
        "pending": balance.pending,
        "debt": balance.debt,
        "withheld": balance.withheld,
        "expiring_30_days": int(totals.expiring_30),
        "expiring_60_days": int(totals.expiring_60),
        "expiring_90_days": int(totals.expiring_90),
        "lifetime_earned": int(totals.earned),
        "lifetime_spent": int(totals.spent),
        "lifetime_expired": int(totals.expired),
    }


def partner_account(
    conn: Connection, program_id: int, kind: str, partner: str, unit: str = POINTS
) -> int:
    """The id of a partner's settlement account of `kind`, opened on first use."""
    if kind not in PARTNER_KINDS:
        raise InvariantBroken(f"{kind!r} is not a partner account kind")
    where = (
        accounts.c.program_id == program_id,
        accounts.c.kind == kind,
        accounts.c.unit == unit,
        accounts.c.partner == partner,
        accounts.c.member_id.is_(None),
    )
    found = conn.execute(select(accounts.c.id).where(*where)).scalar_one_or_none()
    if found is not None:
        return int(found)
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(accounts).on_conflict_do_nothing(
            index_elements=["program_id", "kind", "unit", "partner"]
        ),
        {
            "program_id": program_id,
            "member_id": None,
            "kind": kind,
            "unit": unit,
            "partner": partner,
            "debits_must_not_exceed_credits": False,
        },
    )
    return int(conn.execute(select(accounts.c.id).where(*where)).scalar_one())


def _partner_earn(conn: Connection, ctx: Context, op: PartnerEarn) -> Posted:
    posted = _earn(conn, ctx, op.earn)
    issued = sum(c.points for c in op.earn.credits if c.points > 0)
    if issued > 0:
        source = partner_account(conn, ctx.program_id, PARTNER_ISSUANCE, op.partner, op.earn.unit)
        issuance = system_account(conn, ctx.program_id, "issuance", op.earn.unit)
        conn.execute(
            _INSERT_TRANSFER,
            _leg(ctx, posted.transaction_id, source, issuance, issued, "single", None),
        )
    return posted


def _partner_take_back(conn: Connection, ctx: Context, op: PartnerTakeBack) -> Posted:
    if op.points <= 0:
        raise InvariantBroken("a partner take-back must be positive")
    posted = _take_back(conn, ctx, op.take_back)
    unit = op.take_back.unit
    target = partner_account(conn, ctx.program_id, PARTNER_ISSUANCE, op.partner, unit)
    issuance = system_account(conn, ctx.program_id, "issuance", unit)
    conn.execute(
        _INSERT_TRANSFER,
        _leg(ctx, posted.transaction_id, issuance, target, op.points, "single", None),
    )
    return posted


def _partner_redeem(conn: Connection, ctx: Context, op: PartnerRedeem) -> Posted:
    if op.points <= 0:
        raise InvariantBroken("a partner redemption must be positive")
    done = _existing(conn, ctx, op.idempotency_key)
    if done is not None:
        return Posted(done, 0, Balance(0, 0, 0), replayed=True)
    txn = _header(
        conn,
        ctx,
        "partner_redeem",
        op.idempotency_key,
        member_id=op.member_id,
        reference=op.reference,
    )
    redemption = system_account(conn, ctx.program_id, "redemption")
    target = partner_account(conn, ctx.program_id, PARTNER_REDEMPTION, op.partner)
    conn.execute(_INSERT_TRANSFER, _leg(ctx, txn, redemption, target, op.points, "single", None))
    return Posted(txn, 0, Balance(0, 0, 0))
