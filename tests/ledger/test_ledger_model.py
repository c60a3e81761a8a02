"""A stateful, model-based test of the ledger, on SQLite and on PostgreSQL.

Hypothesis drives the real services (enrol, ingest purchases and returns, spend, adjust,
the vesting/expiry job) in random order while the clock moves by random amounts. A plain
Python model keeps every member's lots; after every step the balance the API shows, every
lot's buckets and `trofast ledger audit` must agree with it. Expected failures (422s, 409s)
must change nothing.
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import TypeAdapter
from sqlalchemy import func, select

from trofast.activities import service as activities
from trofast.activities.schemas import ActivityIn, ActivityResult
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.kit.idempotency import request_hash
from trofast.ledger import service as ledger
from trofast.ledger.audit import audit
from trofast.ledger.models import accounts, ledger_transactions, lots
from trofast.members import service as members
from trofast.members.schemas import MemberIn
from trofast.programs.service import ProgramVersion
from trofast.worker import jobs

START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
POINTS, PER_AMOUNT = 2, 1000  # 2 points per full 10.00 SEK
MEMBERS = 2
ZONE = "Europe/Stockholm"  # months count in the program's zone (summer time included)
ACTIVITY = TypeAdapter(ActivityIn)
FAR = datetime.max.replace(tzinfo=UTC)

SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

members_ = st.sampled_from([0, 0, 0, 1])  # mostly one member, so that lots meet
picks = st.integers(0, 10_000)  # an index into a list, taken modulo its length
deltas = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 48 * 60).map(lambda m: timedelta(minutes=m)),
    st.integers(1, 20).map(lambda d: timedelta(days=d)),
    st.integers(1, 200).map(lambda d: timedelta(days=d)),
)


def points_for(amount: int) -> int:
    return max(0, amount // PER_AMOUNT * POINTS)


@dataclass
class Lot:
    seq: int  # creation order = database id order
    member: int
    original: int
    pending: bool
    vests_at: datetime | None
    expires_at: datetime | None
    remaining: int = -1
    consumed: int = 0
    expired: int = 0
    reversed: int = 0

    def __post_init__(self) -> None:
        self.remaining = self.original

    def spending_key(self) -> tuple[bool, datetime, int]:
        return (self.expires_at is None, self.expires_at or FAR, self.seq)

    def row(self) -> tuple[Any, ...]:
        return (
            self.original,
            self.remaining,
            self.consumed,
            self.expired,
            self.reversed,
            self.pending,
            self.vests_at,
            self.expires_at,
        )


@dataclass
class Member:
    id: int
    account_id: int
    lots: list[Lot] = field(default_factory=list)
    debt: int = 0
    withheld: int = 0  # owed under `deduct`: paid by the next points, not out of `available`

    def vested(self) -> list[Lot]:
        return sorted(
            (lot for lot in self.lots if not lot.pending and lot.remaining > 0),
            key=Lot.spending_key,
        )

    def available(self) -> int:
        return sum(lot.remaining for lot in self.lots if not lot.pending) - self.debt

    def pending(self) -> int:
        return sum(lot.remaining for lot in self.lots if lot.pending)


@dataclass
class Purchase:
    external_id: str
    member: int
    amount: int
    points: int
    lot: Lot | None
    returned: int = 0
    claimed: int = 0
    written_off: int = 0


def take(lots_in_order: list[Lot], amount: int, bucket: str) -> int:
    """Take up to `amount` from the lots in order into `bucket`; how much was taken."""
    left = amount
    for lot in lots_in_order:
        if left == 0:
            break
        got = min(lot.remaining, left)
        lot.remaining -= got
        setattr(lot, bucket, getattr(lot, bucket) + got)
        left -= got
    return amount - left


class LedgerMachine(RuleBasedStateMachine):
    def __init__(
        self, db: Database, make_program: Callable[..., ProgramVersion], negative_balance: str
    ) -> None:
        super().__init__()
        self.db = db
        self.make_program = make_program
        self.negative_balance = negative_balance
        self.clock = FixedClock(START)
        self.program: ProgramVersion | None = None
        self.members: list[Member] = []
        self.purchases: list[Purchase] = []
        self.returns: list[dict[str, Any]] = []
        self.spends: list[tuple[int, int, str]] = []
        self.seq = itertools.count()
        self.serial = itertools.count(1)
        self.vesting_days = 0
        self.months = 1

    # -- set-up -------------------------------------------------------------------------------

    @initialize(vesting_days=st.sampled_from([1, 7, 14, 0]), months=st.integers(1, 6))
    def open_program(self, vesting_days: int, months: int) -> None:
        self.vesting_days, self.months = vesting_days, months
        self.program = self.make_program(
            earn={"points": POINTS, "per_amount": PER_AMOUNT},
            vesting_days=vesting_days,
            expiry={"kind": "after_months", "months": months},
            negative_balance=self.negative_balance,
            timezone=ZONE,
        )
        for n in range(MEMBERS):
            with self.db.write() as conn:
                out = members.enrol(
                    conn, self.program, MemberIn(email=f"m{n}@example.com"), self.clock.now()
                )
                row = members.resolve_with_account(conn, self.program.program_id, member_id=out.id)
            self.members.append(Member(out.id, int(row.account_id)))

    # -- helpers ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.program is not None
        return self.program.program_id

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def new_lot(
        self,
        member: int,
        points: int,
        *,
        vesting: bool,
        expires_at: datetime | Literal["policy"] | None = "policy",
    ) -> Lot:
        vests_at = self.now + timedelta(days=self.vesting_days) if vesting else None
        pending = vests_at is not None and vests_at > self.now
        if expires_at == "policy":
            expires_at = self.policy_expiry()
        lot = Lot(next(self.seq), member, points, pending, vests_at, expires_at)
        self.members[member].lots.append(lot)
        return lot

    def policy_expiry(self) -> datetime:
        """Same day-of-month (clamped) and wall-clock time, `months` later, in the zone."""
        local = self.now.astimezone(ZoneInfo(ZONE))
        index = local.month - 1 + self.months
        year, month = local.year + index // 12, index % 12 + 1
        day = min(local.day, calendar.monthrange(year, month)[1])
        return local.replace(year=year, month=month, day=day).astimezone(UTC)

    def collect_debt(self, member: Member, lot: Lot) -> None:
        """Points that just became available pay a debt first, then withheld points."""
        for owed in ("debt", "withheld"):
            paid = min(getattr(member, owed), lot.remaining)
            lot.remaining -= paid
            lot.reversed += paid
            setattr(member, owed, getattr(member, owed) - paid)

    def ingest(self, body: dict[str, Any]) -> ActivityResult:
        assert self.program is not None
        with self.db.write() as conn:
            return activities.ingest(
                conn, self.program, ACTIVITY.validate_python(body), self.now, "model"
            )

    def post(self, op: ledger.Operation) -> ledger.Posted:
        with self.db.write() as conn:
            posted = ledger.post(conn, ledger.Context(self.pid, self.now, "model"), op)
        assert posted is not None
        return posted

    def snapshot(self) -> Any:
        """Everything a failed request must leave untouched: the members' balances (their
        account counters), their lots and the program's ledger transactions."""
        with self.db.read() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(ledger_transactions)
                .where(ledger_transactions.c.program_id == self.pid)
            ).scalar_one()
            counters = conn.execute(
                select(accounts).where(accounts.c.program_id == self.pid).order_by(accounts.c.id)
            ).all()
            return (
                count,
                [tuple(row) for row in counters],
                [ledger.Balance.of(row) for row in counters if row.member_id is not None],
                [self.db_lots(conn, m) for m in self.members],
            )

    def expect_problem(self, status: int, code: str, call: Callable[[], Any]) -> None:
        before = self.snapshot()
        with pytest.raises(Problem) as caught:
            call()
        assert (caught.value.status, caught.value.code) == (status, code), caught.value
        assert self.snapshot() == before, "a failed request changed the ledger"

    def check_balance(self, balance: ledger.Balance | Any, member: Member) -> None:
        assert (balance.available, balance.pending) == (member.available(), member.pending())

    @staticmethod
    def db_lots(conn: Any, member: Member) -> list[tuple[Any, ...]]:
        rows = conn.execute(
            select(
                lots.c.original,
                lots.c.remaining,
                lots.c.consumed,
                lots.c.expired,
                lots.c.reversed,
                lots.c.pending,
                lots.c.vests_at,
                lots.c.expires_at,
            )
            .where(lots.c.account_id == member.account_id)
            .order_by(lots.c.id)
        ).all()
        return [tuple(r) for r in rows]

    # -- activities ---------------------------------------------------------------------------

    @precondition(lambda self: self.program is not None)
    @rule(member=members_, amount=st.integers(0, 60_000))
    def purchase(self, member: int, amount: int) -> None:
        m = self.members[member]
        external_id = f"p{next(self.serial)}"
        result = self.ingest(
            {
                "type": "purchase",
                "external_id": external_id,
                "member_id": m.id,
                "amount": amount,
                "currency": "SEK",
            }
        )
        points = points_for(amount)
        lot = None
        if points > 0:
            lot = self.new_lot(member, points, vesting=self.vesting_days > 0)
            if not lot.pending:
                self.collect_debt(m, lot)
        self.purchases.append(Purchase(external_id, member, amount, points, lot))
        assert result.points == points and not result.replayed
        assert result.balance is not None
        self.check_balance(result.balance, m)

    @precondition(lambda self: self.purchases)
    @rule(
        pick=picks,
        amount=st.one_of(st.none(), st.integers(1, 5_000), st.integers(1, 60_000)),
        latest=st.booleans(),
    )
    def return_goods(self, pick: int, amount: int | None, latest: bool = False) -> None:
        """Goods back (all, or an amount of money); `latest`: the newest purchase whose
        points vested and are still there, whose lot is then not the soonest-expiring one."""
        p = self.purchases[pick % len(self.purchases)]
        if latest:
            p = next(
                (
                    q
                    for q in reversed(self.purchases)
                    if q.lot is not None and not q.lot.pending and q.lot.remaining > 0
                ),
                p,
            )
        body: dict[str, Any] = {
            "type": "return",
            "external_id": f"r{next(self.serial)}",
            "original_external_id": p.external_id,
        }
        if amount is not None:
            body["amount"] = amount
        left = p.amount - p.returned
        money = left if amount is None else amount
        if money > left:
            self.expect_problem(422, "return_exceeds_purchase", lambda: self.ingest(body))
            return
        if money <= 0:
            self.expect_problem(422, "nothing_to_return", lambda: self.ingest(body))
            return
        result = self.ingest(body)
        p.returned += money
        claim = max(0, p.points - p.claimed - points_for(p.amount - p.returned))
        p.claimed += claim
        m = self.members[p.member]
        uncollected = withheld = 0
        if claim > 0:
            rest = claim
            own = p.lot
            assert own is not None
            if own.pending:  # 1. the purchase's own lot, if still pending: void and re-pend
                event("return before vesting")
                rest -= take([own], rest, "reversed")
            # 2. vested: the purchase's own lot first
            vested = m.vested()
            if rest and vested and vested[0] is not own and own in vested:
                event("return takes its own lot before one expiring sooner")
            rest -= take([lot for lot in vested if lot is own], rest, "reversed")
            # 3. what of its own lot expired is written off, never taken twice
            written_off = min(rest, own.expired - p.written_off)
            if written_off:
                event("return of points that expired")
            p.written_off += written_off
            rest -= written_off
            # 4. then other lots, soonest-expiring first (not under `deduct`)
            if self.negative_balance != "deduct":
                rest -= take([lot for lot in vested if lot is not own], rest, "reversed")
            # 5. already spent: a debt, withheld, or uncollected
            if rest:
                event(f"return after spending ({self.negative_balance})")
            if self.negative_balance == "allow":
                m.debt += rest
            elif self.negative_balance == "deduct":
                m.withheld += rest
                withheld = rest
            else:
                uncollected = rest
        assert (result.points, result.uncollected, result.withheld) == (
            -claim,
            uncollected,
            withheld,
        )
        if claim > 0:
            assert result.balance is not None
            self.check_balance(result.balance, m)
        self.returns.append(body)

    # -- spending and adjustments -------------------------------------------------------------

    def _debit(
        self, member: int, points: int, make: Callable[[Member], ledger.Operation], bucket: str
    ) -> ledger.Posted | None:
        m = self.members[member]
        if points > m.available():
            event("insufficient points")
            self.expect_problem(422, "insufficient_points", lambda: self.post(make(m)))
            return None
        posted = self.post(make(m))
        assert take(m.vested(), points, bucket) == points
        assert posted.points == -points and not posted.replayed
        self.check_balance(posted.balance, m)
        return posted

    @precondition(lambda self: self.program is not None)
    @rule(member=members_, points=st.integers(1, 30) | st.integers(1, 150))
    def spend(self, member: int, points: int) -> None:
        reference = f"o{next(self.serial)}"

        def op(m: Member) -> ledger.Operation:
            return ledger.Spend(
                m.id,
                m.account_id,
                points,
                reference,
                f"spend:{reference}",
                request_hash(m.id, points),
            )

        if self._debit(member, points, op, "consumed") is not None:
            self.spends.append((member, points, reference))

    @precondition(lambda self: self.program is not None)
    @rule(member=members_)
    def spend_everything(self, member: int) -> None:
        """Spend exactly what is available (so that later returns find the points gone)."""
        points = self.members[member].available()
        if points > 0:
            self.spend(member, points)

    @precondition(lambda self: self.purchases)
    @rule(pick=picks, amount=st.none() | st.integers(1, 30_000))
    def spend_then_return(self, pick: int, amount: int | None) -> None:
        """The member spends everything, then brings back goods whose points had vested
        (when there are any): the points are gone, so a debt or uncollected."""
        vested = [
            n
            for n, p in enumerate(self.purchases)
            if p.lot is not None and not p.lot.pending and p.returned < p.amount
        ]
        index = vested[pick % len(vested)] if vested else pick % len(self.purchases)
        self.spend_everything(self.purchases[index].member)
        self.return_goods(index, amount)

    @precondition(lambda self: self.program is not None)
    @rule(
        member=members_,
        points=st.integers(-40, 60).filter(bool),
        expires_in_days=st.none() | st.integers(-1, 200),
    )
    def adjust(self, member: int, points: int, expires_in_days: int | None) -> None:
        """A manual correction; a credit's lot expires by the program's policy (-1), never
        (None) or in so many days, so that lots do not expire in the order they were made."""
        reference = f"a{next(self.serial)}"
        reason = "credit" if points > 0 else "debit"
        if expires_in_days is None:
            expires_at = None
        elif expires_in_days < 0:
            expires_at = self.policy_expiry()
        else:
            expires_at = self.now + timedelta(days=expires_in_days)

        def op(m: Member) -> ledger.Operation:
            return ledger.Adjust(
                m.id,
                m.account_id,
                points,
                reason,
                f"adjust:{reference}",
                request_hash(m.id, points, reason),
                expires_at,
            )

        if points < 0:
            self._debit(member, -points, op, "consumed")
            return
        m = self.members[member]
        posted = self.post(op(m))
        lot = self.new_lot(member, points, vesting=False, expires_at=expires_at)
        self.collect_debt(m, lot)
        assert posted.points == points
        self.check_balance(posted.balance, m)

    # -- the same request again ---------------------------------------------------------------

    @precondition(lambda self: self.purchases)
    @rule(kind=st.sampled_from(["purchase", "return", "spend"]), pick=picks, change=st.booleans())
    def resubmit(self, kind: str, pick: int, change: bool) -> None:
        """The same request again is a replay that changes nothing; another body is a 409."""
        if kind == "return" and self.returns:
            body = dict(self.returns[pick % len(self.returns)])
            if change:
                body["amount"] = body.get("amount", 0) + 1
        elif kind == "spend" and self.spends:
            member, points, reference = self.spends[pick % len(self.spends)]
            m = self.members[member]
            points += change
            op = ledger.Spend(
                m.id,
                m.account_id,
                points,
                reference,
                f"spend:{reference}",
                request_hash(m.id, points),
            )
            if change:
                self.expect_problem(409, "reference_reused", lambda: self.post(op))
                return
            before = self.snapshot()
            posted = self.post(op)
            assert posted.replayed and posted.points == -points
            assert self.snapshot() == before
            return
        else:
            p = self.purchases[pick % len(self.purchases)]
            body = {
                "type": "purchase",
                "external_id": p.external_id,
                "member_id": self.members[p.member].id,
                "amount": p.amount + change,
                "currency": "SEK",
            }
        if change:
            self.expect_problem(409, "external_id_reused", lambda: self.ingest(body))
            return
        before = self.snapshot()
        result = self.ingest(body)
        assert result.replayed
        assert self.snapshot() == before

    # -- time and jobs ------------------------------------------------------------------------

    @precondition(lambda self: self.program is not None)
    @rule(delta=deltas, jobs=st.booleans())
    def time_passes(self, delta: timedelta, jobs: bool) -> None:
        """The clock moves, and the job runs, or not: then due lots wait (and stay
        spendable) until it does. A run with no time passed must change nothing."""
        self.clock.advance(delta)
        if jobs:
            self.run_jobs()

    @precondition(lambda self: self.program is not None)
    @rule(offset=st.sampled_from([0, -1, 1]), expiry=st.booleans())
    def until_next_due(self, offset: int, expiry: bool) -> None:
        """Move the clock to a second around the next vesting (or expiry) time; run the job."""
        now = self.now
        times = [
            when
            for m in self.members
            for lot in m.lots
            if (when := lot.expires_at if expiry else lot.vests_at) is not None
            and when + timedelta(seconds=offset) > now
        ]
        if not times:
            self.clock.advance(timedelta(days=1))
        else:
            self.clock.set(min(times) + timedelta(seconds=offset))
        self.run_jobs()

    def run_jobs(self) -> None:
        now = self.now
        all_lots = [lot for m in self.members for lot in m.lots]
        vesting = sorted(
            (
                lot
                for lot in all_lots
                if lot.pending and lot.vests_at is not None and lot.vests_at <= now
            ),
            key=lambda lot: (lot.vests_at, lot.seq),
        )
        for lot in vesting:
            event("vested" if lot.remaining else "vested an emptied lot")
            if self.members[lot.member].debt:
                event("debt paid by vesting")
            lot.pending = False
            self.collect_debt(self.members[lot.member], lot)
        expiring = [
            lot
            for lot in all_lots
            if not lot.pending
            and lot.remaining > 0
            and lot.expires_at is not None
            and lot.expires_at <= now
        ]
        for lot in expiring:
            event("expired")
            lot.expired += lot.remaining
            lot.remaining = 0
        report = jobs.run_due(self.db, self.clock, [self.pid])
        assert (report.vested, report.expired) == (len(vesting), len(expiring))

    # -- after every step ---------------------------------------------------------------------

    @precondition(lambda self: self.program is not None)
    @invariant()
    def ledger_agrees_with_the_model(self) -> None:
        now = self.now
        with self.db.read() as conn:
            for m in self.members:
                seen = ledger.member_balance(conn, m.account_id, now)
                vested = [lot for lot in m.lots if not lot.pending]
                expected = {
                    "available": m.available(),
                    "pending": m.pending(),
                    "debt": m.debt,
                    "withheld": m.withheld,
                    **{
                        f"expiring_{d}_days": sum(
                            lot.remaining
                            for lot in vested
                            if lot.expires_at is not None
                            and lot.expires_at <= now + timedelta(days=d)
                        )
                        for d in (30, 60, 90)
                    },
                    "lifetime_earned": sum(lot.original - lot.reversed for lot in m.lots),
                    "lifetime_spent": sum(lot.consumed for lot in m.lots),
                    "lifetime_expired": sum(lot.expired for lot in m.lots),
                }
                assert seen == expected, f"member {m.id}"
                assert self.db_lots(conn, m) == [lot.row() for lot in m.lots], f"member {m.id}"
                if m.debt:
                    assert not m.vested(), "a debt is owed while vested points are left"
            assert audit(conn, self.pid) == []


@pytest.mark.parametrize("negative_balance", ["forbid", "allow", "deduct"])
def test_ledger_matches_the_model(
    db: Database, make_program: Callable[..., ProgramVersion], negative_balance: str
) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(db, make_program, negative_balance), settings=SETTINGS
    )
