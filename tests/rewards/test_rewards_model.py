"""A stateful Hypothesis test: redemptions, cancellations, vouchers used and restored,
paying with points, transfers, purchases and returns, in random order with time passing
and the jobs running, on SQLite and PostgreSQL. After every step the ledger audit is
clean and the vouchers agree with the ledger and the stock; a refused request (422/409)
changes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

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
from trofast.activities.schemas import ActivityIn
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.kit.idempotency import request_hash
from trofast.ledger import service as ledger
from trofast.ledger.audit import audit
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers
from trofast.members import service as members
from trofast.members.schemas import MemberIn
from trofast.programs.service import ProgramVersion
from trofast.rewards import service as rewards
from trofast.rewards.models import reward_stock, vouchers
from trofast.worker import jobs

ACTIVITY = TypeAdapter(ActivityIn)
START = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
SETTINGS = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CATALOGUE = [
    {
        "id": "coffee",
        "type": "discount",
        "name": "Coffee",
        "cost": 30,
        "amount": 3500,
        "valid_days": 10,
    },
    {
        "id": "tasting",
        "type": "event",
        "name": "Tasting",
        "cost": 20,
        "event": "Tasting",
        "stock": 3,
    },
    {"id": "credit", "type": "cashback", "name": "Credit", "cost": 50, "amount": 500},
]
picks = st.integers(0, 10_000)
who = st.sampled_from([0, 0, 1])


class RewardsMachine(RuleBasedStateMachine):
    def __init__(self, db: Database, make_program: Callable[..., ProgramVersion]) -> None:
        super().__init__()
        self.db, self.make_program = db, make_program
        self.clock = FixedClock(START)
        self.program: ProgramVersion | None = None
        self.members: list[Any] = []
        self.purchases: list[tuple[str, int]] = []  # external id, member index
        self.codes: list[str] = []
        self.serial = itertools.count(1)

    @initialize(
        vesting=st.sampled_from([0, 7]),
        months=st.integers(1, 3),
        negative=st.sampled_from(["forbid", "allow"]),
    )
    def open_program(self, vesting: int, months: int, negative: str) -> None:
        self.program = self.make_program(
            vesting_days=vesting,
            expiry={"kind": "after_months", "months": months},
            negative_balance=negative,
            point_value=1000,
            rewards=CATALOGUE,
            pay_with_points={"enabled": True},
            transfers={"enabled": True},
        )
        for n in range(2):
            with self.db.write() as conn:
                out = members.enrol(
                    conn, self.program, MemberIn(email=f"r{n}@example.com"), self.now
                )
                row = members.resolve_with_account(conn, self.pid, member_id=out.id)
                op = ledger.Adjust(
                    out.id,
                    int(row.account_id),
                    120,
                    "start",
                    f"adjust:start-{n}",
                    request_hash(out.id, 120),
                    None,
                )
                ledger.post(conn, ledger.Context(self.pid, self.now, "model"), op)
            self.members.append(out.id)

    # -- helpers ------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def pid(self) -> int:
        assert self.program is not None
        return self.program.program_id

    def member(self, conn: Any, index: int) -> Any:
        return members.resolve_with_account(conn, self.pid, member_id=self.members[index])

    def snapshot(self) -> Any:
        with self.db.read() as conn:

            def count(table: Any) -> int:
                return int(
                    conn.execute(
                        select(func.count())
                        .select_from(table)
                        .where(table.c.program_id == self.pid)
                    ).scalar_one()
                )

            return (
                count(ledger_transactions),
                count(transfers),
                [
                    tuple(r)
                    for r in conn.execute(
                        select(accounts)
                        .where(accounts.c.program_id == self.pid)
                        .order_by(accounts.c.id)
                    )
                ],
                [
                    tuple(r)
                    for r in conn.execute(
                        select(vouchers.c.code, vouchers.c.status, vouchers.c.used_by)
                        .where(vouchers.c.program_id == self.pid)
                        .order_by(vouchers.c.id)
                    )
                ],
                [
                    tuple(r)
                    for r in conn.execute(
                        select(reward_stock.c.reward, reward_stock.c.issued)
                        .where(reward_stock.c.program_id == self.pid)
                        .order_by(reward_stock.c.id)
                    )
                ],
                [
                    tuple(r)
                    for r in conn.execute(
                        select(lots.c.remaining, lots.c.held, lots.c.consumed, lots.c.expired)
                        .where(lots.c.program_id == self.pid)
                        .order_by(lots.c.id)
                    )
                ],
            )

    def attempt(self, allowed: set[str], call: Callable[[Any], Any]) -> Any:
        """Run `call` in one write transaction; a refusal must be allowed and change nothing."""
        before = self.snapshot()
        try:
            with self.db.write() as conn:
                return call(conn)
        except Problem as problem:
            assert problem.code in allowed, problem
            event(f"refused: {problem.code}")
            assert self.snapshot() == before, f"{problem.code} changed something"
            return None

    def ingest(self, body: dict[str, Any]) -> Any:
        assert self.program is not None
        program = self.program
        return self.attempt(
            {"return_exceeds_purchase", "nothing_to_return"},
            lambda conn: activities.ingest(
                conn, program, ACTIVITY.validate_python(body), self.now, "model"
            ),
        )

    # -- rules --------------------------------------------------------------------------------

    @precondition(lambda self: self.program is not None)
    @rule(member=who, amount=st.integers(0, 40_000), pay=st.integers(0, 80))
    def purchase(self, member: int, amount: int, pay: int) -> None:
        """A purchase, part of it paid with points first (at the till)."""
        external_id = f"p{next(self.serial)}"
        assert self.program is not None
        program = self.program
        if pay:

            def paying(conn: Any) -> Any:
                row = self.member(conn, member)
                return rewards.pay_with_points(
                    conn, program, row, external_id, pay, None, self.now, "model"
                )

            self.attempt({"insufficient_points"}, paying)
        self.ingest(
            {
                "type": "purchase",
                "external_id": external_id,
                "member_id": self.members[member],
                "amount": amount,
                "currency": "SEK",
            }
        )
        self.purchases.append((external_id, member))

    @precondition(lambda self: self.purchases)
    @rule(pick=picks, amount=st.none() | st.integers(1, 20_000))
    def return_goods(self, pick: int, amount: int | None) -> None:
        external_id, _ = self.purchases[pick % len(self.purchases)]
        body: dict[str, Any] = {
            "type": "return",
            "external_id": f"r{next(self.serial)}",
            "original_external_id": external_id,
        }
        if amount is not None:
            body["amount"] = amount
        self.ingest(body)

    @precondition(lambda self: self.program is not None)
    @rule(member=who, reward=st.sampled_from(["coffee", "tasting", "credit"]))
    def redeem(self, member: int, reward: str) -> None:
        assert self.program is not None
        program = self.program
        reference = f"v{next(self.serial)}"

        def redeeming(conn: Any) -> Any:
            row = self.member(conn, member)
            return rewards.redeem(conn, program, row, reward, reference, None, self.now, "model")

        out = self.attempt({"insufficient_points", "out_of_stock"}, redeeming)
        if out is not None:
            self.codes.append(out.code)

    @precondition(lambda self: self.codes)
    @rule(pick=picks)
    def cancel(self, pick: int) -> None:
        assert self.program is not None
        program, code = self.program, self.codes[pick % len(self.codes)]
        self.attempt(
            {"voucher_used", "voucher_expired"},
            lambda conn: rewards.cancel(conn, program, code, self.now, "model"),
        )

    @precondition(lambda self: self.codes and self.purchases)
    @rule(pick=picks, purchase=picks)
    def use(self, pick: int, purchase: int) -> None:
        assert self.program is not None
        program, code = self.program, self.codes[pick % len(self.codes)]
        external_id = self.purchases[purchase % len(self.purchases)][0]
        self.attempt(
            {"voucher_used", "voucher_expired", "voucher_cancelled"},
            lambda conn: rewards.consume(conn, program, code, external_id, None, self.now),
        )

    @precondition(lambda self: self.program is not None)
    @rule(sender=who, points=st.integers(1, 80))
    def transfer(self, sender: int, points: int) -> None:
        reference = f"t{next(self.serial)}"

        def moving(conn: Any) -> Any:
            a, b = self.member(conn, sender), self.member(conn, 1 - sender)
            return ledger.post(
                conn,
                ledger.Context(self.pid, self.now, "model"),
                ledger.Move(
                    int(a.id),
                    int(a.account_id),
                    int(b.id),
                    int(b.account_id),
                    points,
                    reference,
                    f"transfer:{reference}",
                    request_hash(points),
                ),
            )

        self.attempt({"insufficient_points"}, moving)

    @precondition(lambda self: self.program is not None)
    @rule(days=st.sampled_from([0, 1, 8, 20, 45, 100]))
    def time_passes(self, days: int) -> None:
        self.clock.advance(timedelta(days=days, minutes=1))
        jobs.run_due(self.db, self.clock, [self.pid])

    # -- after every step ---------------------------------------------------------------------

    @precondition(lambda self: self.program is not None)
    @invariant()
    def the_books_balance(self) -> None:
        with self.db.read() as conn:
            assert audit(conn, self.pid) == []
            stock = {
                r.reward: int(r.issued)
                for r in conn.execute(
                    select(reward_stock).where(reward_stock.c.program_id == self.pid)
                )
            }
            rows = conn.execute(select(vouchers).where(vouchers.c.program_id == self.pid)).all()
            live_tastings = sum(
                1 for v in rows if v.reward == "tasting" and v.status != "cancelled"
            )
            assert stock.get("tasting", 0) == live_tastings <= 3
            for v in rows:
                spent = self.net_spent(conn, int(v.transaction_id))
                assert spent == (0 if v.status == "cancelled" else int(v.points)), v

    @staticmethod
    def net_spent(conn: Any, transaction_id: int) -> int:
        """Points the redemption took, less what refunds gave back."""
        taken = conn.execute(
            select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
                transfers.c.transaction_id == transaction_id, transfers.c.phase == "post"
            )
        ).scalar_one()
        refunded = conn.execute(
            select(func.coalesce(func.sum(transfers.c.amount), 0))
            .join(ledger_transactions, ledger_transactions.c.id == transfers.c.transaction_id)
            .where(ledger_transactions.c.reverses_id == transaction_id)
        ).scalar_one()
        return int(taken) - int(refunded)


def test_redemptions_cancellations_and_returns_keep_the_ledger_sound(
    db: Database, make_program: Callable[..., ProgramVersion]
) -> None:
    run_state_machine_as_test(lambda: RewardsMachine(db, make_program), settings=SETTINGS)
